"""Each benchmark owns one section of bench/results.md and rewrites only that section."""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("results.md")
HEADER = (
    "# rtdash benchmark results\n\nRewritten by `make bench`; each section by its own script.\n"
)


def machine_line() -> str:
    import os

    return (
        f"_{datetime.date.today().isoformat()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}_"
    )


def write_section(name: str, markdown: str) -> None:
    """Replace the section `name` in results.md (or append it), keeping the others."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.strip()}\n\n{machine_line()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(block)
