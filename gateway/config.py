"""Configuration: one dataclass, read from flags and ``KEFU_*`` environment variables.

Every field is a flag (``--max-frame-bytes``) and an environment variable (``KEFU_MAX_FRAME_BYTES``);
a flag wins over the environment, which wins over the default. The README's configuration table is
generated from the same field list (``kefu serve --help`` prints it too). Secrets are marked so that
``Config.describe`` never shows them.
"""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .media.kinds import MediaLimits
from .protocol.envelope import Limits


_LIMITS = Limits()
_MEDIA = MediaLimits()


def _opt(default: Any, help: str, *, secret: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret, "choices": choices})


@dataclass
class Config:
    host: str = _opt("127.0.0.1", "Address the WebSocket listener binds.")
    port: int = _opt(8700, "WebSocket port (0 picks a free one).")
    metrics_host: str = _opt("127.0.0.1", "Address of the HTTP listener: metrics, health and the REST API.")
    metrics_port: int = _opt(8701, "HTTP port: /metrics, /healthz, /readyz and the REST API /v1 (0 picks a free one, -1 disables).")
    api_max_body_bytes: int = _opt(64 * 1024, "Largest REST API request body accepted (bigger: 413).")
    api_rate_per_second: float = _opt(50.0, "REST API requests per second per API key; twice that (at least 2) at once (over it: 429; 0: no limit).")
    data_dir: str = _opt("./data", "Directory for the SQLite database and the development secret.")
    store: str = _opt("sqlite", "Persistence backend: sqlite, memory, or a postgresql://user@host:port/db URL (shared by many processes).")
    store_schema: str = _opt("public", "PostgreSQL schema of the store's tables (with a postgresql:// store).")
    bus: str = _opt("local", "Bus between gateway processes: local (this process only) or a redis://host:port[/db] URL.")
    bus_channel: str = _opt("kefu:bus", "Redis pub/sub channel of the bus (with a redis:// bus); clusters sharing a Redis use different ones.")
    workers: int = _opt(1, "Gateway processes sharing the port (SO_REUSEPORT); more than 1 needs a postgresql:// store and a redis:// bus.")
    node_id: str = _opt("", "This process's id in logs, metrics and on the bus (empty: a random one).")
    sqlite_synchronous: str = _opt(
        "normal", "SQLite synchronous mode: normal survives a process crash, full also a power loss.", choices=("normal", "full")
    )
    allow_damaged_store: str = _opt(
        "no", "Serve a SQLite store that the startup check found damaged (see `kefu store check`); yes only to rescue data.", choices=("no", "yes")
    )
    jwt_secret: str = _opt("", "HS256 secret for client tokens (default: a development secret kept in the data dir).", secret=True)
    tenants: str = _opt("", "Comma-separated tenants served (empty: any tenant with a valid token).")
    tenant_secrets_file: str = _opt("", "JSON file {tenant: secret} of per-tenant token secrets.")
    allowed_origins: str = _opt("", "Comma-separated Origin values allowed at the handshake (empty: any).")
    max_frame_bytes: int = _opt(_LIMITS.max_frame_bytes, "Largest WebSocket message accepted (bigger: close 1009).")
    max_text_chars: int = _opt(_LIMITS.max_text_chars, "Longest text message body.")
    rate_per_second: float = _opt(_LIMITS.rate_per_second, "Requests per second per connection (token bucket; 0: no limit).")
    rate_burst: int = _opt(_LIMITS.rate_burst, "Token bucket size: requests allowed at once.")
    flood_close_after: int = _opt(200, "Frames refused by the rate limit, less one forgiven per second, after which the connection is closed as a flood (1008).")
    max_fragments: int = _opt(64, "Most frames one WebSocket message may come in (more: close 1008); 8 before authentication.")
    max_preauth_bytes: int = _opt(64 * 1024, "Bytes one connection may send before it authenticates: upgrade request and auth frame (more: close 1008).")
    max_pending_bytes: int = _opt(32 * 1024 * 1024, "Bytes all connections not yet authenticated may hold together; past it new ones get 503 and pending ones close 1013.")
    connect_rate_per_address: float = _opt(1000.0, "New connections per second from one source address (IPv4, or IPv6 /64); over it: HTTP 429 with Retry-After, before the upgrade is read. Each close for abuse halves it for a while (docs/operations.md). 0: no limit.")
    connect_burst_per_address: int = _opt(2000, "New connections one source address may open at once (the bucket of --connect-rate-per-address).")
    connect_addresses: int = _opt(16384, "Source addresses the per-address connection limit remembers (least recently seen forgotten first; ~200 bytes each).")
    frame_timeout_s: float = _opt(10.0, "Seconds a started frame or fragmented message may take to complete (slower: close 1008).")
    max_outbox_bytes: int = _opt(4 * 1024 * 1024, "Bytes queued to one connection before it is closed as a slow consumer.")
    max_connections_per_user: int = _opt(20, "Open connections one user may hold on this gateway.")
    max_connections: int = _opt(0, "Open connections this gateway holds (0: limited only by file descriptors).")
    handshake_timeout_s: float = _opt(10.0, "Seconds to complete the HTTP upgrade and authenticate.")
    heartbeat_s: float = _opt(25.0, "Seconds between server pings to a quiet connection.")
    idle_timeout_s: float = _opt(60.0, "Seconds without any data from the client before it is closed (1001).")
    park_after_s: float = _opt(0.5, "Seconds a connection may be quiet before its reader task is parked (0: never): ~2 KB less memory while parked, ~30 µs more CPU to wake.")
    shutdown_timeout_s: float = _opt(10.0, "Seconds SIGTERM may take to flush the store and close clients.")
    routing: str = _opt("on", "Conversation routing: the bot answers first, then agents (off: a plain relay).", choices=("on", "off"))
    routing_file: str = _opt("", "JSON file of per-tenant routing settings (docs/routing.md); empty: the defaults.")
    bot_fits_dir: str = _opt("", "Where fitted bot models are kept, so that a restart loads them instead of fitting again (empty: DATA_DIR/bot-fits; off: not kept). As trusted as the data dir: they are pickles.")
    routing_lease_s: float = _opt(10.0, "With a redis:// bus: seconds the routing leader's lease and each node's heartbeat live; a dead leader or node is noticed after this long (docs/scaling.md).")
    routing_reply_timeout_s: float = _opt(5.0, "With a redis:// bus: seconds a routing request forwarded to the leader may wait for its answer (then `unavailable`: retry).")
    media_image_bytes: int = _opt(_MEDIA.image_bytes, "Largest image upload, in bytes.")
    media_video_bytes: int = _opt(_MEDIA.video_bytes, "Largest video upload, in bytes.")
    media_voice_bytes: int = _opt(_MEDIA.voice_bytes, "Largest voice upload, in bytes.")
    media_file_bytes: int = _opt(_MEDIA.file_bytes, "Largest file upload, in bytes.")
    media_image_pixels: int = _opt(_MEDIA.image_pixels, "Most pixels (width x height) of an image upload; more is a decompression bomb.")
    media_workers: int = _opt(2, "Uploads decoded and probed at once, each in a worker (each may hold a decoded image in memory).")
    media_inspection: str = _opt(
        "processes", "Where uploads are decoded and probed: worker processes at a lower CPU priority (the event loop keeps its core), or threads of the gateway process (they share its GIL).",
        choices=("processes", "threads"),
    )
    media_cpus: str = _opt("", "CPUs the media inspection workers run on, as a list (1,3 or 2-7); empty: the gateway's own. Cores apart from the event loop's keep decoding from delaying messages (docs/operations.md).")
    media_url_ttl_s: int = _opt(300, "Seconds a signed download URL stays valid.")
    media_dir: str = _opt("", "Where attachments' blobs and upload spool files live (empty: DATA_DIR/media). Another disk than the store's keeps upload fsyncs from slowing its commits.")
    context_url: str = _opt("", "The shop's CRM: customer context from GET <url>/customers/<id>/context (docs/workspace.md); empty: the built-in provider fed by /v1/ingest.")
    context_timeout_s: float = _opt(2.0, "Seconds a customer-context fetch may take before the agent is told it is unavailable.")
    context_ttl_s: float = _opt(60.0, "Seconds the CRM's answer for a customer is cached.")
    context_wait_s: float = _opt(0.2, "Seconds an assignment waits for the customer context before sending it on (`pending`, then a `customer_context` event).")
    webhooks_allow_private: str = _opt(
        "no", "Send webhooks to loopback, private and link-local addresses too (a receiver on the gateway's own network); no keeps them from reaching its neighbours.",
        choices=("no", "yes"),
    )
    webhooks_timeout_s: float = _opt(5.0, "Seconds a webhook receiver has to answer before the delivery is tried again later.")
    webhooks_max_pending: int = _opt(10_000, "Webhook events waiting for their receivers, at most; more are dropped (counted and logged).")
    webhooks_max_pending_bytes: int = _opt(64 * 1024 * 1024, "Bytes the webhook events waiting for their receivers may hold; more are dropped.")
    web_ws_url: str = _opt(
        "", "WebSocket URL the browser pages (the agent console, the shopper's chat) connect to (ws:// or wss://, as the browser reaches it behind a proxy); empty: the page's own host at --port."
    )
    log_format: str = _opt("text", "Log format.", choices=("text", "json"))
    log_level: str = _opt("info", "Log level.", choices=("debug", "info", "warning", "error"))

    @property
    def media_limits(self) -> MediaLimits:
        return replace(
            _MEDIA,
            image_bytes=self.media_image_bytes,
            video_bytes=self.media_video_bytes,
            voice_bytes=self.media_voice_bytes,
            file_bytes=self.media_file_bytes,
            image_pixels=self.media_image_pixels,
        )

    @property
    def media_cpu_set(self) -> frozenset[int] | None:
        """--media-cpus as CPU numbers (None: not set); ValueError when it is not a CPU list."""
        return cpu_list(self.media_cpus) if self.media_cpus.strip() else None

    @property
    def limits(self) -> Limits:
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            max_text_chars=self.max_text_chars,
            rate_per_second=self.rate_per_second,
            rate_burst=self.rate_burst,
        )

    @property
    def sqlite_path(self) -> Path:
        return Path(self.data_dir) / "kefu.sqlite3"

    @property
    def bot_fits_path(self) -> str:
        """Where fitted bot models are kept ("" for nowhere)."""
        if self.bot_fits_dir == "off":
            return ""
        return self.bot_fits_dir or str(Path(self.data_dir) / "bot-fits")

    @property
    def shared_store(self) -> bool:
        """A store other processes can share (PostgreSQL)."""
        return self.store.startswith(("postgresql://", "postgres://"))

    @property
    def shared_bus(self) -> bool:
        return self.bus.startswith("redis://")

    def problems(self) -> list[str]:
        """What makes this configuration unusable, as messages for the operator."""
        found = []
        if self.store not in ("sqlite", "memory") and not self.shared_store:
            found.append(f"--store {self.store!r}: expected sqlite, memory or a postgresql:// URL")
        if self.bus != "local" and not self.shared_bus:
            found.append(f"--bus {self.bus!r}: expected local or a redis:// URL")
        if self.workers < 1:
            found.append("--workers must be at least 1")
        elif self.workers > 1 and not (self.shared_store and self.shared_bus):
            found.append(
                f"--workers {self.workers} needs a store and a bus the processes share: "
                "--store postgresql://… and --bus redis://… (SQLite and the local bus belong to one process)"
            )
        if self.routing_lease_s <= 0 or self.routing_reply_timeout_s <= 0:
            found.append("--routing-lease-s and --routing-reply-timeout-s must be positive")
        if self.web_ws_url and not self.web_ws_url.startswith(("ws://", "wss://")):
            found.append(f"--web-ws-url {self.web_ws_url!r}: expected a ws:// or wss:// URL")
        try:
            cpus = self.media_cpu_set
        except ValueError as exc:
            found.append(f"--media-cpus {self.media_cpus!r}: {exc}")
        else:
            present = os.cpu_count() or 0
            if cpus is not None and present and max(cpus) >= present:
                found.append(f"--media-cpus {self.media_cpus!r}: this machine's CPUs are 0-{present - 1}")
        return found

    def csv(self, name: str) -> frozenset[str] | None:
        value = getattr(self, name)
        items = frozenset(v.strip() for v in value.split(",") if v.strip())
        return items or None

    def secret(self) -> tuple[str, str]:
        """The token secret and where it came from (never the secret itself in logs)."""
        if self.jwt_secret:
            return self.jwt_secret, "KEFU_JWT_SECRET/--jwt-secret"
        path = Path(self.data_dir) / "dev-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip(), f"development secret in {path}"

    def describe(self) -> dict[str, Any]:
        """The settings for the startup log: secrets masked."""
        return {
            f.name: ("***" if f.metadata["secret"] and getattr(self, f.name) else _without_password(getattr(self, f.name)))
            for f in fields(self)
        }


def cpu_list(text: str) -> frozenset[int]:
    """CPU numbers from a list such as ``0,2-3`` (the format of taskset -c and cpuset files)."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{part.strip()!r} is not a CPU number or range (expected a list such as 1,3 or 2-7)")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{part.strip()!r} is an empty range")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def _without_password(value: Any) -> Any:
    """A URL's password masked (``redis://:***@host``); anything else as it is."""
    if isinstance(value, str) and "://" in value and "@" in value:
        scheme, rest = value.split("://", 1)
        userinfo, host = rest.rsplit("@", 1)
        if ":" in userinfo:
            return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
    return value


def add_arguments(parser: argparse.ArgumentParser, defaults: Config | None = None) -> None:
    defaults = defaults or Config()
    for f in fields(Config):
        env = "KEFU_" + f.name.upper()
        switch = f.metadata["choices"] == ("no", "yes")  # `--allow-damaged-store` alone means yes
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=type(getattr(defaults, f.name)),
            default=None,
            choices=f.metadata["choices"],
            help=f"{f.metadata['help']} [env {env}; default {getattr(defaults, f.name)!r}]",
            **({"nargs": "?", "const": "yes"} if switch else {}),
        )


def from_arguments(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    """Flags over ``KEFU_*`` variables over defaults; a malformed variable is an error naming it."""
    environ = os.environ if environ is None else environ
    config = Config()
    for f in fields(Config):
        value = getattr(args, f.name, None)
        if value is None and ("KEFU_" + f.name.upper()) in environ:
            raw = environ["KEFU_" + f.name.upper()]
            kind = type(getattr(config, f.name))
            try:
                value = kind(raw)
            except ValueError:
                raise SystemExit(f"KEFU_{f.name.upper()}={raw!r}: expected {kind.__name__}") from None
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                raise SystemExit(f"KEFU_{f.name.upper()}={raw!r}: expected one of {', '.join(f.metadata['choices'])}")
        if value is not None:
            setattr(config, f.name, value)
    return config
