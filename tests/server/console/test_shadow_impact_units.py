"""Shadow and impact without a server: a raising candidate is counted and changes nothing; no
shadow means no hook; the log window is bounded and read newest first; the replay's progress and
its stream (stopped when the reader goes away); the session cookie."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import rules
from server.auth import Credentials, digest
from server.console import auth, impact, impact_stream, shadow
from server.metrics import Counter

from .conftest import DEMO_RULES


class _Raising:
    def decide(self, **_: Any) -> rules.Decision:
        raise RuntimeError("candidate bug")


class _World:
    content = None


def _engine(text: str = DEMO_RULES) -> rules.Engine:
    ruleset, diags = rules.load(text)
    assert ruleset is not None, diags
    return rules.compile_ruleset(ruleset)


def test_a_raising_candidate_is_counted_and_the_served_decision_is_untouched() -> None:
    engine = _engine()
    ctx = rules.Context(site="shop-fr", now=1_780_000_000.0)
    served = engine.decide(visitor_id=None, profile=None, ctx=ctx, placements=["home_hero"])
    before = rules.Decision(**{f: getattr(served, f) for f in served.__struct_fields__})
    metric = Counter("m", "m", ("placement", "result"))
    spec = shadow.ShadowSpec("id1", DEMO_RULES, 1.0, 0.0)
    run = shadow.ShadowRun(spec, _Raising(), metric)  # type: ignore[arg-type]
    for _ in range(3):
        run(_World(), served, None, None, ctx, ["home_hero"], None)
    assert run.counts.sampled == 3 and run.counts.errors == 3
    assert metric.values[("*", "error")] == 3
    assert served == before


def test_agreement_and_diff_per_placement() -> None:
    live = _engine()
    candidate = _engine(DEMO_RULES.replace("variant: night_sale", "variant: night_v2"))
    metric = Counter("m", "m", ("placement", "result"))
    run = shadow.ShadowRun(shadow.ShadowSpec("id2", "", 1.0, 0.0), candidate, metric)
    for hour in (12, 23):
        ctx = rules.Context(site="shop-fr", hour=hour, now=1_780_000_000.0)
        served = live.decide(visitor_id=None, profile=None, ctx=ctx, placements=["home_hero"])
        run(_World(), served, None, None, ctx, ["home_hero"], None)
    counts = run.counts.placements["home_hero"]
    assert (counts.agree, counts.differ) == (1, 1)
    assert counts.diff == {"night_sale → night_v2": 1}


def test_the_follower_installs_and_removes_the_hook(tmp_path: Path) -> None:
    class Service:
        shadow: object = None

    service = Service()
    follower = shadow.Follower(str(tmp_path), service, Counter("m", "m", ("p", "r")))
    follower.poll()
    assert service.shadow is None, "no shadow: no hook, nothing on the hot path"
    shadow.write_spec(str(tmp_path), shadow.ShadowSpec("s1", DEMO_RULES, 0.5, 1.0))
    follower.poll()
    assert isinstance(service.shadow, shadow.ShadowRun)
    shadow.clear_spec(str(tmp_path))
    follower.poll()
    assert service.shadow is None


def _write_log(path: Path, start: float, n: int) -> None:
    lines = []
    for i in range(n):
        lines.append(
            {
                "t": start + i,
                "kind": "decision",
                "visitor": None,
                "site": "shop-fr",
                "country": "FR",
                "hour": 12,
                "placements": [{"placement": "home_hero", "variant": "default"}],
                "ctx": {"consent": True, "path": f"/p{i % 3}"},
            }
        )
        lines.append({"t": start + i, "kind": "event", "type": "click"})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")


def test_the_window_is_the_last_n_decisions_oldest_first(tmp_path: Path) -> None:
    import os

    _write_log(tmp_path / "decisions-a.ndjson", 1000.0, 50)
    _write_log(tmp_path / "decisions-b.ndjson", 2000.0, 50)
    os.utime(tmp_path / "decisions-a.ndjson", (1, 1))
    window = impact.last_decisions(tmp_path, 60)
    times = [r["t"] for r in window.records]
    assert times == sorted(times) and len(times) == 60
    assert times[-1] == 2049.0 and times[0] == 1040.0
    only_new = impact.last_decisions(tmp_path, 10)
    assert only_new.files == 1, "enough in the newest file: the older one is not read"
    assert impact.last_decisions(tmp_path, 10**9).records[0]["t"] == 1000.0


def test_replay_counts_decisions_changes_and_cache_copies(tmp_path: Path) -> None:
    _write_log(tmp_path / "decisions-a.ndjson", 1_780_000_000.0, 30)
    window = impact.last_decisions(tmp_path, 100)
    same = impact.replay(window, _engine(), _engine())
    assert (same.decisions, same.changed) == (30, 0)
    assert same.cache_cardinality.before == same.cache_cardinality.after == 3  # three pages
    renamed = _engine(DEMO_RULES.replace("variant: default\n", "variant: fresh\n", 1))
    changed = impact.replay(window, _engine(), renamed)
    assert changed.changed == 30
    assert changed.by_placement["home_hero"].transitions[0].from_variant == "default"
    assert changed.by_placement["home_hero"].transitions[0].to_variant == "fresh"
    assert changed.by_site["shop-fr"].changed == 30


def test_sessions_expire_and_resist_tampering() -> None:
    creds = Credentials.from_environ({"EDGESIDE_ADMIN_TOKEN": "tok"})
    sessions = auth.Sessions(b"secret", ttl_s=60, credentials=lambda: creds)
    cookie = sessions.issue("tok", now=1000.0)
    assert cookie is not None
    assert sessions.valid(cookie, now=1030.0)
    assert not sessions.valid(cookie, now=1061.0)
    assert not auth.Sessions(b"other", ttl_s=60, credentials=lambda: creds).valid(cookie, 1030.0)
    assert sessions.issue("x") is None and sessions.issue("") is None
    assert sessions.csrf_ok(cookie, sessions.csrf(cookie))
    assert not sessions.csrf_ok(cookie, "")
    expires, nonce, _tid, mac = cookie.split(".")
    assert not sessions.valid(f"{expires}.{nonce}.{auth.token_id('other')}.{mac}", now=1030.0)


def test_sessions_follow_their_own_token_through_rotation() -> None:
    """Issue 14: the session key came from the admin token, so a console could only be signed
    into with it. Now any `explain` token signs in, sessions carry their token's id, and the
    scopes are what is configured now: rotating one token ends its sessions and no other."""
    old, new, push = "old-explain", "new-explain", "push-only"
    env = {
        "EDGESIDE_TOKENS_EXPLAIN": f"{digest(old.encode())},{digest(new.encode())}",
        "EDGESIDE_TOKENS_PUSH": digest(push.encode()),
    }
    creds = [Credentials.from_environ(env)]
    sessions = auth.Sessions(b"secret", ttl_s=60, credentials=lambda: creds[0])
    a, b = sessions.issue(old, now=1000.0), sessions.issue(new, now=1000.0)
    assert a is not None and b is not None
    assert sessions.scopes(a, now=1001.0) == {"explain"}
    assert sessions.issue(push) is None  # a valid token, but not for the console
    env["EDGESIDE_TOKENS_EXPLAIN"] = digest(new.encode())  # the old token is retired
    env["EDGESIDE_TOKENS_PUSH"] += "," + digest(new.encode())  # the new one may promote
    creds[0] = Credentials.from_environ(env)
    assert not sessions.valid(a, now=1001.0)
    assert sessions.scopes(b, now=1001.0) == {"explain", "push"}


def test_placement_names_from_requests_cannot_grow_the_counts() -> None:
    engine = _engine()
    metric = Counter("m", "m", ("placement", "result"))
    run = shadow.ShadowRun(shadow.ShadowSpec("id3", "", 1.0, 0.0), engine, metric)
    ctx = rules.Context(site="shop-fr", now=1_780_000_000.0)
    for i in range(shadow.MAX_PLACEMENTS + 50):
        names = [f"made-up-{i}"]
        served = engine.decide(visitor_id=None, profile=None, ctx=ctx, placements=names)
        run(_World(), served, None, None, ctx, names, None)
    assert len(run.counts.placements) == shadow.MAX_PLACEMENTS + 1
    assert run.counts.placements[shadow.OTHER].agree == 50
    assert len(metric.values) == shadow.MAX_PLACEMENTS + 1


def test_replay_reports_its_progress_in_bounded_steps(tmp_path: Path) -> None:
    _write_log(tmp_path / "decisions-a.ndjson", 1_780_000_000.0, 500)
    read: list[tuple[int, int]] = []
    window = impact.last_decisions(tmp_path, 400, progress=lambda d, t: read.append((d, t)))
    assert read == [(400, 400)], "one report per file read, found of the window"
    seen: list[tuple[int, int]] = []
    report = impact.replay(window, _engine(), _engine(), progress=lambda d, t: seen.append((d, t)))
    assert report.decisions == 400
    assert seen[0] == (0, 400) and seen[-1] == (400, 400)
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert len(seen) <= impact.PROGRESS_STEPS + 1


def _collect(agen: Any) -> list[dict[str, Any]]:
    async def run() -> list[bytes]:
        return [line async for line in agen]

    return [json.loads(line) for line in asyncio.run(run())]


def test_the_stream_sends_progress_then_the_result_and_releases_the_world() -> None:
    released: list[bool] = []

    def hold() -> Any:
        return lambda: released.append(True)

    def work(report: impact_stream.Report) -> dict[str, int]:
        report("read", 3, 10)
        for i in range(4):
            report("replay", i, 3)
        return {"decisions": 3}

    lines = _collect(impact_stream.stream(work, hold))
    assert [x["progress"]["phase"] for x in lines[:-1]] == ["read"] + ["replay"] * 4
    assert [x["progress"]["done"] for x in lines[1:-1]] == [0, 1, 2, 3]
    assert lines[1]["progress"]["eta_s"] is None, "no rate yet: no time left is guessed"
    assert lines[-2]["progress"]["eta_s"] == 0
    assert lines[-1] == {"result": {"decisions": 3}}
    assert released == [True]


def test_a_failing_replay_ends_its_stream_with_an_error_line() -> None:
    def work(report: impact_stream.Report) -> None:
        report("replay", 0, 5)
        raise ValueError("a corrupt profile store")

    lines = _collect(impact_stream.stream(work, lambda: lambda: None))
    assert lines[0]["progress"]["done"] == 0
    assert lines[-1] == {"error": {"code": "replay_failed", "message": "a corrupt profile store"}}


def test_a_closed_stream_stops_the_replay_at_its_next_report() -> None:
    """The browser went away after the first line: the work is told at its next report, and the
    world it held is released once it has stopped."""
    went_away = threading.Event()
    outcome: list[str] = []
    released = threading.Event()

    def work(report: impact_stream.Report) -> None:
        report("replay", 0, 100)
        went_away.wait(30)
        try:
            report("replay", 50, 100)
        except impact_stream.Stopped:
            outcome.append("stopped")
            raise
        outcome.append("went on")

    async def run() -> None:
        agen = impact_stream.stream(work, lambda: released.set)
        first = await agen.__anext__()
        assert json.loads(first)["progress"]["done"] == 0
        await agen.aclose()
        went_away.set()
        for _ in range(3000):  # the release runs on the loop once the thread is done
            if released.is_set():
                break
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert outcome == ["stopped"]
    assert released.is_set()
