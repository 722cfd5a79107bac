from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "rtdash"

    def ready(self) -> None:
        from runs import (
            checks,  # noqa: F401  (registers the safety checks)
            signals,  # noqa: F401  (audits logins and failed logins)
        )
        from runs.playground import (
            membership,  # noqa: F401  (tells open sockets when a membership changes)
        )
