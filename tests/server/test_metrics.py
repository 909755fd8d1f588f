"""The Prometheus text the metrics render to."""

from __future__ import annotations

from server.metrics import Counter, Gauge


def test_large_counts_keep_every_digit() -> None:
    # A rate over a counter printed as 1.03587e+06 moves in steps of ten.
    counter = Counter("edgeside_x_total", "x", ("route",))
    counter.inc(("edge",), 1_035_871)
    counter.inc(("fragment",), 0.5)
    assert counter.render()[2:] == [
        'edgeside_x_total{route="edge"} 1035871',
        'edgeside_x_total{route="fragment"} 0.5',
    ]


def test_gauges_set_with_ints_render_as_ints() -> None:
    gauge = Gauge("edgeside_y", "y", ("kind",))
    gauge.set(("profiles",), 3)
    assert gauge.render()[1:] == ["# TYPE edgeside_y gauge", 'edgeside_y{kind="profiles"} 3']
