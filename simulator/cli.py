"""The command line: `python -m simulator --host 127.0.0.1 --port 8765 [--keys a,b]`."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
from collections.abc import Sequence

from .app import SimulatorApp, keys_from_env


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description="Serve a simulator of the RunTools API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--keys",
        default=None,
        help="comma-separated valid API keys (default: $SIM_API_KEYS, else rt_test_demo)",
    )
    parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    keys = (
        tuple(k.strip() for k in args.keys.split(",") if k.strip())
        if args.keys is not None
        else keys_from_env()
    )
    app = SimulatorApp(keys)
    logging.basicConfig(level=logging.WARNING)
    # What start-up made lives as long as the process: out of the collector's way, so a full
    # collection does not walk it again and again (a 6 ms pause every few seconds of a
    # benchmark, landing on whichever stream was running).
    gc.collect()
    gc.freeze()
    if args.server == "daphne":
        serve_daphne(app, args.host, args.port)
    else:
        serve_uvicorn(app, args.host, args.port)


def serve_uvicorn(app: SimulatorApp, host: str, port: int) -> None:
    import uvicorn

    # httptools parses faster when present; h11 (pure Python) is always there.
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        http=http,
        # A test that stops the server mid-stream (or mid-hang) should not wait on it.
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()


def serve_daphne(app: SimulatorApp, host: str, port: int) -> None:
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    Server(
        application=app,
        endpoints=build_endpoint_description_strings(host=host, port=port),
        verbosity=0,
    ).run()
