"""The report's HTML for people: each rate drawn at the end of its bar, named columns, percentages,
and a warning when groups are too small to call."""

from __future__ import annotations

import re

from server.offline.report.analytics import Report, Row
from server.offline.report.render import to_html


def _report() -> Report:
    return Report(
        ("placement", "variant"),
        [
            Row(("hero", "gold"), impressions=1000, clicks=100),
            Row(("hero", "default"), impressions=21, clicks=9),
        ],
        records=1021,
    )


def test_each_rate_is_written_at_the_end_of_its_bar() -> None:
    page = to_html(_report())
    ctr_chart = page.split("Click-through rate (95 % CI)", 1)[1].split("</svg>", 1)[0]
    bars = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)"', ctr_chart)]
    x0 = float(re.search(r'<rect x="([\d.]+)"', ctr_chart).group(1))
    labels = re.findall(
        r'<text x="([\d.]+)"[^>]*font-weight="bold"[^>]*>([\d.]+%)</text>', ctr_chart
    )
    assert [text for _, text in labels] == ["10.00%", "42.86%"]
    for (x, _), width in zip(labels, bars, strict=True):
        assert float(x) == round(x0 + width + 4, 1), "the label sits at its bar, not its whisker"


def test_the_table_has_readable_columns_and_warns_about_small_samples() -> None:
    page = to_html(_report())
    head = page.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert "<th>Placement</th><th>Variant</th><th>Impressions</th>" in head
    assert "Click-through rate" in head and "_" not in head
    assert '<td class="n">10.00%</td>' in page
    assert "Small samples: 1 of 2 groups" in page
    assert '<tr class="small"><td>hero</td><td>default</td>' in page
