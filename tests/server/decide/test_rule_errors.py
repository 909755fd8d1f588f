"""A rule that fails on odd profile data: the placement gets its default, the request succeeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.procs import edgeside
from server.cli import main as cli
from server.offline.demo import DEMO_DIR
from snapshots import store

RULES = """\
version: 1
schema:
  attributes:
    ltv: number
sites:
  default:
    placements:
      hero:
        default: {variant: plain}
        rules:
          - id: spender
            when: profile.ltv * 2 > 100
            then: {variant: spender}
"""


def _activate(data: Path, kind: str, built: Path) -> None:
    store.activate(data, kind, store.install(data, built))


def test_a_rule_that_raises_falls_back_and_is_counted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    exports = tmp_path / "profiles.ndjson"
    records = [
        {"source": "crm", "ids": {"cookie": "k-fine"}, "updated_at": "2026-11-01T00:00:00Z",
         "attributes": {"ltv": 900.0}},
        # The CRM sent text where the schema says number: `profile.ltv * 2` raises at run time.
        {"source": "crm", "ids": {"cookie": "k-odd"}, "updated_at": "2026-11-01T00:00:00Z",
         "attributes": {"ltv": "lots"}},
    ]  # fmt: skip
    exports.write_text("".join(json.dumps(r) + "\n" for r in records))
    built = tmp_path / "built-profiles"
    args = ["snapshot", "build", "--kind", "profiles", "--input", str(exports)]
    assert cli([*args, "--config", str(DEMO_DIR / "profiles.yaml"), "--out", str(built)]) == 0
    _activate(data, "profiles", built)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    assert cli(["rules", "build", str(rules_file), "--out", str(tmp_path / "built-rules")]) == 0
    _activate(data, "rules", tmp_path / "built-rules")

    with edgeside(data, ready=False, log_dir=tmp_path) as server, server.client() as client:
        fine = client.get("/v1/edge?p=hero", headers={"Cookie": "edgeside_id=k-fine"})
        odd = client.get("/v1/edge?p=hero", headers={"Cookie": "edgeside_id=k-odd"})
        decided = client.post(
            "/v1/decide", json={"visitor": {"ids": {"cookie": "k-odd"}}, "placements": ["hero"]}
        )
        metrics = client.get("/metrics").text
    assert fine.headers["x-edge-decision"] == "hero=spender"
    assert "x-edge-fallback" not in fine.headers
    assert odd.status_code == 204
    assert odd.headers["x-edge-decision"] == "hero=plain"
    assert odd.headers["x-edge-fallback"] == "rule_error"
    assert decided.status_code == 200
    assert decided.json()["placements"][0]["fallback"] == "rule_error"
    assert "edgeside_rule_errors_total 2" in metrics


def test_rules_build_refuses_a_file_with_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.replace("profile.ltv * 2", "profile.ltvv * 2"))
    assert cli(["rules", "build", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert f"{bad}:12:27" in err and "did you mean `ltv`" in err
