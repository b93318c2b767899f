"""``serve``: the JSON-lines server the add-on talks to (the same as ``python -m trellis_backend.server``)."""
from __future__ import annotations

from ..server.app import add_server_arguments, run_server


def add_parser(subparsers):
    p = subparsers.add_parser("serve", help="run the backend server (line-delimited JSON over stdin/stdout)",
                              description="TRELLIS backend server (line-delimited JSON over stdin/stdout).")
    add_server_arguments(p)
    return p


def run(args) -> int:
    return run_server(args)
