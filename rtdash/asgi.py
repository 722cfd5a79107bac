"""ASGI entry point: HTTP through Django, websockets through Channels.

Django is set up (get_asgi_application) before anything imports models, as Channels requires.
"""

from __future__ import annotations

import gc
import os
import sys

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rtdash.settings")

try:
    from django.core.asgi import get_asgi_application

    django_asgi_app = get_asgi_application()
except ImproperlyConfigured as error:
    sys.exit(f"rtdash: {error}")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.core import checks

from rtdash.gateway_handler import GatewayASGIHandler, split_by_path
from rtdash.origins import SameOriginValidator
from rtdash.run_endpoint import RunEndpoint, match_run
from rtdash.static_files import StaticFilesWithHeaders
from rtdash.websocket_auth import WebsocketAuthStack
from runs.checks import SAFETY_TAG
from runs.pipeline.reaper import start_maintenance
from runs.playground.routing import websocket_urlpatterns

# ASGI servers do not run system checks; refuse an unsafe production setup here. A check
# silenced on purpose (RTDASH_SILENCED_CHECKS) is skipped, as `manage.py check` skips it.
_unsafe = [
    m
    for m in checks.run_checks(tags=[SAFETY_TAG])
    if m.is_serious() and m.id not in settings.SILENCED_SYSTEM_CHECKS
]
if _unsafe:
    reasons = "\n".join(f"  {message.msg} {message.hint or ''}" for message in _unsafe)
    sys.exit("rtdash: refusing to start:\n" + reasons)

# This worker's heartbeat-and-reaper thread: no run is left `running` by a dead worker.
start_maintenance()

# Static files are few and small; serving them here saves a newcomer a separate web server.
pages_app = django_asgi_app
if settings.RTDASH_SERVE_STATIC:
    pages_app = StaticFilesWithHeaders(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": split_by_path(GatewayASGIHandler(), pages_app, RunEndpoint(), match_run),
        # The whole origin (scheme, host, port), not just its host: see rtdash/origins.py.
        "websocket": SameOriginValidator(WebsocketAuthStack(URLRouter(websocket_urlpatterns))),
    }
)

# Django and every import above live as long as the worker: out of the cyclic collector's
# way, so a full collection walks only what requests made since (the pauses it saves are in
# docs/performance.md).
gc.collect()
gc.freeze()
