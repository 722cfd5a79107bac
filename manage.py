#!/usr/bin/env python
"""Django's command-line utility for rtdash."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtdash.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # A bad environment variable: one clear line, not a traceback.
        sys.exit(f"rtdash: {error}")


if __name__ == "__main__":
    main()
