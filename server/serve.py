"""`edgeside serve`: resolve settings, make sure there is data, start the HTTP server."""

from __future__ import annotations

import argparse
import os
import secrets as secrets_module
import sys

from . import auth
from .config import (
    ADMIN_TOKEN_ENV,
    MASTER_PID_ENV,
    SETTINGS_ENV,
    ConfigError,
    load_secrets,
    load_settings,
    settings_to_env,
)
from .decision_log import DecisionLog
from .offline.demo import DEFAULT_DEMO_DATA, ensure_demo

# Every command on one line: a backslash-newline inside single quotes reaches curl as part of the
# JSON body (tests/server/console/test_quickstart.py runs each printed line against a real server).
CURL_EXAMPLES = """\
edgeside is serving {url}  (data: {data})
Console: {url}/console  (sign in with the admin token{token_note})
Decision log: {logs}  (edgeside report --logs {logs})
Try — a known gold visitor, an anonymous one, and the same visitor without consent:
  curl -si '{url}/v1/edge?p=home_hero,home_recs&site=shop-fr' -H 'Cookie: edgeside_id=c-alice'
  curl -si '{url}/v1/edge?p=home_hero,home_recs&site=shop-fr' -H 'Cookie: edgeside_id=nobody'
  curl -si '{url}/v1/edge?p=home_hero,home_recs&site=shop-fr' -H 'Cookie: edgeside_id=c-alice' -H 'X-Consent: 0'
  curl -s '{url}/v1/decide' -H 'content-type: application/json' -d '{{"visitor":{{"ids":{{"cookie":"c-chloe"}}}},"context":{{"site":"shop-uk"}},"placements":["home_recs"],"render":true}}'
  curl -s '{url}/v1/decide?explain=1' -H {auth} -H 'content-type: application/json' -d '{{"visitor":{{"ids":{{"cookie":"c-alice"}}}},"context":{{"site":"shop-fr"}},"placements":["home_hero"]}}'
  curl -s '{url}/v1/fragments/home_hero?site=shop-de' -H 'Cookie: edgeside_id=c-bruno'
  curl -s '{url}/readyz' ; curl -s '{url}/metrics' | head
"""  # noqa: E501 - each command is one copyable line


def banner(url: str, data: str, logs: str, token: str | None) -> str:
    """What `edgeside serve` prints. `token` is one generated for this run (shown, since nobody
    else knows it), or None when EDGESIDE_ADMIN_TOKEN was set (never printed: it is a secret)."""
    if token is not None:
        note, auth = f": {token} — generated for this run", f"'Authorization: Bearer {token}'"
    else:
        note, auth = " from EDGESIDE_ADMIN_TOKEN", '"Authorization: Bearer $EDGESIDE_ADMIN_TOKEN"'
    return CURL_EXAMPLES.format(url=url, data=data, logs=logs, token_note=note, auth=auth)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve the decision API and the console",
        description="Every option is also EDGESIDE_<NAME>. Secrets come only from the "
        "environment: EDGESIDE_ADMIN_TOKEN (admin routes, explain, /console; one is generated "
        "for the run when unset) and EDGESIDE_SIGNING_KEY (snapshot signatures).",
    )
    serve.add_argument("--host", help="bind address (EDGESIDE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (EDGESIDE_PORT, default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (EDGESIDE_WORKERS, default 1)")
    serve.add_argument("--data", help="data directory with the snapshot store (EDGESIDE_DATA)")
    serve.add_argument("--config", help="YAML/JSON settings file (EDGESIDE_CONFIG)")
    serve.add_argument(
        "--log-level",
        dest="log_level",
        help="debug, info, warning, error (EDGESIDE_LOG_LEVEL, default warning)",
    )
    serve.add_argument(
        "--pull",
        action="append",
        metavar="KIND=URL",
        help="poll URL for KIND snapshots (repeatable; EDGESIDE_PULL, space separated)",
    )
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    cli = {k: getattr(args, k) for k in ("host", "port", "workers", "data", "config")}
    cli["log_level"] = args.log_level
    cli["pull"] = args.pull
    try:
        settings = load_settings(cli)
    except ConfigError as exc:
        print(f"edgeside: error: {exc}", file=sys.stderr)
        return 2
    secrets = load_secrets()
    if not settings.data:
        settings.data = str(DEFAULT_DEMO_DATA)
        key = secrets.signing_key.encode() if secrets.signing_key else None
        ensure_demo(DEFAULT_DEMO_DATA, key)
    if not secrets.signing_key:
        print("edgeside: no EDGESIDE_SIGNING_KEY; unsigned snapshots are accepted", file=sys.stderr)
    generated = None
    if not secrets.admin_token:
        # Explain and the console need a token: make one for this run (workers inherit it from
        # the environment), so the quick start works without any set-up.
        generated = os.environ[ADMIN_TOKEN_ENV] = secrets_module.token_urlsafe(24)
    # One console secret for all workers (server/console/auth.py): a session signed by one worker
    # is valid on every other; a random one per run unless the operator sets it.
    os.environ.setdefault("EDGESIDE_CONSOLE_SECRET", secrets_module.token_hex(32))
    try:  # malformed EDGESIDE_TOKENS_*: refuse here, not in every worker
        auth.Credentials.from_environ()
    except auth.ConfigError as exc:
        print(f"edgeside: {exc}", file=sys.stderr)
        return 2
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    # Workers arm a parent-death signal against this pid (server/app.py `die_with_master`).
    os.environ[MASTER_PID_ENV] = str(os.getpid())
    url = f"http://{settings.host}:{settings.port}"
    logs = DecisionLog(settings.decision_log, settings.data).where
    print(banner(url, settings.data, logs, generated), flush=True)
    import uvicorn

    from .edge.linger import LingeringProtocol
    from .edge.protocol import MemoProtocol

    uvicorn.run(
        "server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=MemoProtocol if settings.protocol_memo else LingeringProtocol,
        lifespan="on",
        log_level=settings.log_level,
        access_log=settings.access_log,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return 0
