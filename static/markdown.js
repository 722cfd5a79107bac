// A small Markdown renderer for answers as they stream in: it builds DOM nodes with
// textContent and never assigns HTML, so markup in the upstream's text stays text.
// The subset: paragraphs, headings (#), fenced code blocks, lists (-, *, 1.), block quotes,
// **bold**, *italic*, `code` and [links](http(s)/mailto/relative). Stored answers are
// rendered on the server by markdown-it-py (runs/playground/markdown.py) with html off.
(() => {
  "use strict";

  const SAFE_LINK = /^(https?:|mailto:|\/|#|\.)/i;
  const SCHEME = /^\s*[a-z][a-z0-9+.-]*:/i;

  function el(tag, text) {
    const node = document.createElement(tag);
    if (text != null) node.textContent = text;
    return node;
  }

  function safeHref(url) {
    return SAFE_LINK.test(url) || !SCHEME.test(url);
  }

  // Inline: `code` first (its content is literal), then links, **bold**, *italic*.
  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\[([^\]\n]+)\]\(([^)\s]+)\)|\*\*([^*\n]+)\*\*|__([^_\n]+)__|\*([^*\n]+)\*|_([^_\n]+)_/g;

  function inline(parent, text) {
    let last = 0;
    for (const match of text.matchAll(INLINE)) {
      if (match.index > last) parent.append(text.slice(last, match.index));
      const [whole, , code, label, href, bold1, bold2, em1, em2] = match;
      if (code != null) parent.append(el("code", code.trim() ? code : code));
      else if (label != null) {
        if (safeHref(href)) {
          const link = el("a");
          link.href = href;
          link.rel = "noopener noreferrer nofollow";
          inline(link, label);
          parent.append(link);
        } else parent.append(whole);
      } else if (bold1 != null || bold2 != null) {
        const strong = el("strong");
        inline(strong, bold1 ?? bold2);
        parent.append(strong);
      } else {
        const em = el("em");
        inline(em, em1 ?? em2);
        parent.append(em);
      }
      last = match.index + whole.length;
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  function render(source) {
    const fragment = document.createDocumentFragment();
    const lines = source.replace(/\r\n?/g, "\n").split("\n");
    let paragraph = [];
    let list = null;
    const flush = () => {
      if (paragraph.length) {
        const p = el("p");
        paragraph.forEach((line, index) => {
          if (index) p.append(document.createElement("br"));
          inline(p, line);
        });
        fragment.append(p);
        paragraph = [];
      }
    };
    const endList = () => { list = null; };
    for (let i = 0; i < lines.length; i += 1) {
      const line = lines[i];
      const fence = line.match(/^\s*(```+|~~~+)\s*([\w+.-]*)\s*$/);
      if (fence) {
        flush(); endList();
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) { body.push(lines[i]); i += 1; }
        const pre = el("pre");
        const code = el("code", body.join("\n"));
        if (fence[2]) code.dataset.language = fence[2];
        pre.append(code);
        fragment.append(pre);
        continue;
      }
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      const bullet = line.match(/^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/);
      const quote = line.match(/^>\s?(.*)$/);
      if (!line.trim()) { flush(); endList(); continue; }
      if (heading) {
        flush(); endList();
        const node = el(`h${Math.min(6, heading[1].length + 2)}`);
        inline(node, heading[2]);
        fragment.append(node);
      } else if (bullet) {
        flush();
        const ordered = /\d/.test(bullet[1]);
        if (!list || (list.tagName === "OL") !== ordered) {
          list = el(ordered ? "ol" : "ul");
          fragment.append(list);
        }
        const item = el("li");
        inline(item, bullet[2]);
        list.append(item);
      } else if (quote) {
        flush(); endList();
        const node = el("blockquote");
        inline(node, quote[1]);
        fragment.append(node);
      } else {
        endList();
        paragraph.push(line);
      }
    }
    flush();
    return fragment;
  }

  // A Copy button on every code block inside `root` that has none yet.
  function addCodeCopyButtons(root) {
    for (const pre of root.querySelectorAll("pre")) {
      if (pre.parentElement?.classList.contains("code-block")) continue;
      const wrap = el("div");
      wrap.className = "code-block";
      pre.replaceWith(wrap);
      const button = el("button", "Copy");
      button.type = "button";
      button.className = "copy-code";
      button.setAttribute("aria-label", "Copy code");
      wrap.append(button, pre);
    }
  }

  window.rtdashMarkdown = { render, addCodeCopyButtons };
})();
