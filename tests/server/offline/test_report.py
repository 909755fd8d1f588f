"""`edgeside report` against a hand-computed fixture, and the HTML report in headless Chromium."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from server.cli import main
from tests.conftest import require_binary


def _decision(
    t: float,
    visitor: str | None,
    variant: str,
    segments: list[str],
    country: str,
    hour: int,
    sample: float = 1.0,
) -> dict[str, object]:
    return {
        "t": t,
        "kind": "decision",
        "visitor": visitor,
        "site": "shop-fr",
        "country": country,
        "hour": hour,
        "snapshots": "profiles=1;content=1;rules=1",
        "key": "k",
        "segments": segments,
        "placements": [
            {
                "placement": "home_hero",
                "variant": variant,
                "rule": None,
                "experiment": None,
                "arm": None,
            }
        ],
        "sample": sample,
    }


def _event(
    t: float,
    kind: str,
    visitor: str | None,
    variant: str | None,
    country: str = "FR",
    hour: int = 0,
) -> dict[str, object]:
    return {
        "t": t,
        "kind": "event",
        "type": kind,
        "visitor": visitor,
        "placement": "home_hero",
        "variant": variant,
        "experiment": None,
        "arm": None,
        "content_id": None,
        "value": None,
        "country": country,
        "hour": hour,
    }


@pytest.fixture()
def logs(tmp_path: Path) -> Path:
    """The fixture, and what each line counts for (worked out by hand below)."""
    records = [
        _decision(100, "v1", "A", ["gold"], "FR", 9),
        _decision(101, "v2", "A", ["gold", "runner"], "DE", 10),
        _decision(102, "v3", "B", [], "FR", 9),
        _decision(103, None, "B", [], "FR", 9),
        _decision(104, None, "A", [], "DE", 10, sample=0.5),  # stands for 2 impressions
        _decision(105, "v1", "B", ["gold"], "FR", 11),
        _event(100.5, "click", "v1", "A"),  # → decision 100: A, gold, FR, 9
        _event(106, "click", "v1", None),  # → latest decision of v1, 105: B, gold, FR, 11
        _event(101.5, "purchase", "v2", "A"),  # → decision 101: A, gold+runner, DE, 10
        _event(103.5, "click", None, "B", "FR", 9),  # no visitor: own fields, segment (none)
        _event(50, "click", "v3", "B"),  # before any decision of v3: own fields
        _event(200, "view", "v1", "A"),  # views are not impressions
        _decision(5000, "v9", "A", [], "FR", 1),  # outside --until 1000
    ]
    d = tmp_path / "logs"
    d.mkdir()
    lines = [json.dumps(r) for r in records]
    (d / "decisions-1.ndjson").write_text("\n".join(lines[:7]) + "\n")
    (d / "decisions-2.ndjson").write_text("\n".join(lines[7:]) + "\nnot json\n")
    return d


def test_numbers_match_the_hand_computed_fixture(logs: Path, tmp_path: Path) -> None:
    out = tmp_path / "by_variant.csv"
    code = main(
        ["report", "--logs", str(logs), "--until", "1000", "--format", "csv", "--out", str(out)]
    )
    assert code == 0
    # A: impressions 1 + 1 + 2 = 4, 1 click, 1 purchase; B: 3 impressions, 3 clicks.
    # Wilson 95 %: 1/4 → [0.0456, 0.6994]; 3/3 → [0.4385, 1]; 0/3 → [0, 0.5615].
    assert out.read_text() == (
        "placement,variant,impressions,clicks,conversions,ctr,ctr_low,ctr_high,"
        "conversion_rate,cr_low,cr_high\n"
        "home_hero,A,4,1,1,0.2500,0.0456,0.6994,0.2500,0.0456,0.6994\n"
        "home_hero,B,3,3,0,1.0000,0.4385,1.0000,0.0000,0.0000,0.5615\n"
    )


def test_segments_countries_and_hours(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "by_segment.csv"
    main(
        [
            "report",
            "--logs",
            str(logs),
            "--until",
            "1000",
            "--by",
            "segment,country",
            "--format",
            "csv",
            "--out",
            str(out),
        ]
    )
    rows = {
        tuple(line.split(",")[:2]): line.split(",")[2:5]
        for line in out.read_text().splitlines()[1:]
    }
    # gold: impressions 100(FR), 105(FR), 101(DE); clicks 100.5 and 106 (FR); purchase 101.5 (DE)
    # runner: 101 (DE) + its purchase; (none): 102, 103 (FR) and 104 (DE, ×2); clicks 103.5, 50.
    assert rows == {
        ("(none)", "DE"): ["2", "0", "0"],
        ("(none)", "FR"): ["2", "2", "0"],
        ("gold", "DE"): ["1", "0", "1"],
        ("gold", "FR"): ["2", "2", "0"],
        ("runner", "DE"): ["1", "0", "1"],
    }
    main(
        [
            "report",
            "--logs",
            str(logs),
            "--by",
            "hour",
            "--since",
            "1970-01-01T00:01:40Z",
            "--until",
            "1000",
        ]
    )
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["hour", "impr", "clicks", "conv"]
    by_hour = {line.split()[0]: line.split()[1:4] for line in lines[2:-1]}
    # --since 100 drops the click at 50 (hour 0), --until 1000 the decision at 5000;
    # hour 11 is v1's second decision and the click attributed to it.
    assert by_hour == {"10": ["3", "0", "1"], "11": ["1", "1", "0"], "9": ["3", "2", "0"]}
    assert lines[-1] == "(11 records, 1 skipped)"


def _png_size_and_colours(png: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct colours of an 8-bit RGB/RGBA PNG (stdlib only)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, colour_type = 8, b"", 0, 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and colour_type in (2, 6)
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        if y % 4 == 0:  # every 4th row is plenty to count colours
            colours.update(bytes(line[i : i + 3]) for i in range(0, stride, bpp))
        prev = line
    return width, height, len(colours)


def test_the_html_report_renders_in_headless_chromium(logs: Path, tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    page = tmp_path / "report.html"
    assert (
        main(
            [
                "report",
                "--logs",
                str(logs),
                "--by",
                "variant,segment",
                "--format",
                "html",
                "--out",
                str(page),
            ]
        )
        == 0
    )
    text = page.read_text()
    assert "<svg" in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    width, height, colours = _png_size_and_colours(shot.read_bytes())
    assert (width, height) == (1200, 900)
    # A blank page has one colour; bars in eight colours, text and anti-aliasing give many more.
    assert colours > 50, colours
