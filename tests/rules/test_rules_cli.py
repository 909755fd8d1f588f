"""`edgeside rules check`: output for people and for tools, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rules
from server.cli import main

DEMO = Path(__file__).resolve().parents[2] / "server" / "offline" / "demo_data" / "rules.yaml"


def test_check_demo_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "ok —" in out and "decision keys" in out and "at most" in out


def test_check_reports_errors_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("segment.gold_plus\n", "segment.gold_pluss\n", 1))
    assert main(["rules", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:" in out and "error[unknown-segment]" in out
    assert "did you mean `gold_plus`?" in out and "^" in out


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(DEMO), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["errors"] == 0 and doc["max_keys"] >= 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"sites": {"default": {"placements": {"p": {"rules": []}}}}}')
    assert main(["rules", "check", str(bad), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["diagnostics"][0]["code"] == "missing-field"


def test_warnings_for_unreachable_rules_and_unused_segments(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text("""
segments:
  lonely: ctx.hour > 3
sites:
  default:
    placements:
      p:
        default: d
        rules:
          - {id: always, when: 1 < 2, then: a}
          - {id: shadowed, when: ctx.hour > 1, then: b}
          - {id: never, when: false, then: c}
""")
    ok, diags = rules.check_file(f)
    assert ok
    got = sorted((d.code, d.line) for d in diags)
    assert got == [("unreachable", 11), ("unreachable", 12), ("unused-segment", 3)]
    assert all(d.severity == "warning" for d in diags)


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(tmp_path / "nope.yaml")]) == 2
    ok, diags = rules.check_file(tmp_path / "nope.yaml")
    assert not ok and diags[0].code == "io"


DEMO_SITES = ["default", "shop-de", "shop-fr", "shop-uk"]


def test_check_lists_the_sites_and_pages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(DEMO), "--sites"]) == 0
    out = capsys.readouterr().out
    assert "sites: " + ", ".join(DEMO_SITES) in out
    assert "decision keys per page (pages:):" in out and "default /cart: at most" in out
    assert main(["rules", "check", str(DEMO), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sites"] == DEMO_SITES
    assert {p["pattern"] for p in doc["pages"]} >= {"/", "/cart", "/product/{sku}"}
    ruleset, _ = rules.load(DEMO)
    assert ruleset is not None and rules.compile_ruleset(ruleset).sites == DEMO_SITES
