"""Content builder: NDJSON from several sources → one content hub (SPEC §4) with indexes.

Each source's fields are mapped onto the hub schema by configuration; enrichment rules run;
indexes by tag, type, placement, locale and category are stored so readers answer `ids()`
without scanning. Validity windows are kept as they are: filtering by time is the reader's job.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from snapshots.config import ContentConfig, SourceConfig
from snapshots.enrich import enrich
from snapshots.errors import InputInvalid, InputUnreadable
from snapshots.inputs import InputFile, resolve_inputs, source_digests
from snapshots.model import ContentItem, Scalar, TzDatetime
from snapshots.ndjson import LineError, read_ndjson
from snapshots.summary import MAX_INVALID_KEPT, BuildSummary, Progress
from snapshots.writer import write_snapshot

if TYPE_CHECKING:
    from snapshots.engine import EngineOptions

ITEMS_DB = "items"
INDEX_DB = "index"
INDEXED = (("tag", "tags"), ("type", "type"), ("placement", "placements"),
           ("locale", "locale"), ("category", "categories"))  # fmt: skip


class HubRecord(msgspec.Struct, frozen=True):
    """The hub schema as it arrives, after mapping: dates are still ISO-8601 here."""

    id: str
    source: str
    type: str
    title: str
    locale: str | None = None
    tags: list[str] = []
    categories: list[str] = []
    placements: list[str] = []
    attributes: dict[str, Scalar] = {}
    valid_from: TzDatetime | None = None
    valid_to: TzDatetime | None = None
    published_at: TzDatetime | None = None
    priority: float = 0.0
    body: str = ""
    template: str | None = None
    fields: dict[str, str] = {}


HUB_FIELDS = frozenset(HubRecord.__struct_fields__)
LIST_FIELDS = ("tags", "categories", "placements")
_MISSING = object()


def _get(rec: object, path: str) -> object:
    cur = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def normalise(rec: dict[str, object], source: str, cfg: SourceConfig) -> dict[str, object]:
    """Map one source record onto the hub's field names (types are checked afterwards)."""
    hub: dict[str, object] = {k: v for k, v in rec.items() if k in HUB_FIELDS}
    for name in ("attributes", "fields"):
        if isinstance(hub.get(name), dict):
            hub[name] = dict(hub[name])  # type: ignore[call-overload]
    for target, path in cfg.fields.items():
        value = _get(rec, path)
        if value is not _MISSING:
            _set(hub, target, value)
    for target, value in cfg.defaults.items():
        if _get(hub, target) is _MISSING:
            _set(hub, target, value)
    for name in LIST_FIELDS:
        if isinstance(hub.get(name), str):
            hub[name] = [hub[name]]  # a source with one category per item is common
    hub["source"] = source
    if cfg.id_prefix and isinstance(hub.get("id"), str):
        hub["id"] = cfg.id_prefix + str(hub["id"])
    return hub


def _set(hub: dict[str, object], target: str, value: object) -> None:
    group, _, key = target.partition(".")
    if not key:
        hub[group] = value
        return
    sub = hub.get(group)
    if not isinstance(sub, dict):
        sub = {}
        hub[group] = sub
    sub[key] = value


def _ts(d: object) -> float | None:
    return None if d is None else d.timestamp()  # type: ignore[attr-defined]


def _rows(
    f: InputFile, decoder: msgspec.json.Decoder[dict[str, object]]
) -> Iterator[tuple[str, dict[str, object] | LineError]]:
    """(where, record or error) of one input: NDJSON lines, or Parquet rows read by DuckDB and
    rendered as the JSON object each row is (timestamps as RFC 3339, UTC)."""
    if f.format == "ndjson":
        for lineno, rec in read_ndjson(f.local, decoder):
            yield f"{f.name}:{lineno}", rec
        return
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from snapshots.parquet_schema import quote_ident, rfc3339_sql

    try:
        schema = pq.read_schema(f.local)
    except (pa.ArrowException, OSError) as exc:
        raise InputUnreadable(
            f"{f.name}: not a readable Parquet file (truncated or not Parquet): {exc}"
        ) from None
    # Timestamps become RFC 3339 strings, as they are in NDJSON (DuckDB's JSON would say
    # "2026-01-01 10:00:00+00", which is not RFC 3339).
    cols = ", ".join(
        f"{quote_ident(fld.name)} := "
        + (
            rfc3339_sql(quote_ident(fld.name))
            if pa.types.is_timestamp(fld.type)
            else quote_ident(fld.name)
        )
        for fld in schema
    )
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    try:
        reader = con.sql(
            f"SELECT file_row_number, to_json(struct_pack({cols}))::VARCHAR "  # noqa: S608
            "FROM read_parquet(?, file_row_number = true) ORDER BY file_row_number",
            params=[f.local],
        ).to_arrow_reader(10_000)
        for batch in reader:
            rows = batch.column(0).to_pylist()
            for row, js in zip(rows, batch.column(1).to_pylist(), strict=True):
                rec = {k: v for k, v in decoder.decode(js).items() if v is not None}
                yield f"{f.name}:row {row + 1}", rec
    except duckdb.Error as exc:
        raise InputUnreadable(f"{f.name}: cannot read Parquet: {exc}") from None
    finally:
        con.close()


def build_content(
    inputs: list[Path] | list[str] | list[Path | str],
    cfg: ContentConfig,
    out: Path,
    *,
    skip_invalid: bool = False,
    signing_key: bytes | None = None,
    progress: Progress | None = None,
    force: bool = False,
    now: float | None = None,
    options: EngineOptions | None = None,
) -> BuildSummary:
    """Content goes through the profiles' input layer (paths, globs, s3://, NDJSON or Parquet)
    and DuckDB for Parquet; the items themselves are few, so they are mapped in Python."""
    out = Path(out)
    base = Path(options.temp_dir) if options and options.temp_dir else out.parent
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".edgeside-build-", dir=base))
    try:
        files = resolve_inputs(list(inputs), work, options.input_format if options else None)
        return _build_content(files, cfg, out, skip_invalid, signing_key, progress, force, now)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_content(
    files: list[InputFile],
    cfg: ContentConfig,
    out: Path,
    skip_invalid: bool,
    signing_key: bytes | None,
    progress: Progress | None,
    force: bool,
    now: float | None,
) -> BuildSummary:
    t0 = time.perf_counter()
    ref = cfg.reference_time.timestamp() if cfg.reference_time else (now or time.time())
    decoder = msgspec.json.Decoder(dict[str, object])
    items: dict[str, ContentItem] = {}
    first_seen: dict[str, str] = {}
    invalid: list[str] = []
    n_invalid = 0
    read = 0

    def bad(where: str, reason: str) -> None:
        nonlocal n_invalid
        n_invalid += 1
        if len(invalid) < MAX_INVALID_KEPT:
            invalid.append(f"{where}: {reason}")

    for f in files:
        stem = Path(f.name.rsplit("/", 1)[-1]).stem
        for where, rec in _rows(f, decoder):
            read += 1
            if progress is not None and read % 100_000 == 0:
                progress("read", read)
            if isinstance(rec, LineError):
                bad(where, rec.reason)
                continue
            src_name = rec.get("source")
            if not isinstance(src_name, str):
                src_name = stem
            src = cfg.sources.get(src_name)
            if src is None:
                bad(where, f"unknown source {src_name!r}; configured: {sorted(cfg.sources)}")
                continue
            try:
                hub = msgspec.convert(normalise(rec, src_name, src), HubRecord)
            except msgspec.ValidationError as exc:
                bad(where, f"invalid item: {exc}")
                continue
            if not hub.id:
                bad(where, "empty `id`")
                continue
            if hub.valid_from and hub.valid_to and hub.valid_from > hub.valid_to:
                bad(where, f"valid_from {hub.valid_from} is after valid_to {hub.valid_to}")
                continue
            if hub.id in items:
                bad(where, f"duplicate content id {hub.id!r} (first at {first_seen[hub.id]})")
                continue
            items[hub.id] = enrich(_item(hub), cfg.enrich, ref)
            first_seen[hub.id] = where

    if n_invalid and not skip_invalid:
        raise InputInvalid(invalid, n_invalid)

    index = _index(items)
    encode = msgspec.msgpack.Encoder().encode
    item_pairs = sorted((k.encode(), encode(v)) for k, v in items.items())
    index_pairs = sorted((k.encode(), encode(sorted(v))) for k, v in index.items())
    manifest = write_snapshot(
        out,
        {ITEMS_DB: item_pairs, INDEX_DB: index_pairs},
        kind="content",
        counts={"items": len(item_pairs), "index_keys": len(index_pairs)},
        sources=source_digests(files),
        signing_key=signing_key,
        force=force,
    )
    return BuildSummary(
        kind="content",
        out=str(out),
        version=manifest.version,
        records_read=read,
        records_invalid=n_invalid,
        written=len(item_pairs),
        seconds=time.perf_counter() - t0,
        indexes=len(index_pairs),
        invalid=invalid,
    )


def _item(hub: HubRecord) -> ContentItem:
    """A checked hub record as the item the snapshot stores (sets sorted, times as epochs)."""
    return ContentItem(
        id=hub.id,
        source=hub.source,
        type=hub.type,
        title=hub.title,
        locale=hub.locale,
        tags=sorted(set(hub.tags)),
        categories=sorted(set(hub.categories)),
        placements=sorted(set(hub.placements)),
        attributes=hub.attributes,
        valid_from=_ts(hub.valid_from),
        valid_to=_ts(hub.valid_to),
        published_at=_ts(hub.published_at),
        priority=hub.priority,
        body=hub.body,
        template=hub.template,
        fields=hub.fields,
    )


def _index(items: dict[str, ContentItem]) -> dict[str, list[str]]:
    """`field:value` -> the ids of the items holding it, for every indexed field."""
    index: dict[str, list[str]] = {}
    for item in items.values():
        for field, attr in INDEXED:
            raw = getattr(item, attr)
            values = raw if isinstance(raw, list) else ([] if raw is None else [raw])
            for v in values:
                index.setdefault(f"{field}:{v}", []).append(item.id)
    return index
