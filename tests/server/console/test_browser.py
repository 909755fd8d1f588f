"""The console in a real browser: Playwright (PyPI) driving the system Chromium — never a
downloaded one — against a real server process with traffic in its decision log.

One browser for the module; each test opens a page in one signed-in context. Screenshots go to
`EDGESIDE_SCREENSHOTS` (or a temporary directory), named after the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.procs import Edgeside
from tests.conftest import require_binary

from .conftest import CANDIDATE, DEMO_RULES, TOKEN, make_traffic

pytestmark = pytest.mark.integration

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
# Installed in the page before a replay: records each text the progress line shows, then
# "RESULT" when the result is put in the page.
PROGRESS_RECORDER = """() => {
  window.__impactShown = [];
  const seen = window.__impactShown;
  new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) {
        if (r.target.id === "impact-progress-text") seen.push(n.textContent);
        else if (r.target.id === "impact-out") { seen.push("RESULT"); return; }
      }
    }
  }).observe(document.getElementById("impact-progress-text").parentNode.parentNode,
             { childList: true, subtree: true });
}"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return require_binary(name)
    return require_binary("chromium")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("EDGESIDE_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def context(browser: object, console_server: Edgeside) -> Iterator[object]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    ctx.set_default_timeout(TIMEOUT_MS)
    page = ctx.new_page()
    page.goto(console_server.url + "/console")
    page.fill("#token", TOKEN)
    page.click("#signin-form button")
    page.wait_for_selector("#tabs:not([hidden])")
    page.close()
    yield ctx
    ctx.close()


@pytest.fixture()
def page(context: object, console_server: Edgeside) -> Iterator[object]:
    pg = context.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(console_server.url + "/console")
    pg.wait_for_selector("#tabs:not([hidden])")
    pg.wait_for_selector("#candidate[data-checked='1']")
    yield pg
    pg.close()
    assert errors == [], f"the page raised: {errors}"


def _set_candidate(page: object, text: str) -> None:
    # As a paste: Playwright's `fill` types a whole rules file into a textarea in ~15 s on a
    # loaded machine; the editor reacts to the same `input` event either way.
    page.eval_on_selector(  # type: ignore[attr-defined]
        "#candidate",
        "(el, text) => { el.value = text; el.dispatchEvent(new Event('input')); }",
        text,
    )
    # Waited for with selectors, not functions: the page's CSP forbids evaluating strings.
    page.wait_for_selector("#candidate[data-checked='1']", state="attached")  # type: ignore[attr-defined]


def test_sign_in_with_the_token(browser: object, console_server: Edgeside, shots: Path) -> None:
    ctx = browser.new_context()  # type: ignore[attr-defined]
    try:
        page = ctx.new_page()
        page.goto(console_server.url + "/console")
        page.wait_for_selector("#signin:not([hidden])")
        page.fill("#token", "not-the-token")
        page.click("#signin-form button")
        page.wait_for_selector("#signin-error:has-text('not accepted')")
        page.screenshot(path=str(shots / "01-sign-in-refused.png"))
        page.fill("#token", TOKEN)
        page.click("#signin-form button")
        page.wait_for_selector("#tabs:not([hidden])")
        page.wait_for_selector("#active-rules:has-text('Demo shop rules')")
        cookies = {c["name"]: c for c in ctx.cookies()}
        session = cookies["edgeside_console"]
        assert session["httpOnly"] is True and session["sameSite"] == "Strict"
        # Scripts cannot read it.
        assert "edgeside_console" not in page.evaluate("document.cookie")
        page.screenshot(path=str(shots / "02-signed-in-rules.png"), full_page=True)
    finally:
        ctx.close()


def test_a_typo_shows_its_error_at_its_line(page: object, shots: Path) -> None:
    line = DEMO_RULES[: DEMO_RULES.index("profile.tier in")].count("\n") + 1
    _set_candidate(page, DEMO_RULES)
    # Type the typo with the keyboard where a marketer would: after `profile.tier`.
    at = DEMO_RULES.index("profile.tier in") + len("profile.tier")
    page.eval_on_selector(  # type: ignore[attr-defined]
        "#candidate", "(el, at) => { el.focus(); el.setSelectionRange(at, at); }", at
    )
    page.keyboard.type("r")  # type: ignore[attr-defined]
    page.wait_for_selector("#candidate[data-checked='1']", state="attached")  # type: ignore[attr-defined]
    item = page.wait_for_selector("#diagnostics li.error")  # type: ignore[attr-defined]
    assert item.get_attribute("data-line") == str(line)
    text = item.inner_text()
    assert f"line {line}:" in text and "unknown attribute `profile.tierr`" in text
    assert "did you mean `tier`?" in text
    marked = page.query_selector_all("#gutter div.error")  # type: ignore[attr-defined]
    assert [m.get_attribute("data-line") for m in marked] == [str(line)]
    assert "error(s)" in page.inner_text("#check-summary")  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "03-typo-at-its-line.png"), full_page=True)  # type: ignore[attr-defined]
    _set_candidate(page, DEMO_RULES)
    assert page.query_selector("#diagnostics li.error") is None  # type: ignore[attr-defined]


def _preview(page: object, visitor: str) -> None:
    page.click("#tabs button[data-tab=preview]")  # type: ignore[attr-defined]
    page.fill("#pv-visitor", visitor)  # type: ignore[attr-defined]
    page.select_option("#pv-site", "shop-fr")  # type: ignore[attr-defined]
    page.fill("#pv-hour", "12")  # type: ignore[attr-defined]
    page.evaluate("document.querySelector('#pv-active').replaceChildren()")  # type: ignore[attr-defined]
    page.click("#preview-form button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_selector("#pv-active tr[data-placement=home_hero]")  # type: ignore[attr-defined]


def _variant(page: object, side: str, placement: str) -> str:
    cell = page.query_selector(f"#pv-{side} tr[data-placement={placement}] td.variant")  # type: ignore[attr-defined]
    return str(cell.inner_text())


def test_preview_known_and_anonymous_visitors(page: object, shots: Path) -> None:
    _set_candidate(page, CANDIDATE)
    _preview(page, "cookie:c-alice")
    assert _variant(page, "active", "home_hero") in ("gold_offer", "gold_offer_big")
    assert _variant(page, "active", "home_recs") == "for_you"
    assert _variant(page, "candidate", "home_hero") in ("gold_offer_v2", "gold_offer_big")
    assert "profile p_" in page.inner_text("#pv-who")  # type: ignore[attr-defined]
    page.click("#pv-active details summary")  # type: ignore[attr-defined]
    trace = page.inner_text("#pv-active details")  # type: ignore[attr-defined]
    assert 'profile.tier in ["gold", "platinum"]' in trace, "segment conditions are shown"
    page.screenshot(path=str(shots / "04-preview-known.png"), full_page=True)  # type: ignore[attr-defined]
    _preview(page, "")
    assert _variant(page, "active", "home_hero") == "default"
    assert _variant(page, "candidate", "home_hero") == "default"
    assert _variant(page, "active", "home_recs") == "popular"
    assert "anonymous" in page.inner_text("#pv-who")  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "05-preview-anonymous.png"), full_page=True)  # type: ignore[attr-defined]


def test_impact_shows_the_same_numbers_as_the_cli(
    page: object, console_data: Path, tmp_path: Path, shots: Path
) -> None:
    _set_candidate(page, CANDIDATE)
    page.click("#tabs button[data-tab=impact]")  # type: ignore[attr-defined]
    page.fill("#im-last", "500")  # type: ignore[attr-defined]
    # Everything the page shows while the replay runs, in order: each text of the progress line
    # and the moment the result appears (kept by the mutation records, however fast it ran).
    page.evaluate(PROGRESS_RECORDER)  # type: ignore[attr-defined]
    page.click("#impact-form button")  # type: ignore[attr-defined]
    summary = page.wait_for_selector("#impact-summary")  # type: ignore[attr-defined]
    decisions = int(summary.get_attribute("data-decisions"))
    changed = int(summary.get_attribute("data-changed"))
    page.screenshot(path=str(shots / "06-impact.png"), full_page=True)  # type: ignore[attr-defined]
    shown: list[str] = page.evaluate("window.__impactShown")  # type: ignore[attr-defined]
    result_at = shown.index("RESULT")
    before = shown[:result_at]
    assert before[0].startswith("reading the decision log:")
    steps = [s for s in before if re.fullmatch(r"replayed \d+ of \d+ decisions · about .* left", s)]
    assert steps, f"the replay's progress was shown before its result: {before}"
    last = re.fullmatch(r"replayed (\d+) of \1 decisions in [\d.]+ s", before[-1])
    assert last and int(last[1]) >= decisions, before[-1]
    assert page.is_visible("#impact-progress")  # type: ignore[attr-defined]
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(CANDIDATE)
    argv = [sys.executable, "-m", "server.cli", "rules", "impact", str(candidate), "--json"]
    argv += ["--data", str(console_data), "--last", "500"]
    report = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    assert (decisions, changed) == (report["decisions"], report["changed"])
    assert changed > 0
    rows = page.inner_text("#impact-placements")  # type: ignore[attr-defined]
    assert "gold_offer → gold_offer_v2" in rows


def test_shadow_shows_agreement(
    page: object, console_server: Edgeside, console_data: Path, shots: Path
) -> None:
    _set_candidate(page, DEMO_RULES)  # the live rules: they must agree with themselves
    page.click("#tabs button[data-tab=shadow]")  # type: ignore[attr-defined]
    page.fill("#sh-share", "1")  # type: ignore[attr-defined]
    page.click("#shadow-form button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_selector("#shadow-state[data-agreement]")  # type: ignore[attr-defined]
    make_traffic(console_server, console_data / "logs")
    page.wait_for_selector("#shadow-state[data-agreement='1.0'], #shadow-state[data-agreement='1']")  # type: ignore[attr-defined]
    assert "100.0 %" in page.inner_text("#shadow-state")  # type: ignore[attr-defined]
    assert "home_hero" in page.inner_text("#shadow-placements")  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "07-shadow-agreement.png"), full_page=True)  # type: ignore[attr-defined]


def test_promote_changes_edge_answers(
    page: object, console_server: Edgeside, console_data: Path, shots: Path
) -> None:
    edge = console_server.url + "/v1/edge?p=home_hero&site=shop-fr"
    probe = {"Cookie": "edgeside_id=nobody-promote"}
    assert httpx.get(edge, headers=probe).headers["x-edge-decision"] != "home_hero=promoted"
    candidate = DEMO_RULES.replace("variant: default\n", "variant: promoted\n", 1)
    candidate = candidate.replace("variant: night_sale", "variant: promoted")
    _set_candidate(page, candidate)
    page.click("#tabs button[data-tab=shadow]")  # type: ignore[attr-defined]
    page.fill("#sh-share", "1")  # type: ignore[attr-defined]
    page.click("#shadow-form button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_selector("#shadow-state[data-agreement]")  # type: ignore[attr-defined]
    make_traffic(console_server, console_data / "logs")
    deadline = time.monotonic() + 15
    while True:
        value = page.get_attribute("#shadow-state", "data-agreement")  # type: ignore[attr-defined]
        if value and float(value) < 1:
            break
        assert time.monotonic() < deadline, f"agreement stays {value}"
        page.wait_for_timeout(300)  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "08-shadow-differs.png"), full_page=True)  # type: ignore[attr-defined]
    page.once("dialog", lambda dialog: dialog.accept())  # type: ignore[attr-defined]
    page.click("#sh-promote")  # type: ignore[attr-defined]
    page.wait_for_selector("#status:has-text('is active')")  # type: ignore[attr-defined]
    page.wait_for_selector("#shadow-state:has-text('No shadow')")  # type: ignore[attr-defined]
    page.click("#tabs button[data-tab=rules]")  # type: ignore[attr-defined]
    page.wait_for_selector("#active-rules:has-text('variant: promoted')")  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "09-promoted.png"))  # type: ignore[attr-defined]
    got = httpx.get(edge + "&after=1", headers=probe).headers["x-edge-decision"]
    assert got == "home_hero=promoted"


def test_analytics_renders_its_charts(page: object, shots: Path) -> None:
    page.click("#tabs button[data-tab=analytics]")  # type: ignore[attr-defined]
    page.wait_for_selector("svg#chart-variant")  # type: ignore[attr-defined]
    for chart in ("chart-variant", "chart-segment", "chart-country", "chart-hour"):
        bars = page.query_selector_all(f"svg#{chart} rect.bar")  # type: ignore[attr-defined]
        assert bars, chart
    labels = page.text_content("svg#chart-variant")  # type: ignore[attr-defined]
    assert "home_hero · " in labels and "%" in labels
    assert page.query_selector("#lift") is not None  # type: ignore[attr-defined]
    assert "Small samples" in page.inner_text("#small-sample")  # type: ignore[attr-defined]
    header = page.inner_text("#analytics-table thead")  # type: ignore[attr-defined]
    assert "Impressions" in header and "CTR 95 % CI" in header
    page.screenshot(path=str(shots / "10-analytics.png"), full_page=True)  # type: ignore[attr-defined]


def test_html_in_names_is_shown_as_text(page: object, shots: Path) -> None:
    evil_variant = "<img src=x onerror=window.__xss=1>"
    evil_rule = "<b>gold</b><script>window.__xss=2</script>"
    candidate = (
        DEMO_RULES.replace("variant: popular\n", f'variant: "{evil_variant}"\n', 1)
        .replace("id: gold_offer\n", f'id: "{evil_rule}"\n')
        .replace("rule: gold_offer\n", f'rule: "{evil_rule}"\n')
    )
    # A broken line with markup in it: its diagnostic quotes the source line.
    broken = candidate.replace(
        "profile.tier in", "profile.tier == '<script>window.__xss=3</script>' or profile.tierr in"
    )
    _set_candidate(page, broken)
    page.wait_for_selector("#diagnostics li.error")  # type: ignore[attr-defined]
    assert "<script>window.__xss=3</script>" in page.inner_text("#diagnostics")  # type: ignore[attr-defined]
    _set_candidate(page, candidate)
    _preview(page, "<svg onload=window.__xss=4>")
    _preview(page, "")
    assert _variant(page, "candidate", "home_recs") == evil_variant
    page.fill("#pv-visitor", "cookie:c-alice")  # type: ignore[attr-defined]
    page.click("#preview-form button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_selector(f"#pv-candidate td:has-text('{evil_rule[:8]}')")  # type: ignore[attr-defined]
    assert evil_rule in page.inner_text("#pv-candidate table")  # type: ignore[attr-defined]
    # No element was made from the names: no <img>, no <script>, no <b>gold</b>.
    assert page.query_selector("main img, main script") is None  # type: ignore[attr-defined]
    assert page.query_selector("#pv-candidate b:text-is('gold')") is None  # type: ignore[attr-defined]
    assert page.evaluate("window.__xss === undefined")  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "11-escaped.png"), full_page=True)  # type: ignore[attr-defined]
