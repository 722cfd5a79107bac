"""Assistant text as Markdown, safely: what the upstream writes is never HTML on our pages.

markdown-it-py in its CommonMark preset with raw HTML off (`<script>` and `<img onerror>` come
out as text), images off (a data: or tracking URL would load without a click) and links only
to http(s), mailto and relative addresses (no `javascript:` or `data:`). Live answers are drawn
by static/markdown.js, which builds DOM nodes from the same subset and never assigns HTML.
"""

from __future__ import annotations

import re
from functools import cache

from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

# A scheme is letters, digits, + - . before a colon; anything else is a relative link.
SCHEME_RE = re.compile(r"^\s*([a-z][a-z0-9+.-]*):", re.IGNORECASE)
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})


def _safe_link(url: str) -> bool:
    scheme = SCHEME_RE.match(url)
    return scheme is None or scheme.group(1).lower() in SAFE_SCHEMES


@cache
def _renderer() -> MarkdownIt:
    renderer = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    renderer.disable(["image", "html_block", "html_inline"])
    renderer.validateLink = _safe_link
    return renderer


def render_markdown(text: str) -> SafeString:
    """HTML for `text`; everything that is not Markdown is escaped."""
    return mark_safe(_renderer().render(text or ""))  # noqa: S308 - html is off: escaped output
