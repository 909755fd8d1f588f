"""Server settings: command-line options, `EDGESIDE_*` environment variables and a config file.

Precedence: command line > environment > config file > defaults. Workers are separate processes
started by uvicorn, so the resolved settings travel to them as one environment variable
(`EDGESIDE_SETTINGS_JSON`) instead of being re-derived in each worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import msgspec

SETTINGS_ENV = "EDGESIDE_SETTINGS_JSON"
ADMIN_TOKEN_ENV = "EDGESIDE_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret
# The serving master's pid, for its workers' parent-death signal (server/app.py).
MASTER_PID_ENV = "EDGESIDE_MASTER_PID"


class CookieSettings(msgspec.Struct, forbid_unknown_fields=True):
    name: str = "edgeside_id"
    id_type: str = "cookie"


class GeoHeaders(msgspec.Struct, forbid_unknown_fields=True):
    """Which proxy/CDN headers carry the visitor's location; the first one present wins."""

    country: list[str] = msgspec.field(
        default_factory=lambda: [
            "cf-ipcountry",
            "cloudfront-viewer-country",
            "fastly-geo-country",
            "x-country-code",
            "x-geo-country",
        ]
    )
    region: list[str] = msgspec.field(
        default_factory=lambda: [
            "cf-region-code",
            "cloudfront-viewer-country-region",
            "x-geo-region",
        ]
    )
    city: list[str] = msgspec.field(
        default_factory=lambda: ["cf-ipcity", "cloudfront-viewer-city", "x-geo-city"]
    )
    timezone: list[str] = msgspec.field(
        default_factory=lambda: ["cf-timezone", "cloudfront-viewer-time-zone", "x-timezone"]
    )
    weather: list[str] = msgspec.field(default_factory=lambda: ["x-weather"])


class ConsentSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Consent to personalise: a signal in the request wins; otherwise a per-country default."""

    header: str = "x-consent"
    default: bool = True
    # Countries where personalisation needs an explicit opt-in (no signal = no consent).
    opt_in_countries: list[str] = msgspec.field(default_factory=list)


class Limits(msgspec.Struct, forbid_unknown_fields=True):
    max_body_bytes: int = 64 * 1024
    max_placements: int = 64
    max_header_bytes: int = 8 * 1024
    max_id_chars: int = 256


class LiveSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The node-local live store and `POST /v1/events` (docs/live.md)."""

    enabled: bool = True
    # Under the data directory unless absolute.
    dir: str = "live"
    # The LMDB map: the store's hard ceiling in bytes (its byte budget is shares of it, below).
    map_size_mb: int = 256
    # The byte budget, in percent of the map (docs/live.md "Byte budget"): ordinary events are
    # written while the store stays under `budget_high_pct`; above it the oldest visitors are
    # evicted down to `budget_low_pct`. Withdrawals of consent may fill up to
    # `budget_withdrawal_pct`; the rest is left for the deletes of eviction itself.
    budget_high_pct: float = 80.0
    budget_low_pct: float = 65.0
    budget_withdrawal_pct: float = 95.0
    # Visitors read per eviction round (one short write transaction).
    evict_sample: int = 2048
    # How long `POST /v1/events` waits for its withdrawals of consent to be written, so the
    # answer can say whether they were (`not_stored`); they are written first, at once.
    consent_wait_s: float = 2.0
    ttl_s: float = 7 * 24 * 3600.0
    max_list: int = 50
    max_categories: int = 50
    half_life_s: float = 24 * 3600.0
    max_visitors: int = 1_000_000
    max_events: int = 500
    max_body_bytes: int = 512 * 1024
    # Accepted timestamps: at most this far ahead of / behind the server's clock.
    max_future_s: float = 300.0
    max_past_s: float = 24 * 3600.0
    # Per visitor and worker: at most this many events per flood window.
    flood_events: int = 200
    flood_window_s: float = 10.0
    # Slots of the shared stamp table (a power of two, 4 bytes each): visitors sharing a slot
    # only make each other's memoised answers be decided again, so more slots, fewer of those.
    stamp_slots: int = 1 << 20
    queue_max: int = 50_000
    flush_interval_s: float = 0.05
    sweep_interval_s: float = 60.0
    # Bandits: weights are recomputed once per window; each arm keeps at least this share.
    bandit_window_s: float = 300.0
    bandit_min_share: float = 0.05
    # Webhook triggers: at most once per visitor and action per window.
    trigger_window_s: float = 3600.0
    # Hosts webhooks may call ("*" for any). Empty: triggers are off — an operator, not a rules
    # author, decides where the node sends requests (no SSRF through a rules file).
    webhook_hosts: list[str] = msgspec.field(default_factory=list)
    trigger_queue_max: int = 1000
    trigger_retries: int = 3
    trigger_timeout_s: float = 2.0


class DecisionLogSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Where decisions and events are logged: NDJSON files under `dir`, or POSTed to `url`.

    On by default, under the data directory (`DATA/logs`), so `edgeside report`, `rules impact`
    and the console's analytics have data from the first request; `dir: ""` turns it off.
    """

    dir: str = "logs"
    url: str = ""
    sample_rate: float = 1.0
    # The files of the log directory together are kept under this size: the oldest go first.
    max_total_bytes: int = 1 << 30
    max_buffer: int = 100_000
    # Lines per POST to a sink (`url`); a file is written all that is buffered at once.
    batch: int = 1000
    flush_interval_s: float = 0.5
    rotate_bytes: int = 64 * 1024 * 1024
    rotate_s: float = 3600.0
    retries: int = 3
    timeout_s: float = 2.0


class FleetSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Many nodes as one (docs/fleet.md): NATS JetStream for live activity, snapshot
    announcements and heartbeats; object storage for snapshots. Empty `broker`: the node works
    alone, exactly as without this section."""

    broker: str = ""  # nats://host:4222[,nats://…]
    # This node's name in the fleet: the same after a restart (its live-stream position and its
    # heartbeat are kept under it). Empty: the host name and port.
    node: str = ""
    subject: str = "edgeside"  # subjects edgeside.live.<node>, edgeside.snapshots, …
    stream: str = "EDGESIDE_LIVE"
    stream_max_age_s: float = 24 * 3600.0
    stream_max_bytes: int = 1 << 30
    # A broker message over this many bytes is dropped (and counted) before it is decoded.
    max_message_bytes: int = 256 * 1024
    # Events buffered in memory while the broker is down (each worker); the oldest go first.
    outbox_max: int = 100_000
    connect_timeout_s: float = 2.0
    heartbeat_s: float = 2.0
    stale_after_s: float = 10.0
    # Snapshots: s3://bucket/prefix the node follows (announcements, and the pointer polled with
    # ETag as a safety net); endpoint for S3-compatible servers other than AWS.
    snapshots_from: str = ""
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    poll_interval_s: float = 30.0
    announce_jitter_s: float = 0.25


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data: str = ""
    config: str = ""
    log_level: str = "warning"
    access_log: bool = False
    # A decision that overruns this budget falls back to defaults for the remaining placements.
    time_budget_ms: float = 20.0
    # How often a worker looks for a newly activated snapshot version (SPEC §7: ≤ 1 s staleness).
    reload_interval_s: float = 0.25
    default_site: str = "default"
    # Host header -> site, for proxies that do not send X-Site.
    site_hosts: dict[str, str] = msgspec.field(default_factory=dict)
    # Which request headers carry the page's URI on /v1/edge (the first present wins): the rules'
    # `pages:` choose the placements from it. A value that is not a path, or longer than 2 048
    # bytes, names no page (`bad_uri`, counted).
    uri_headers: list[str] = msgspec.field(
        default_factory=lambda: ["X-Original-URI", "X-Forwarded-URI"]
    )
    cookie: CookieSettings = msgspec.field(default_factory=CookieSettings)
    geo_headers: GeoHeaders = msgspec.field(default_factory=GeoHeaders)
    consent: ConsentSettings = msgspec.field(default_factory=ConsentSettings)
    limits: Limits = msgspec.field(default_factory=Limits)
    cors_origins: list[str] = msgspec.field(default_factory=list)
    fragment_max_age_s: int = 60
    # Reuse a remembered answer for at most this long (0 disables the memos). An answer is exact
    # until its decision's own `expires` (the next hour boundary for an hour-of-day rule, the next
    # validity edge of a candidate item, …); this only caps it. See server/memo.py.
    memo_ttl_s: float = 60.0
    memo_max_entries: int = 50_000
    # And at most this many bytes per memo (keys and what each answer owns; server/memo.py).
    memo_max_bytes: int = 64 << 20
    # Answer a repeat of a remembered GET request in the HTTP protocol, before any ASGI request
    # is made (server/edge/protocol.py); false serves with uvicorn's own httptools protocol.
    protocol_memo: bool = True
    # With the protocol above: reads arriving after one event-loop iteration has spent this many
    # ms answering wait for the next iteration (server/edge/tick.py), so the loop's timers,
    # accepts and scrapes wait at most about this long; 0 (the default) for no bound. It trades
    # p99 at saturation for those: see docs/server.md, "the batch itself".
    tick_budget_ms: float = 0.0
    # Measure event-loop stalls every this many ms (server/loop_probe.py), 0 for off: the
    # longest since the previous scrape is `edgeside_loop_stall_max_seconds`.
    loop_probe_ms: float = 0.0
    # Honour `X-Visitor-Id` on /v1/edge from any caller: set only when the proxy in front strips
    # it from browsers and sets it itself. Otherwise it needs a token with the `decide` scope.
    trust_visitor_header: bool = False
    # Snapshot lifecycle (docs/snapshots.md § Lifecycle).
    keep_versions: int = 3  # versions kept per kind besides the active one, for rollback
    max_upload_bytes: int = 8 << 30  # a pushed or pulled .tar larger than this is refused (413)
    # A push holds its kind's lock while the body arrives: a stalled client must not hold it.
    upload_timeout_s: float = 900.0
    pull: list[str] = msgspec.field(default_factory=list)  # "KIND=URL" items
    pull_interval_s: float = 30.0
    pull_timeout_s: float = 30.0  # per socket operation; a whole download gets 10x this
    live: LiveSettings = msgspec.field(default_factory=LiveSettings)
    decision_log: DecisionLogSettings = msgspec.field(default_factory=DecisionLogSettings)
    fleet: FleetSettings = msgspec.field(default_factory=FleetSettings)


class Secrets(msgspec.Struct, frozen=True):
    """Read only from the environment (SPEC §7): never from a file, the CLI, or a log line."""

    admin_token: str = ""
    signing_key: str = ""

    def __repr__(self) -> str:
        return "Secrets(<redacted>)"


def load_secrets(environ: dict[str, str] | None = None) -> Secrets:
    env = os.environ if environ is None else environ
    return Secrets(
        admin_token=env.get(ADMIN_TOKEN_ENV, ""),
        signing_key=env.get("EDGESIDE_SIGNING_KEY", ""),
    )


class ConfigError(Exception):
    """A config file or option that cannot be used; the message says which and why."""


# Every setting is also an environment variable (README "Running it"), found by walking the
# settings type so a new field cannot be forgotten (tests/server/test_config.py walks it too):
#   a top-level field        EDGESIDE_<NAME>             EDGESIDE_PROTOCOL_MEMO=false
#   a field of a section     EDGESIDE_<SECTION>__<NAME>  EDGESIDE_LIVE__MAP_SIZE_MB=512
#   a list                   comma-separated             EDGESIDE_CORS_ORIGINS=https://a,https://b
#   a mapping                JSON                        EDGESIDE_SITE_HOSTS={"shop.fr":"shop-fr"}
# `EDGESIDE_PULL` keeps its spaces-or-commas form. Booleans: true/false/1/0.
ENV_PREFIX = "EDGESIDE_"


def env_names(
    struct: type[msgspec.Struct] | None = None, prefix: str = ENV_PREFIX
) -> dict[str, tuple[str, ...]]:
    """Every setting's environment variable -> its path in the settings (`("live", "ttl_s")`)."""
    out: dict[str, tuple[str, ...]] = {}
    for f in msgspec.structs.fields(struct or Settings):
        name = prefix + f.name.upper()
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            for env, path in env_names(f.type, name + "__").items():
                out[env] = (f.name, *path)
        else:
            out[name] = (f.name,)
    return out


def _env_value(path: tuple[str, ...], raw: str) -> object:
    """An environment string as the setting's type expects it (converted by msgspec, lax)."""
    field = _field_type(path)
    origin = getattr(field, "__origin__", None)
    if origin is list or field is list:
        return [item.strip() for item in raw.replace(" ", ",").split(",") if item.strip()]
    if origin is dict or field is dict:
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{_env_of(path)}: expected a JSON object: {exc}") from None
    return raw


def _field_type(path: tuple[str, ...]) -> object:
    struct: object = Settings
    for name in path:  # a path from env_names: every step but the last is a Struct
        fields = msgspec.structs.fields(cast(type[msgspec.Struct], struct))
        struct = next(f.type for f in fields if f.name == name)
    return struct


def _env_of(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


def _deep_merge(base: dict[str, object], over: dict[str, object]) -> None:
    for key, value in over.items():
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _deep_merge(current, value)
        else:
            base[key] = value


def _decode_file(path: Path) -> dict[str, object]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        decode = msgspec.json.decode if path.suffix == ".json" else msgspec.yaml.decode
        data = decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def load_settings(
    cli: dict[str, object] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Resolve settings: defaults < config file < environment < command line."""
    env = os.environ if environ is None else environ
    merged: dict[str, object] = {}
    overrides: dict[str, object] = {}
    env_settings: dict[str, object] = {}
    for name, path in env_names().items():
        value = env.get(name)
        if not value:
            continue
        if path == ("pull",):
            parsed: object = value.replace(",", " ").split()
        else:
            parsed = _env_value(path, value)
        try:  # lax: "false", "512" become the boolean and number the field declares
            parsed = msgspec.convert(parsed, _field_type(path), strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{name}={value!r}: {exc}") from None
        node = env_settings
        for key in path[:-1]:
            node = node.setdefault(key, {})  # type: ignore[assignment]
        node[path[-1]] = parsed
    overrides.update(env_settings)
    overrides.update({name: value for name, value in (cli or {}).items() if value is not None})
    config_path = overrides.get("config") or ""
    if config_path:
        merged.update(_decode_file(Path(str(config_path))))
    _deep_merge(merged, overrides)
    # The fleet's own spelling (EDGESIDE_FLEET_<NAME>, docs/fleet.md) beside the generic one.
    _fleet_env(env, merged)
    try:
        settings = msgspec.convert(merged, Settings, str_keys=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{config_path or 'settings'}: {exc}") from None
    if settings.workers < 1:
        raise ConfigError("workers must be at least 1")
    if settings.keep_versions < 1:
        raise ConfigError("keep_versions must be at least 1 (the rollback target)")
    slots = settings.live.stamp_slots
    if not 1 <= slots <= 1 << 30 or slots & (slots - 1):
        raise ConfigError(f"live.stamp_slots {slots}: a power of two up to 2**30, e.g. 1048576")
    live = settings.live
    if not 0 < live.budget_low_pct < live.budget_high_pct < live.budget_withdrawal_pct < 100:
        raise ConfigError(
            "live.budget_*_pct: need 0 < budget_low_pct < budget_high_pct < "
            f"budget_withdrawal_pct < 100, got {live.budget_low_pct:g}, "
            f"{live.budget_high_pct:g}, {live.budget_withdrawal_pct:g}"
        )
    if live.map_size_mb < 1 or live.evict_sample < 2:
        raise ConfigError("live.map_size_mb must be at least 1 and live.evict_sample at least 2")
    return settings


# The fleet's connection settings as EDGESIDE_FLEET_<NAME> (a node's address book lives in its
# environment, like its secrets' names); they override the config file's `fleet:` section.
FLEET_ENV = ("broker", "node", "snapshots_from", "s3_endpoint")


def _fleet_env(env: Mapping[str, str], merged: dict[str, object]) -> None:
    found = {
        n: env[f"EDGESIDE_FLEET_{n.upper()}"]
        for n in FLEET_ENV
        if env.get(f"EDGESIDE_FLEET_{n.upper()}")
    }
    if found:
        section = merged.get("fleet")
        merged["fleet"] = {**(section if isinstance(section, dict) else {}), **found}


def settings_to_env(settings: Settings) -> str:
    """Serialise resolved settings for worker processes (secrets are not part of them)."""
    return msgspec.json.encode(settings).decode()


def settings_from_env(environ: dict[str, str] | None = None) -> Settings:
    """The settings a worker process was started with, or a fresh resolution when run directly."""
    env = os.environ if environ is None else environ
    blob = env.get(SETTINGS_ENV)
    if not blob:
        return load_settings(environ=dict(env))
    return msgspec.json.decode(blob, type=Settings)
