"""The ``kefu`` command: ``serve``, ``token``, ``apikey``, ``store`` and ``--version``.

Each command imports what it needs when it runs: ``kefu --version`` and ``kefu token`` do not load
the gateway (Trio, the store, the HTTP app, Pillow), which took them from 0.9 s to a fraction.
"""

from __future__ import annotations

import argparse
import gc
import logging
import resource
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .config import Config, add_arguments, from_arguments
from .logs import configure
from .model import API_SCOPES, CHANNELS, ROLES
from .build import describe as describe_build

if TYPE_CHECKING:
    from .store import SqliteBackend

log = logging.getLogger("kefu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kefu", description="Kefu (客服): realtime customer-service gateway.")
    parser.add_argument("--version", action="version", version=f"kefu {__version__} ({describe_build()})")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the gateway", description="Run the gateway until SIGTERM/SIGINT.")
    add_arguments(serve_cmd)

    token = commands.add_parser("token", help="mint a development token", description="Print a signed client token.")
    token.add_argument("--tenant", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--channel", default="web", choices=CHANNELS)
    token.add_argument("--name", default=None, help="display name shown to other participants")
    token.add_argument("--customer", default=None, help="shoppers: the shop's customer id the identity is linked to (docs/workspace.md)")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="seconds until it expires")
    token.add_argument("--data-dir", default=None, help="where the development secret is (as for serve)")
    token.add_argument("--jwt-secret", default=None, help="sign with this secret instead (env KEFU_JWT_SECRET)")
    token.add_argument(
        "--page", nargs="?", const="http://127.0.0.1:8701", default=None, metavar="HTTP_URL",
        help="print the browser page for the token instead, the token in its fragment: the agent console (agents, supervisors) or the chat (shoppers); HTTP_URL is the gateway's HTTP side (default http://127.0.0.1:8701)",
    )

    apikey = commands.add_parser(
        "apikey", help="create, list or revoke REST API keys",
        description="Manage a tenant's REST API keys in the SQLite store of --data-dir (docs/api.md). "
        "Safe while the gateway runs: keys are checked on every call.",
    )
    actions = apikey.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it (shown this once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(API_SCOPES)}")
    listing = actions.add_parser("list", help="list a tenant's keys (never their secrets)")
    listing.add_argument("--tenant", required=True)
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("--tenant", required=True)
    revoke.add_argument("key_id")
    for sub in (create, listing, revoke):
        sub.add_argument("--data-dir", default=None, help="where the SQLite store is (as for serve)")

    store = commands.add_parser("store", help="check or repair the SQLite store", description="Check or repair the SQLite store (docs/operations.md).")
    store.add_argument("action", choices=("check", "repair"), help="check: report damage (exit 3 if any); repair: rebuild indexes and counters, then check")
    store.add_argument("--data-dir", default=None, help="where kefu.sqlite3 is (as for serve; env KEFU_DATA_DIR)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "token":
        return _token(args)
    if args.command == "apikey":
        return _apikey(args)
    if args.command == "store":
        return _store(args)
    config = from_arguments(args)
    problems = config.problems()
    if problems:
        for problem in problems:
            print(f"kefu serve: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from . import workers

    if config.workers > 1 and workers.index() is None:
        configure(config.log_format, config.log_level, node="supervisor")
        return workers.supervise(config, argv if argv is not None else sys.argv[1:])
    if not config.node_id:
        config.node_id = workers.node_id(workers.index())
    configure(config.log_format, config.log_level, node=config.node_id)
    if config.store == "sqlite" and not _store_is_sound(config):
        return EXIT_STORE_DAMAGED
    _raise_file_limit()
    _tune_gc()
    import trio

    trio.run(_serve, config)
    return 0


def _tune_gc() -> None:
    """The data path allocates many short-lived, acyclic objects per message; CPython's default
    young-generation threshold (700) then runs a collection every few hundred messages (profiled at
    about 15 % of the gateway's CPU). Collect less often, and move what startup allocated out of
    the collector's sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _raise_file_limit() -> None:
    """Every connection is a file descriptor: take the whole hard limit the system grants."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("file descriptor limit: %d (connections per process stay below it)", hard)


EXIT_USAGE = 2
EXIT_STORE_DAMAGED = 3


def _store_is_sound(config: Config) -> bool:
    """The startup check: a damaged store is not served unless the operator says so."""
    from .store import sqlite_check

    report = sqlite_check.check(str(config.sqlite_path))
    if not report.damaged:
        return True
    for problem in report.problems:
        log.error("store damaged: %s", problem)
    if config.allow_damaged_store == "yes":
        log.error("serving a damaged store because --allow-damaged-store yes was given")
        return True
    log.error("refusing to serve a damaged store: run `kefu store check` and `kefu store repair` (docs/operations.md), "
              "or start with --allow-damaged-store yes to rescue data")
    return False


def _store(args: argparse.Namespace) -> int:
    from .store import sqlite_check

    config = from_arguments(argparse.Namespace(data_dir=args.data_dir))
    path = str(config.sqlite_path)
    report = sqlite_check.repair(path) if args.action == "repair" else sqlite_check.check(path, full=True)
    for line in report.repaired:
        print(f"repaired: {line}")
    for line in report.problems:
        print(f"damaged: {line}")
    if report.damaged:
        return EXIT_STORE_DAMAGED
    print(f"{path}: ok")
    return 0


def _token(args: argparse.Namespace) -> int:
    from .auth import mint_token

    overrides = argparse.Namespace(data_dir=args.data_dir, jwt_secret=args.jwt_secret)
    secret, _ = from_arguments(overrides).secret()
    minted = mint_token(secret, tenant=args.tenant, user=args.user, role=args.role, channel=args.channel, ttl_s=args.ttl, name=args.name, customer=args.customer)
    # The fragment stays in the browser: it is never sent to the server nor written to its logs.
    page = "chat" if args.role == "shopper" else "console"
    print(f"{args.page.rstrip('/')}/{page}/#token={minted}" if args.page else minted)
    return 0


def _apikey(args: argparse.Namespace) -> int:
    from .http import keys
    from .model import CreateApiKey, RevokeApiKey
    from .store import SqliteBackend

    config = from_arguments(argparse.Namespace(data_dir=args.data_dir))
    path = Path(config.data_dir) / "kefu.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = SqliteBackend(path)
    backend.open()
    try:
        if args.action == "create":
            scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
            try:
                record, secret = keys.new_key(args.tenant, args.name, scopes)
            except ValueError as exc:
                raise SystemExit(f"--scopes: {exc}") from None
            _applied(backend, CreateApiKey(record))
            print(f"created API key {record.id} of tenant {record.tenant} ({', '.join(record.scopes)}); it is shown this once:", file=sys.stderr)
            print(secret)
        elif args.action == "list":
            for key in backend.api_keys(args.tenant):
                state = "revoked" if key.revoked_at else "valid"
                print(f"{key.id}\t{state}\t{','.join(key.scopes)}\t{key.name}")
        else:
            _applied(backend, RevokeApiKey(args.tenant, args.key_id, int(time.time() * 1000)))
            print(f"revoked API key {args.key_id}")
    finally:
        backend.close()
    return 0


def _applied(backend: SqliteBackend, op: object) -> object:
    from .store import StoreError

    [result] = backend.apply_batch([op])
    if isinstance(result, StoreError):
        raise SystemExit(str(result))
    return result


async def _serve(config: Config) -> None:
    import trio

    from .app import Running, serve
    from .build import missing_native_warning

    log.info("kefu %s starting (%s): %s", __version__, describe_build(), config.describe())
    warning = missing_native_warning()
    if warning:
        log.warning(warning)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(serve, config)
            print(f"kefu {__version__} listening (node {running.node.id})", flush=True)
            print(f"  WebSocket: {running.url}  (subprotocol kefu.v1)", flush=True)
            if running.metrics_url:
                print(f"  Metrics:   {running.metrics_url}", flush=True)
                print(f"  REST API:  {running.http_url}/v1  (OpenAPI: /v1/openapi.json; keys: kefu apikey create)", flush=True)
                print(f"  Console:   {running.http_url}/console/  (agents: kefu token … --role agent --page {running.http_url})", flush=True)
                print(f"  Chat:      {running.http_url}/chat/  (shoppers: kefu token … --role shopper --page {running.http_url})", flush=True)
            signing = "--jwt-secret <the same secret>" if config.jwt_secret else f"--data-dir {config.data_dir}"
            print(f"  Token:     kefu token {signing} --tenant demo --user alice --role shopper", flush=True)
            async for signum in signals:
                log.info("%s: graceful shutdown", signal.Signals(signum).name)
                running.node.stop()
                break
    log.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
