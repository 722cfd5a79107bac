// Copy buttons for messages, code blocks and "View code" snippets: a button with
// data-copy-source copies the text of the element it names (a CSS selector, or "closest:"
// then a selector searched upward); .copy-code copies the code block beside it.
(() => {
  "use strict";

  function write(text, button) {
    const done = () => {
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => fallback(text) && done());
    } else if (fallback(text)) done();
  }

  function fallback(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }

  function source(button) {
    if (button.classList.contains("copy-code")) return button.parentElement.querySelector("pre")?.textContent ?? "";
    const turn = button.closest("[data-source]");
    if (turn) return turn.dataset.source;
    const target = document.querySelector(button.dataset.copyTarget);
    return target ? target.textContent : "";
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest(".copy-code, [data-copy-message], [data-copy-target]");
    if (!button) return;
    write(source(button), button);
  });

  // Buttons that need JavaScript are hidden until it runs.
  const reveal = () => document.querySelectorAll("[data-needs-js]").forEach((node) => { node.hidden = false; });
  reveal();
  document.addEventListener("htmx:afterSwap", reveal);
})();
