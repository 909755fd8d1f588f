"""Prometheus metrics of one worker, rendered in the text exposition format.

Kept to what the hot path can afford: a counter is a dict increment, a histogram observation a
`bisect` and two increments. Labels are tuples built by the caller from values it already has.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict

# Seconds. Decisions are microseconds; HTTP round trips a fraction of a millisecond.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


# The exposition format escapes only `\\`, `"` and LF; any other control byte (a CR splits a line
# for some parsers) in a label value becomes `_`.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def _escape(value: str) -> str:
    value = _CONTROL.sub("_", value)
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """A sample value without losing digits (`:g` would print 1035871 as 1.03587e+06)."""
    value = float(value)  # gauges are set with ints too
    return str(int(value)) if value.is_integer() else repr(value)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = labels
        self.values: defaultdict[tuple[str, ...], float] = defaultdict(float)

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        self.values[labels] += amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_number(value)}")
        return lines


class Gauge(Counter):
    def set(self, labels: tuple[str, ...], value: float) -> None:
        self.values[labels] = value

    def render(self) -> list[str]:
        lines = super().render()
        lines[1] = f"# TYPE {self.name} gauge"
        return lines


class Series:
    """One label set of a histogram; a hot path holds its series and observes without lookups."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket, then +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value


class Histogram:
    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self.name = name
        self.help = help_text
        self.label_names = labels
        self.buckets = buckets
        self._series: dict[tuple[str, ...], Series] = {}

    def series(self, labels: tuple[str, ...]) -> Series:
        found = self._series.get(labels)
        if found is None:
            found = self._series[labels] = Series(self.buckets)
        return found

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        self.series(labels).observe(value)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        names = (*self.label_names, "le")
        for labels, series in sorted(self._series.items()):
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), series.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f"{self.name}_bucket{_labels(names, (*labels, le))} {running}")
            base = _labels(self.label_names, labels)
            lines.append(f"{self.name}_sum{base} {series.sum:.6f}")
            lines.append(f"{self.name}_count{base} {running}")
        return lines


class Metrics:
    """Every metric the server exports, created once per worker."""

    def __init__(self) -> None:
        self.request_seconds = Histogram(
            "edgeside_request_duration_seconds", "HTTP request latency by route.", ("route",)
        )
        self.responses = Counter(
            "edgeside_responses_total", "HTTP responses by route and status.", ("route", "status")
        )
        self.decisions = Counter(
            "edgeside_decisions_total",
            "Placement decisions by placement and variant.",
            ("placement", "variant"),
        )
        self.fallbacks = Counter(
            "edgeside_fallbacks_total", "Placements served their default, by reason.", ("reason",)
        )
        self.rule_errors = Counter(
            "edgeside_rule_errors_total", "Rules skipped because they failed at run time."
        )
        self.snapshot_version = Gauge(
            "edgeside_snapshot_info", "Active snapshot version (value 1).", ("kind", "version")
        )
        self.snapshot_loaded = Gauge(
            "edgeside_snapshot_loaded_timestamp_seconds",
            "When this worker loaded the active snapshot of a kind.",
            ("kind",),
        )
        self.snapshot_age = Gauge(
            "edgeside_snapshot_age_seconds",
            "Seconds since the active snapshot of a kind was built.",
            ("kind",),
        )
        self.snapshot_swaps = Counter(
            "edgeside_snapshot_swaps_total", "Times this worker switched to new snapshots."
        )

        self.events = Counter(
            "edgeside_events_total",
            "Events received by outcome (accepted, or the rejection code).",
            ("result",),
        )
        self.live_writes = Counter(
            "edgeside_live_events_total",
            "Live-store writes by result: events applied, dropped (no room even after eviction), "
            "visitors evicted to keep the byte budget (evicted, evicted_withdrawn), queue_dropped.",
            ("result",),
        )
        self.live_visitors = Gauge(
            "edgeside_live_visitors", "Visitors in the node's live store (as seen by this worker)."
        )
        self.live_bytes = Gauge(
            "edgeside_live_store_bytes",
            "Bytes of the live store's pages, and its byte budget's high water (docs/live.md).",
            ("what",),
        )
        self.log_records = Gauge(
            "edgeside_decision_log_records_total",
            "Decision-log records written, and dropped by reason (buffer_full, sink_down, …).",
            ("result",),
        )
        self.memo_lookups = Gauge(
            "edgeside_memo_lookups_total",
            "Memo lookups by memo (edge, fragment, decide: the very same request; decision: the "
            "same decision for another request) and result (hit, miss).",
            ("memo", "result"),
        )
        self.protocol_answers = Counter(
            "edgeside_protocol_answers_total",
            "Answers the HTTP protocol sent from an answer memo, before any ASGI request was "
            "made (server/edge/protocol.py), by route; they are in the other request metrics too.",
            ("route",),
        )
        self.protocol_decisions = Counter(
            "edgeside_protocol_decisions_total",
            "Requests no memo answered that the HTTP protocol decided and answered itself, before "
            "any ASGI request was made (server/edge/protocol.py), by route; they are in the other "
            "request metrics too.",
            ("route",),
        )
        self.loop_stall = Gauge(
            "edgeside_loop_stall_max_seconds",
            "The longest event-loop stall since the previous scrape, by source (loop: how late a "
            "wake-up was; loop_cpu: the most CPU time the loop's thread spent between two "
            "wake-ups, the rest of a stall was waiting; gc: one cyclic collection; gc0-gc2: one "
            "collection of that generation). "
            "Only with `loop_probe_ms` set.",
            ("source",),
        )
        self.triggers = Gauge(
            "edgeside_triggers_total",
            "Webhook triggers by outcome (sent, deduplicated, failed, dropped).",
            ("result",),
        )
        # Metrics of optional parts (server/fleet/), registered by them when they start.
        self.extra: list[Counter | Histogram] = []

        self.shadow_decisions = Counter(
            "edgeside_shadow_decisions_total",
            "Shadow candidate decisions (never served) by placement and result: agree, differ "
            "with the served decision, or error (placement `*`).",
            ("placement", "result"),
        )

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.shadow_decisions,
            self.events,
            self.live_writes,
            self.live_visitors,
            self.live_bytes,
            self.log_records,
            self.triggers,
            self.memo_lookups,
            self.protocol_answers,
            self.protocol_decisions,
            self.loop_stall,
            self.request_seconds,
            self.responses,
            self.decisions,
            self.fallbacks,
            self.rule_errors,
            self.snapshot_version,
            self.snapshot_loaded,
            self.snapshot_age,
            self.snapshot_swaps,
            *self.extra,
        ):
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
