"""`aftm-gateway serve --workers N`: N processes serving one listening socket.

The parent binds the socket, forks the workers (each runs its own event loop, upstream pools, outbox
worker and store connection) and stops them together. What workers must agree on lives in the store
(outbox, idempotency) or comes from the config: app credentials are signed with `session_secret`, so
the parent fixes one for all workers when the config has none.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import socket
import sys

from gateway.config import Config, Secret


def run_workers(config: Config, *, count: int, host: str | None = None, port: int | None = None) -> int:
    """Fork `count` workers on one socket; return when they have all exited (the first failure's code)."""
    from gateway.cli import serve_config

    if config.session_secret is None:
        config = dataclasses.replace(config, session_secret=Secret(secrets.token_hex(32)))
    address = (host or config.listen.host, config.listen.port if port is None else port)
    sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker: serve until told to stop, never return into the parent's code
            code = 0
            try:
                serve_config(config, sock=sock)
            except BaseException:  # reported by the exit code; the traceback went to stderr
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)
    sock.close()

    def stop(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, -signal.SIGTERM, -signal.SIGINT):
            worst = worst or code
            stop(signal.SIGTERM, None)  # one worker died: take the others down, let the supervisor restart
    return worst
