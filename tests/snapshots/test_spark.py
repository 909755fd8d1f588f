"""Spark scale-out (issue 17): the same generated exports, built by PySpark in local mode and by
the embedded engine, give identical profiles, aliases and reports. Real Spark (a JVM), bounded:
sixty people plus records that make the guards fire, one local session with two shuffle
partitions (the default 8 is for real data: on a few hundred rows every partition is a task
whose start-up is the cost) and the settings in TEST_CONF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import bench.gen
from snapshots.config import ProfilesConfig, load_config
from snapshots.engine import build_profiles
from snapshots.ndjson import MAX_LINE_BYTES
from snapshots.spark_job import build_profiles_spark, spark_session
from tests.snapshots.kit import rec
from tests.snapshots.test_engine_equivalence import dump

pytestmark = pytest.mark.slow


# Settings for a few hundred rows on a cold JVM, none of which changes what the job computes: the
# job is ~130 tiny stages, each paying planning, code generation and JIT compilation far more than
# its rows. Interpreted expressions instead of Janino-compiled code, no adaptive re-planning
# between stages (each re-plan was a job of its own: 163 jobs -> 34), and the JVM's quick
# compiler only (C2's compile threads are CPU this short run never pays back) with one GC thread.
TEST_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.adaptive.enabled": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session("local[2]", conf=TEST_CONF)
    yield session
    session.stop()


def test_spark_builds_what_the_embedded_engine_builds(tmp_path: Path, spark: Any) -> None:
    data = tmp_path / "data"
    bench.gen.generate(60, 5, 7, data)
    # Guards that fire: a kiosk cookie shared by two customers (unique conflict), a chain of
    # cookies past the cap, junk, and a bad line and a bad Parquet-free NDJSON record.
    extra = [
        rec("crm", {"customer_id": "K1", "cookie": "kiosk"}),
        rec("web", {"customer_id": "K2", "cookie": "kiosk"}, "2026-11-20T11:00:00Z"),
        rec("app", {"email_sha256": bench.gen.JUNK_EMAIL, "cookie": "junk-carrier"}),
        # 34 links of a chain: 35 cookies, past the generator's max_cluster_size of 32.
        *[rec("web", {"cookie": [f"ch{i}", f"ch{i + 1}"]}) for i in range(34)],
    ]
    # A valid record on a line longer than a record may be: invalid at its line for both.
    huge = rec("crm", {"customer_id": "K3"}, attributes={"note": "x" * MAX_LINE_BYTES})
    (data / "extra.ndjson").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in [*extra, huge]) + b'{"source": "crm"\n'
    )
    cfg = load_config(data / "profiles.yaml", ProfilesConfig)
    inputs = [*(data / f"{s}.ndjson" for s in bench.gen.SOURCES), data / "extra.ndjson"]
    bench.gen.to_parquet(data / "web.ndjson", data / "web.parquet")
    inputs[1] = data / "web.parquet"  # one input as Parquet: both readers take part
    embedded = build_profiles(inputs, cfg, tmp_path / "embedded", skip_invalid=True)
    built = build_profiles_spark(inputs, cfg, tmp_path / "spark", skip_invalid=True, spark=spark)
    assert embedded.conflicts >= 1 and embedded.capped >= 1 and embedded.blocked >= 1
    assert any("longer than a record may be" in text for text in embedded.invalid)
    for f in (
        "records_read", "records_invalid", "written", "aliases", "merges", "links", "conflicts",
        "conflict_examples", "capped", "capped_examples", "blocked", "blocked_examples", "invalid",
    ):  # fmt: skip
        assert getattr(built, f) == getattr(embedded, f), f
    assert dump(tmp_path / "spark") == dump(tmp_path / "embedded")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
