"""A report as a terminal table, CSV, or one self-contained HTML page with inline SVG charts."""

from __future__ import annotations

import csv
import html
import io
import time

from .analytics import Report, Row

COLUMNS = (
    "impressions",
    "clicks",
    "conversions",
    "ctr",
    "ctr_low",
    "ctr_high",
    "conversion_rate",
    "cr_low",
    "cr_high",
)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def values(row: Row) -> list[str]:
    lo, hi = row.ctr_ci
    clo, chi = row.conversion_ci
    return [
        _num(row.impressions),
        str(row.clicks),
        str(row.conversions),
        f"{row.ctr:.4f}",
        f"{lo:.4f}",
        f"{hi:.4f}",
        f"{row.conversion_rate:.4f}",
        f"{clo:.4f}",
        f"{chi:.4f}",
    ]


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*report.by, *COLUMNS])
    for row in report.rows:
        writer.writerow([*row.group, *values(row)])
    return out.getvalue()


def to_table(report: Report) -> str:
    header = [*report.by, "impr", "clicks", "conv", "CTR", "CTR 95% CI", "CR", "CR 95% CI"]
    lines = [header]
    for row in report.rows:
        lo, hi = row.ctr_ci
        clo, chi = row.conversion_ci
        lines.append(
            [
                *row.group,
                _num(row.impressions),
                str(row.clicks),
                str(row.conversions),
                f"{row.ctr:.2%}",
                f"{lo:.2%}–{hi:.2%}",
                f"{row.conversion_rate:.2%}",
                f"{clo:.2%}–{chi:.2%}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text_cols = len(report.by)
    out = []
    for n, line in enumerate(lines):
        cells = [
            c.ljust(w) if i < text_cols else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append(f"({report.records} records, {report.skipped} skipped)")
    return "\n".join(out) + "\n"


_PALETTE = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#dc2626", "#ca8a04", "#4b5563")


def _chart(report: Report, title: str, metric: str) -> str:
    """Horizontal bars with confidence-interval whiskers, one per group."""
    rows = report.rows[:40]
    bar_h, gap, label_w, plot_w = 22, 8, 260, 560
    height = 40 + len(rows) * (bar_h + gap) + 30
    top = 0.0
    for r in rows:
        hi = (r.ctr_ci if metric == "ctr" else r.conversion_ci)[1]
        top = max(top, hi)
    top = top or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 150}" '
        f'height="{height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="0" y="20" font-size="15" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, r in enumerate(rows):
        y = 36 + i * (bar_h + gap)
        value = r.ctr if metric == "ctr" else r.conversion_rate
        lo, hi = r.ctr_ci if metric == "ctr" else r.conversion_ci
        w = plot_w * value / top
        colour = _PALETTE[i % len(_PALETTE)]
        label = html.escape(" · ".join(r.group) or "all")
        x0 = label_w
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">{label}</text>'
            f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
            f'<line x1="{x0 + plot_w * lo / top:.1f}" x2="{x0 + plot_w * hi / top:.1f}" '
            f'y1="{y + bar_h / 2}" y2="{y + bar_h / 2}" stroke="#111" stroke-width="2"/>'
            f'<line x1="{x0 + plot_w * lo / top:.1f}" x2="{x0 + plot_w * lo / top:.1f}" '
            f'y1="{y + 4}" y2="{y + bar_h - 4}" stroke="#111" stroke-width="2"/>'
            f'<line x1="{x0 + plot_w * hi / top:.1f}" x2="{x0 + plot_w * hi / top:.1f}" '
            f'y1="{y + 4}" y2="{y + bar_h - 4}" stroke="#111" stroke-width="2"/>'
            # The rate at the end of its bar (a white halo keeps it readable over the whisker).
            f'<text x="{x0 + w + 4:.1f}" y="{y + 15}" font-size="12" font-weight="bold" '
            f'stroke="#fff" stroke-width="3" paint-order="stroke">{value:.2%}</text>'
            f'<text x="{label_w + plot_w + 146}" y="{y + 15}" font-size="11" fill="#555" '
            f'text-anchor="end">{_num(r.impressions)} impr.</text>'
        )
    axis_y = 36 + len(rows) * (bar_h + gap)
    parts.append(
        f'<line x1="{label_w}" x2="{label_w + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="#999"/>'
        f'<text x="{label_w}" y="{axis_y + 18}" font-size="11">0%</text>'
        f'<text x="{label_w + plot_w}" y="{axis_y + 18}" font-size="11" text-anchor="end">'
        f"{top:.1%}</text></svg>"
    )
    return "".join(parts)


# The HTML table is for people: named columns, rates as percentages with their interval.
HTML_COLUMNS = (
    "Impressions",
    "Clicks",
    "Conversions",
    "Click-through rate",
    "CTR 95 % interval",
    "Conversion rate",
    "CR 95 % interval",
)
# Below this many impressions a rate is too unsure to call a winner (the page says so).
SMALL_SAMPLE = 100


def _html_values(row: Row) -> list[str]:
    lo, hi = row.ctr_ci
    clo, chi = row.conversion_ci
    return [
        _num(row.impressions),
        str(row.clicks),
        str(row.conversions),
        f"{row.ctr:.2%}",
        f"{lo:.2%} – {hi:.2%}",
        f"{row.conversion_rate:.2%}",
        f"{clo:.2%} – {chi:.2%}",
    ]


def to_html(report: Report, title: str = "edgeside content analytics") -> str:
    names = [d.replace("_", " ").capitalize() for d in report.by]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (*names, *HTML_COLUMNS))
    body = "".join(
        ('<tr class="small">' if row.impressions < SMALL_SAMPLE else "<tr>")
        + "".join(f"<td>{html.escape(v)}</td>" for v in row.group)
        + "".join(f'<td class="n">{v}</td>' for v in _html_values(row))
        + "</tr>"
        for row in report.rows
    )
    small = sum(1 for row in report.rows if row.impressions < SMALL_SAMPLE)
    warning = (
        f'<p class="warn">Small samples: {small} of {len(report.rows)} groups have fewer than '
        f"{SMALL_SAMPLE} impressions (shaded). Their rates are too unsure to pick a winner.</p>"
        if small
        else ""
    )
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#111;background:#fff}}
table{{border-collapse:collapse;margin:16px 0;font-size:13px}}
th,td{{border:1px solid #ddd;padding:4px 8px}} th{{background:#f1f5f9}} td.n{{text-align:right}}
tr:nth-child(even){{background:#f8fafc}} .meta{{color:#555;font-size:12px}}
tr.small td{{color:#92400e}} .warn{{background:#fef3c7;border:1px solid #f59e0b;padding:8px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">grouped by {html.escape(", ".join(report.by))} · {report.records} records ·
{report.skipped} skipped · generated {generated} · intervals are Wilson 95 %</p>
{warning}
{_chart(report, "Click-through rate (95 % CI)", "ctr")}
{_chart(report, "Conversion rate (95 % CI)", "cr")}
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""
