"""What a build reports: counts, guards that fired (with examples), rejected lines."""

from __future__ import annotations

import msgspec

from snapshots.progress import Progress

__all__ = ["MAX_INVALID_KEPT", "BuildSummary", "Progress"]
MAX_INVALID_KEPT = 1000


class BuildSummary(msgspec.Struct):
    kind: str
    out: str
    version: str
    records_read: int
    records_invalid: int
    written: int  # profiles or content items
    seconds: float
    aliases: int = 0
    merges: int = 0  # records folded into a profile that another record started
    links: int = 0
    conflicts: int = 0
    conflict_examples: list[str] = []
    capped: int = 0
    capped_examples: list[str] = []
    blocked: int = 0
    blocked_examples: list[str] = []
    invalid: list[str] = []  # `file:line: reason`, first MAX_INVALID_KEPT
    indexes: int = 0
    engine: str = ""
    peak_rss_mb: float = 0.0  # of the building process (DuckDB runs inside it)
    temp_disk_mb: float = 0.0  # most the build's temp dir held (downloads, engine files, spill)

    @property
    def records_per_s(self) -> float:
        return self.records_read / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        what = "profiles" if self.kind == "profiles" else "items"
        out = [
            f"built {self.kind} snapshot {self.version} -> {self.out}",
            f"  records read {self.records_read}, invalid {self.records_invalid}, "
            f"{what} written {self.written} in {self.seconds:.2f}s "
            f"({self.records_per_s:,.0f} records/s)"
            + (f", peak RSS {self.peak_rss_mb:,.0f} MB" if self.peak_rss_mb else "")
            + (f", temp disk {self.temp_disk_mb:,.0f} MB" if self.temp_disk_mb else "")
            + (f" [{self.engine}]" if self.engine else ""),
        ]
        if self.kind == "profiles":
            out.append(
                f"  aliases {self.aliases}, merges {self.merges}, conflicts {self.conflicts}, "
                f"capped links {self.capped}, blocked ids {self.blocked}"
            )
        else:
            out.append(f"  index entries {self.indexes}")
        for title, examples in (
            ("conflict", self.conflict_examples),
            ("capped", self.capped_examples),
            ("blocked", self.blocked_examples),
        ):
            out.extend(f"    {title}: {e}" for e in examples)
        out.extend(f"  skipped {e}" for e in self.invalid[:50])
        if len(self.invalid) > 50:
            out.append(f"  … and {self.records_invalid - 50} more invalid records")
        return out
