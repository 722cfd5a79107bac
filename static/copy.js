// The Copy buttons beside a token shown once (team settings).
// Progressive enhancement: without JavaScript the Copy button stays hidden and the token
// can still be selected in its field and copied by hand.
(() => {
  const reveal = () => document.querySelectorAll("[data-copy]").forEach((b) => { b.hidden = false; });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const field = document.querySelector(button.dataset.copy);
    const copied = () => { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(copied);
    } else {
      field.select();
      if (document.execCommand("copy")) copied();
    }
  });
  reveal();
  document.body.addEventListener("htmx:afterSwap", reveal);
})();
