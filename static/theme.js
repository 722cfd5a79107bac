// Light or dark: the system's preference (prefers-color-scheme, in rtdash.css) unless this
// browser chose one with the header's toggle, remembered in localStorage.
// Loaded in <head>, not deferred, so the chosen theme is set before the first paint.
(() => {
  const KEY = "rtdash-theme";
  const root = document.documentElement;
  const stored = () => {
    try { return localStorage.getItem(KEY); } catch { return null; }  // storage may be blocked
  };
  const apply = (theme) => {
    if (theme === "light" || theme === "dark") root.dataset.theme = theme;
    else delete root.dataset.theme;
  };
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
  const isDark = () => root.dataset.theme === "dark" || (!root.dataset.theme && systemDark.matches);
  apply(stored());

  const wire = () => {
    const button = document.querySelector("[data-theme-toggle]");
    if (!button) return;
    const show = () => button.setAttribute("aria-pressed", String(isDark()));
    button.hidden = false;  // without JavaScript there is nothing to toggle: the system decides
    show();
    button.addEventListener("click", () => {
      const theme = isDark() ? "light" : "dark";
      apply(theme);
      try { localStorage.setItem(KEY, theme); } catch { /* kept for this page only */ }
      show();
    });
    systemDark.addEventListener("change", show);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
  else wire();
})();
