"""`python manage.py simulate [--host] [--port] [--keys]`: serve the RunTools simulator.

A thin wrapper so the simulator can be started like the rest of rtdash; the simulator itself
stays independent of Django (it is the same as `python -m simulator`).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve the RunTools API simulator (same as `python -m simulator`)."
    # The simulator does not use Django, so a settings problem must not keep it from starting.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument(
            "--keys", help="comma-separated valid API keys (default: $SIM_API_KEYS or rt_test_demo)"
        )
        parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn")

    def handle(self, *args: Any, **options: Any) -> None:
        from simulator.cli import main

        argv = ["--host", options["host"], "--port", str(options["port"])]
        argv += ["--server", options["server"]]
        if options["keys"]:
            argv += ["--keys", options["keys"]]
        self.stdout.write(f"RunTools simulator on http://{options['host']}:{options['port']}/v1")
        main(argv)
