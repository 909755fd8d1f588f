"""The security review as tests (SECURITY.md explains the threat model they check):

- every route that is not on the public list refuses a request without the admin token, with a
  wrong one, with a malformed `Authorization`, and on a node with no token configured at all;
- logs never hold the admin token, the signing key, or the identifiers of a visitor who did not
  consent, even at debug level with the access log on;
- decision headers echo nothing a request could use to inject a header or split a response;
- the product's source holds no pickle/marshal/eval/exec/`__import__`/shell, and each remaining
  `compile()`/`subprocess` is on a reviewed list.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.routing import Route

from bench.procs import edgeside
from server.app import build_app
from server.config import Secrets, Settings
from server.offline.demo import ensure_demo
from tests.provekit import ADMIN_TOKEN, prove_copy, prove_data

__all__ = ["prove_copy", "prove_data"]

ROOT = Path(__file__).resolve().parents[2]
SIGNING_KEY = "prove-signing-key-9d41c7"
# Routes anyone may call (SPEC §6). Everything else must demand the token.
PUBLIC = {
    "/v1/edge",
    "/v1/decide",
    "/v1/fragments/{placement}",
    "/v1/events",
    # OFREP: without credentials the targeting key is only ever a cookie value, as on /v1/edge
    # (tests/server/ofrep/test_ofrep.py holds the trust rules and the 401 for a bad token).
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/{key:path}",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    # The console's page, its static files and its sign-in; its API demands a session or the
    # token (tests/server/console/test_api.py checks sessions, CSRF and cross-site refusals).
    "/console",
    "/console/",
    "/console/static/{name}",
    "/console/api/session",
}
PARAMS = {"kind": "rules", "version": "v1", "id": "c-alice", "placement": "home_hero"}


def app_routes(data: Path) -> list[tuple[str, str]]:
    """(method, path) of every route the application serves, read from the app itself."""
    app = build_app(Settings(data=str(data)), Secrets())
    return [
        (method, route.path)
        for route in app.starlette.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        for method in sorted(route.methods or {"GET"})
        if method not in ("HEAD", "OPTIONS")
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PARAMS.get(m.group(1), "x"), path)


BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    {"Authorization": f"Basic {ADMIN_TOKEN}"},
    {"Authorization": f"Token {ADMIN_TOKEN}"},
    {"Authorization": ADMIN_TOKEN},
    {"X-Admin-Token": ADMIN_TOKEN},
    {"Cookie": f"token={ADMIN_TOKEN}"},
]


def test_every_non_public_route_needs_the_token(prove_copy: Path, tmp_path: Path) -> None:
    routes = app_routes(prove_copy)
    guarded = [(m, p) for m, p in routes if p not in PUBLIC]
    assert any(p.startswith("/v1/profiles") for _, p in guarded), routes
    assert any(p.startswith("/v1/admin") for _, p in guarded), routes
    env = {"EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN}
    with (
        edgeside(prove_copy, workers=1, env=env, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for method, path in guarded:
            url = concrete(path)
            for headers in BAD_AUTH:
                r = client.request(method, url, headers=headers, content=b"x")
                assert r.status_code == 401, (method, url, headers, r.status_code)
                assert r.json()["error"]["code"] == "unauthorized"
            ok = client.request(
                method, url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, content=b"x"
            )
            assert ok.status_code != 401, (method, url)
        # explain=1 reveals every condition's value: the token again.
        body = {"visitor": {"ids": {"cookie": "c-alice"}}, "placements": ["home_hero"]}
        for headers in BAD_AUTH:
            r = client.post("/v1/decide?explain=1", json=body, headers=headers)
            assert r.status_code == 401, headers
    print(f"token checks: {len(guarded)} guarded routes x {len(BAD_AUTH)} bad credentials")


def test_a_node_without_a_token_opens_nothing(prove_copy: Path, tmp_path: Path) -> None:
    guarded = [(m, p) for m, p in app_routes(prove_copy) if p not in PUBLIC]
    with (
        edgeside(prove_copy, workers=1, log_dir=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for method, path in guarded:
            for headers in ({"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
                r = client.request(method, concrete(path), headers=headers, content=b"x")
                assert r.status_code == 401, (method, path, headers)


def test_logs_hold_no_secrets_and_no_unconsented_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed = tmp_path / "signed-data"
    # The node below accepts only signed snapshots. ensure_demo signs the rules with its argument
    # but profiles and content through the builder CLI, which reads the key from the environment.
    monkeypatch.setenv("EDGESIDE_SIGNING_KEY", SIGNING_KEY)
    ensure_demo(signed, SIGNING_KEY.encode())
    monkeypatch.delenv("EDGESIDE_SIGNING_KEY")
    secret_cookie = "nc-visitor-7f3a9e"
    secret_email = "nc-email-sha-4b2d"
    env = {
        "EDGESIDE_ADMIN_TOKEN": ADMIN_TOKEN,
        "EDGESIDE_SIGNING_KEY": SIGNING_KEY,
        "EDGESIDE_LOG_LEVEL": "debug",
    }
    config = tmp_path / "edgeside.yaml"
    decision_log = tmp_path / "decision-log"
    config.write_text(
        f"access_log: true\ndecision_log:\n  dir: {decision_log}\n  flush_interval_s: 0.1\n"
    )
    with edgeside(signed, workers=1, env=env, args=["--config", str(config)]) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            no = {"Cookie": f"edgeside_id={secret_cookie}", "X-Consent": "0"}
            for _ in range(3):
                client.get("/v1/edge?p=home_hero&site=shop-fr", headers=no)
                client.get("/v1/fragments/home_hero?site=shop-fr", headers=no)
                client.post(
                    "/v1/decide",
                    json={
                        "visitor": {"id": secret_cookie, "ids": {"email_sha256": secret_email}},
                        "context": {"consent": False},
                        "placements": ["home_hero"],
                    },
                )
                client.post(
                    "/v1/decide?explain=1",
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    json={
                        "visitor": {"ids": {"cookie": secret_cookie}},
                        "context": {"consent": False},
                        "placements": ["home_hero"],
                    },
                )
                event = {"type": "view", "visitor": {"ids": {"cookie": secret_cookie}},
                         "content_id": "ban-fr-running"}  # fmt: skip
                client.post("/v1/events", json=event, headers=no)
                client.post("/v1/events", json={"events": [event]}, headers=no)
                # Admin calls with the token, right and wrong, and a refused push.
                client.get("/v1/admin/snapshots", headers=auth)
                client.get("/v1/admin/snapshots", headers={"Authorization": "Bearer nope"})
                client.put(
                    "/v1/admin/snapshots/rules",
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    content=b"not a tar",
                )
                client.get(
                    f"/v1/profiles/cookie:{secret_cookie}",
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                )
        time.sleep(0.5)  # past the decision log's flush interval
        log = server.output()
    logged = [p.read_text() for p in sorted(decision_log.rglob("*")) if p.is_file()]
    assert logged and any('"kind":"decision"' in text for text in logged), logged
    log += "\n".join(logged)
    assert "GET /v1/edge" in log, "the access log was not on: this test would prove nothing"
    assert ADMIN_TOKEN not in log
    assert SIGNING_KEY not in log
    # The profile lookup by an operator is the one place that id may appear (in the URL).
    leaks = [
        line
        for line in log.splitlines()
        if (secret_cookie in line or secret_email in line) and "/v1/profiles/" not in line
    ]
    assert not leaks, leaks[:5]


SAFE_VALUE = re.compile(rb"^[A-Za-z0-9_.:;=,/+ ()-]*$")
HOSTILE = [
    b"Cookie: edgeside_id=a\xff\xfeb;\"'<script>",
    b'X-Visitor-Id: x:"evil";\x01\x7f',
    b'X-Placements: home_hero,"quoted";x=y',
    b"X-Original-URI: /a b\x00c?d=e%0d%0aSet-Cookie:x=1",
    b"CF-IPCountry: FR\x0bX-Evil: 1",
    b'Accept-Language: fr"\r\n',
    b"X-Timezone: ../../etc/passwd",
    b"X-Site: shop-fr\x85\xa0",
]


def raw_edge(url: str, query: bytes, extra: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    parts = urlsplit(url)
    request = b"GET /v1/edge?" + query + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.sendall(request)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    head = got.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    status = int(head[0].split()[1]) if head and head[0].startswith(b"HTTP/") else 0
    headers = [tuple(h.split(b": ", 1)) for h in head[1:] if b": " in h]
    return status, headers  # type: ignore[return-value]


@pytest.mark.parametrize("extra", HOSTILE)
def test_decision_headers_cannot_be_injected(
    prove_data: Path, tmp_path: Path, extra: bytes
) -> None:
    queries = [b"p=home_hero&site=shop-fr", b"p=home_hero%0d%0aX-Evil:%201&site=a%0d%0ab"]
    with edgeside(prove_data, workers=1, log_dir=tmp_path) as server:
        for query in queries:
            status, headers = raw_edge(server.url, query, extra)
            assert status in (204, 400), (status, headers)
            names = {name.lower() for name, _ in headers}
            assert b"x-evil" not in names and b"set-cookie" not in names, headers
            for name, value in headers:
                if name.lower().startswith(b"x-edge-"):
                    assert SAFE_VALUE.match(value), (name, value)


# -- the source tree ------------------------------------------------------------------------------

DANGEROUS = re.compile(
    r"\bpickle\b|\bmarshal\b|\bshelve\b|\beval\(|\bexec\(|__import__|\bsubprocess\b|os\.system"
    r"|os\.popen|shell=True|yaml\.load\(|yaml\.unsafe_load|\bcompile\(|importlib"
)
# Each remaining hit, with why it is safe (SECURITY.md repeats these).
REVIEWED = {
    ("rules/compiler.py", "compile("): "compiles a Python AST the compiler builds from checked "
    "rules nodes; user text is never source (names are chosen, literals are ast.Constant)",
    ("rules/checker.py", "compile("): "re.compile of a rules-file pattern, to report it if invalid",
    ("rules/checker.py", "importlib"): "imports the stdlib's re._parser to audit patterns",
    ("server/version.py", "importlib"): "importlib.metadata: the installed package's version",
    ("server/console/routes.py", "importlib"): "importlib.resources: the console's own static "
    "files, by a fixed allow-list of names",
    ("rules/compiler.py", "re.compile("): "compiles a checked rules-file pattern once per load",
    ("snapshots/merge.py", "exec(compile("): "FlatMerger compiles one merge function per "
    "profiles config from fixed templates: groups come from MERGE_GROUPS, policies are the "
    "config's checked Literal, and every config string (field keys, policies) is bound as a "
    "constant, never source (tests/snapshots/test_merge_fast.py: a hostile key stays data)",
    ("snapshots/scan.py", "subprocess"): "runs `python -m snapshots.scan PATH` (this interpreter, "
    "a fixed module, the staged snapshot's path as one argument, no shell) so LMDB damage that "
    "crashes a reader crashes that child",
}


def test_no_pickle_eval_exec_or_shell_in_the_product() -> None:
    hits: list[tuple[str, int, str]] = []
    for folder in ("server", "rules", "snapshots"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if code.strip().startswith(('"', "'")):
                    continue  # prose in a docstring
                hits.extend((rel, number, m.group(0)) for m in DANGEROUS.finditer(code))
    for hit in hits:
        print("source review:", *hit)
    unexplained = [
        (rel, n, what)
        for rel, n, what in hits
        if not any(rel == f and what in w for f, w in REVIEWED)
        and not (what == "compile(" and "re.compile(" in _line(rel, n))
    ]
    assert not unexplained, unexplained


def _line(rel: str, number: int) -> str:
    return (ROOT / rel).read_text().splitlines()[number - 1]


def test_pull_urls_are_logged_without_credentials(prove_copy: Path, tmp_path: Path) -> None:
    """Regression: pull URLs were logged whole, so a presigned object-storage URL's signature or
    a `user:password@` went to the log of every poll."""
    from bench.procs import free_port

    port = free_port()
    url = f"http://puller:pw-secret-31@127.0.0.1:{port}/snap.tar?X-Amz-Signature=sig-secret-77"
    env = {
        "EDGESIDE_PULL": f"rules={url}",
        "EDGESIDE_PULL_INTERVAL_S": "0.2",
        "EDGESIDE_LOG_LEVEL": "debug",
    }
    with edgeside(prove_copy, workers=1, env=env, log_dir=tmp_path) as server:
        deadline = time.monotonic() + 10
        while "failed" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = server.output()
    assert "pull rules from" in log and "failed" in log, log[-2000:]
    assert "127.0.0.1" in log  # the URL is still recognisable
    assert "pw-secret-31" not in log and "sig-secret-77" not in log, log[-2000:]
