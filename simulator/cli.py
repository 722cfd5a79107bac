"""The command line: `python -m simulator --host 127.0.0.1 --port 8765 [--keys a,b]`.

`--billing-port` also serves billing on a port of its own (base URL `http://host:port/v1`,
like `https://billing.runtools.ai/v1`); `--store PATH` keeps the simulator's state in a file.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import os
import socket
from collections.abc import Sequence

from .app import SimulatorApp, admin_keys_from_env, keys_from_env, split_keys


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
    parser.add_argument(
        "--admin-keys",
        default=None,
        help="comma-separated keys of org admins (default: $SIM_ADMIN_KEYS, else the first key)",
    )
    parser.add_argument(
        "--billing-port",
        type=int,
        default=None,
        help="also serve billing as /v1/billing/... on this port (always on /billing/v1/...)",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get("SIM_STORE") or None,
        help="a JSON file to load state from and save it to on every change (default: $SIM_STORE)",
    )
    parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    keys = split_keys(args.keys) if args.keys is not None else keys_from_env()
    admin_keys = (
        split_keys(args.admin_keys) if args.admin_keys is not None else admin_keys_from_env()
    )
    app = SimulatorApp(
        keys, admin_keys=admin_keys, store_path=args.store, billing_port=args.billing_port
    )
    ports = [args.port] if args.billing_port is None else [args.port, args.billing_port]
    logging.basicConfig(level=logging.WARNING)
    # What start-up made lives as long as the process: out of the collector's way, so a full
    # collection does not walk it again and again (a 6 ms pause every few seconds of a
    # benchmark, landing on whichever stream was running).
    gc.collect()
    gc.freeze()
    try:
        if args.server == "daphne":
            serve_daphne(app, args.host, ports)
        else:
            serve_uvicorn(app, args.host, ports)
    finally:
        app.flush()  # daphne returns here after a stop; uvicorn flushes at lifespan shutdown


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve_uvicorn(app: SimulatorApp, host: str, ports: list[int]) -> None:
    import uvicorn

    # httptools parses faster when present; h11 (pure Python) is always there.
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    config = uvicorn.Config(
        app,
        host=host,
        port=ports[0],
        log_level="warning",
        lifespan="on",  # its shutdown event saves the --store file
        http=http,
        # A test that stops the server mid-stream (or mid-hang) should not wait on it.
        timeout_graceful_shutdown=1,
    )
    if len(ports) == 1:
        uvicorn.Server(config).run()
    else:
        # One process, one state, two listening ports: the API's and billing's.
        uvicorn.Server(config).run(sockets=[_listening_socket(host, p) for p in ports])


def serve_daphne(app: SimulatorApp, host: str, ports: list[int]) -> None:
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    Server(
        application=app,
        endpoints=[e for p in ports for e in build_endpoint_description_strings(host=host, port=p)],
        verbosity=0,
    ).run()
