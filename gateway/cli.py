"""`aftm-gateway serve | check-config | migrate | outbox | simulate | demo | drill`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from gateway.config import Config, config_warnings, load_config
from gateway.errors import ConfigError, StoreError
from gateway.telemetry.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(level=os.environ.get("AFTM_LOG_LEVEL", "INFO"))
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print("configuration problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except StoreError as exc:  # migrate and outbox: the store is down, refused, or not a store at all
        print(f"store problem: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        # simulate, drill and demo live in gateway_tools, which a checkout installs and the image does not.
        if exc.name != "gateway_tools":
            raise
        print(f"aftm-gateway {args.command}: the tools (simulate, drill, demo) are not installed here; the "
              "container image carries only the gateway. Run them from a checkout: bash scripts/setup",
              file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aftm-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="YAML config file")
    serve.add_argument("--host", help="override listen.host")
    serve.add_argument("--port", type=int, help="override listen.port")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes sharing the listening socket (default 1)")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check-config", help="validate a config and print every problem")
    check.add_argument("file")
    check.set_defaults(run=_check_config)

    migrate = commands.add_parser("migrate", help="apply the store's schema migrations")
    migrate.add_argument("--config", required=True)
    migrate.set_defaults(run=_migrate)

    outbox = commands.add_parser("outbox", help="inspect and steer queued sends")
    outbox.add_argument("--config", required=True)
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True)
    listing = outbox_commands.add_parser("list", help="queued sends, oldest first")
    listing.add_argument("--status", choices=["pending", "leased", "delivered", "dead"])
    listing.add_argument("--limit", type=int, default=50)
    for name, text in (("retry", "make an item due now (a dead one comes back)"), ("drop", "delete an item")):
        command = outbox_commands.add_parser(name, help=text)
        command.add_argument("id")
    outbox.set_defaults(run=_outbox)

    simulate = commands.add_parser("simulate", help="run one simulated Responsys account")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, required=True)
    simulate.add_argument("--control-port", type=int, default=0,
                          help="port of the fault-control API (default: port + 1000)")
    simulate.add_argument("--name", default="primary")
    simulate.add_argument("--user-name", help="API user (default: api_<name>)")
    simulate.add_argument("--password-env", default="AFTM_SIM_PASSWORD",
                          help="environment variable holding the API user's password")
    simulate.add_argument("--tls-cert")
    simulate.add_argument("--tls-key")
    simulate.add_argument("--tls-max-version", choices=["1.0", "1.1", "1.2", "1.3"])
    simulate.add_argument("--secondary", action="store_true", help="act as a failover (secondary) account")
    simulate.add_argument("--client-certificate", metavar="PEM_FILE",
                          help="the API user's certificate: enables certificate login for it")
    simulate.add_argument("--server-key", metavar="PEM_FILE",
                          help="with --client-certificate: the account's server key (with --server-certificate)")
    simulate.add_argument("--server-certificate", metavar="PEM_FILE",
                          help="with --client-certificate: the certificate of --server-key, which the user checks")
    simulate.add_argument("--certificate-only", action="store_true",
                          help="refuse password login for the API user (needs --client-certificate)")
    simulate.add_argument("--sms", action="store_true",
                          help="run the SMS aggregator (POST /mt, delivery receipts) instead of a Responsys account")
    simulate.add_argument("--receipt-delay-ms", type=int, default=0,
                          help="with --sms: default delay of delivery receipts (default 0)")
    simulate.set_defaults(run=_simulate)

    demo = commands.add_parser("demo", help="two simulated accounts and the gateway, on this machine")
    demo.add_argument("--port", type=int, default=8080, help="gateway port (0: any free port)")
    demo.add_argument("--data-dir", help="where the SQLite store lives (default: a temporary folder)")
    demo.add_argument("--drill", action="store_true",
                      help="run the scripted failover drill instead, print its table and exit (non-zero if lost)")
    demo.add_argument("--scale", type=float, default=1.0, help="drill duration scale (default 1.0)")
    demo.set_defaults(run=_demo)

    drill = commands.add_parser("drill", help="the failover drill, or with --chaos the crash drill; prints a table")
    drill.add_argument("--chaos", action="store_true",
                       help="kill gateways and crash PostgreSQL under load instead of the failover drill")
    drill.add_argument("--scenario", action="append", metavar="NAME",
                       help="with --chaos: run only this scenario (repeatable; default: all; an unknown name "
                            "lists the scenarios)")
    drill.add_argument("--scale", type=float, default=1.0, help="duration scale (default 1.0)")
    drill.add_argument("--data-dir", help="where stores and logs go (default: a temporary folder)")
    drill.set_defaults(run=_drill)
    return parser


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    names = ", ".join(a.name for a in config.accounts)
    print(f"{args.file}: ok ({len(config.accounts)} accounts: {names}; {len(config.clients)} clients)")
    for warning in config_warnings(config):  # valid, so still exit 0; each line says which key and why
        print(f"warning: {warning}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.workers > 1:
        from gateway.workers import run_workers

        return run_workers(config, count=args.workers, host=args.host, port=args.port)
    serve_config(config, host=args.host, port=args.port)
    return 0


def serve_config(config: Config, *, host: str | None = None, port: int | None = None,
                 sock: socket.socket | None = None) -> None:
    """Serve the gateway in this process (on `sock` when given, e.g. shared by worker processes)."""
    from gateway.edge.app import build_app
    from gateway.edge.listener import server_config
    from policies.tls import server_context

    listen = config.listen
    tls = (server_context(cert_file=listen.tls_cert, key_file=listen.tls_key)
           if listen.tls_cert and listen.tls_key else None)
    settings = server_config(build_app(config), config, host=host, port=port, tls=tls)
    tune_gc()
    uvicorn.Server(settings).run(sockets=None if sock is None else [sock])


GC_THRESHOLD = (10_000, 20, 20)  # CPython's default is (700, 10, 10)


def tune_gc() -> None:
    """Keep the cyclic garbage collector from costing every send (bench.ab, same run: 417 -> 391 µs of CPU
    per send, +8% req/s; a gen-0 threshold of 50,000 was no better than 10,000).

    Everything built so far (modules, config, the app and its parts) lives as long as the process:
    `gc.freeze()` moves it out of the collector's way, so an older-generation collection no longer
    walks it. A send allocates a few hundred tracked objects that reference counting frees at once;
    with CPython's default the youngest generation was still collected every ~700 allocations, a few
    times per send. Cyclic garbage is still collected, after 10,000 allocations instead of 700.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def _migrate(args: argparse.Namespace) -> int:
    from gateway.store import open_store

    config = load_config(args.config)

    async def run() -> None:
        store = await open_store(config.store)
        await store.close()

    asyncio.run(run())
    print(f"store {config.store}: schema up to date")
    return 0


def _outbox(args: argparse.Namespace) -> int:
    from gateway.store import OutboxStatus, open_store

    config = load_config(args.config)

    async def run() -> int:
        store = await open_store(config.store)
        try:
            if args.outbox_command == "list":
                status = OutboxStatus(args.status) if args.status else None
                for item in await store.list(status, limit=args.limit):
                    print(f"{item.id}  {item.status.value:<9} attempts={item.attempts:<3} {item.method} {item.path}"
                          f"  client={item.client}  last_error={item.last_error or '-'}")
                return 0
            done = await (store.retry_now(args.id) if args.outbox_command == "retry" else store.drop(args.id))
            print(f"{args.outbox_command} {args.id}: {'done' if done else 'no such item (or not allowed)'}")
            return 0 if done else 1
        finally:
            await store.close()

    return asyncio.run(run())


def _simulate(args: argparse.Namespace) -> int:
    from gateway_tools.simulator.server import run_simulator

    password = os.environ.get(args.password_env) or f"demo-{args.name}-password"
    if args.sms:
        from gateway_tools.simulator.sms import run_sms_simulator

        asyncio.run(run_sms_simulator(
            host=args.host, port=args.port, control_port=args.control_port or args.port + 1000, name=args.name,
            user_name=args.user_name or f"api_{args.name}", password=password, tls_cert=args.tls_cert,
            tls_key=args.tls_key, default_after_ms=args.receipt_delay_ms))
        return 0
    certificates = _simulator_certificates(args)
    if isinstance(certificates, str):
        print(f"aftm-gateway simulate: {certificates}", file=sys.stderr)
        return 2
    asyncio.run(run_simulator(
        host=args.host, port=args.port, control_port=args.control_port or args.port + 1000, name=args.name,
        user_name=args.user_name or f"api_{args.name}", password=None if args.certificate_only else password,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_max_version=args.tls_max_version,
        secondary=args.secondary, **certificates,
    ))
    return 0


def _simulator_certificates(args: argparse.Namespace) -> dict[str, str | None] | str:
    """The certificate-login PEMs named on the command line, read; or what is wrong with them.

    The server key pair must be given with the client certificate: a pair made at start would differ
    on every run, and the API user could not have downloaded its certificate beforehand.
    """
    named = {"client_certificate": args.client_certificate, "server_key": args.server_key,
             "server_certificate": args.server_certificate}
    if args.certificate_only and args.client_certificate is None:
        return "--certificate-only needs --client-certificate"
    if args.client_certificate is None:
        if args.server_key or args.server_certificate:
            return "--server-key and --server-certificate only apply with --client-certificate"
        return {}
    if args.server_key is None or args.server_certificate is None:
        return "--client-certificate needs --server-key and --server-certificate"
    read: dict[str, str | None] = {}
    for key, path in named.items():
        try:
            read[key] = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
    return read


def _drill(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="aftm-drill-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.chaos:
        from gateway_tools.chaos.main import SCENARIOS
        from gateway_tools.chaos.main import main as chaos

        unknown = [name for name in args.scenario or () if name not in SCENARIOS]
        if unknown:
            print(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
            return 2
        return chaos(scale=args.scale, only=tuple(args.scenario or SCENARIOS), directory=data_dir)
    from gateway_tools.drill.main import run_drill

    return asyncio.run(run_drill(data_dir=data_dir, duration_scale=args.scale))


def _demo(args: argparse.Namespace) -> int:
    from gateway_tools.demo import run_demo

    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="aftm-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.drill:
        from gateway_tools.drill.main import run_drill

        return asyncio.run(run_drill(data_dir=data_dir, duration_scale=args.scale))
    asyncio.run(run_demo(port=args.port, data_dir=data_dir))
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    raise SystemExit(main())
