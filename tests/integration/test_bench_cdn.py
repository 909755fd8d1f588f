"""`python -m bench.cdn` runs end to end on a small load and prints its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.integration


def test_bench_cdn_smoke(nginx_bin: str, cdn_data: Path) -> None:
    argv = [sys.executable, "-m", "bench.cdn", "--visitors", "400", "--pages", "4"]
    argv += ["--data", str(cdn_data), "--max-seconds", "30"]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["requests"] == 400
    assert line["non_200"] == 0 and line["fallback_pages"] == 0
    # Personalised: several copies of a page, yet most requests are hits.
    assert line["variants_per_page_max"] >= 2
    assert 0.5 < line["hit_ratio"] <= 1.0
    assert line["hit_ratio_plain"] > 0.9
    assert line["p50_ms_personalised"] > 0 and line["p50_ms_plain"] > 0
