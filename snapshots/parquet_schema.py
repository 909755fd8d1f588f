"""What a Parquet profile export must look like, and the SQL that turns its rows into records.

The columns are the NDJSON record's fields (SPEC §4), typed the way warehouses unload them:

| column | Arrow type |
|---|---|
| `source` | string |
| `ids` | struct of id types, each string or list<string>; or map<string, string or list<string>> |
| `updated_at` | timestamp with a time zone (a naive timestamp is refused: its instant is unknown) |
| `attributes` | struct or map of scalars (string, bool, integer, floating, decimal) |
| `interests`, `counters` | struct or map of numbers |
| `segments` | list<string> |
| `last_seen` | struct or map of timestamps with a time zone |

Only the first three are required. Nulls inside `attributes`, `interests`, `counters` and
`last_seen` mean "not set" (a struct column has every field on every row), so they are dropped.
Any other column is refused, as unknown fields are in NDJSON.
"""

from __future__ import annotations

from typing import Any

from snapshots.errors import InputUnreadable

REQUIRED = ("source", "ids", "updated_at")
OPTIONAL = ("attributes", "interests", "segments", "counters", "last_seen")
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _is(t: Any, *names: str) -> bool:
    import pyarrow.types as pt

    return any(getattr(pt, "is_" + n)(t) for n in names)


def _string(t: Any) -> bool:
    return bool(_is(t, "string", "large_string", "string_view"))


def _string_list(t: Any) -> bool:
    return bool(_is(t, "list", "large_list")) and _string(t.value_type)


def _number(t: Any) -> bool:
    return bool(_is(t, "integer", "floating", "decimal"))


def _scalar(t: Any) -> bool:
    return _string(t) or _number(t) or bool(_is(t, "boolean", "null"))


def _tz_ts(t: Any) -> bool:
    return bool(_is(t, "timestamp")) and t.tz is not None


def _values(t: Any) -> list[tuple[str, Any]] | None:
    """(name, type) of a struct's fields, or [("*", value type)] for a map; None otherwise."""
    if _is(t, "struct"):
        return [(t.field(i).name, t.field(i).type) for i in range(t.num_fields)]
    if _is(t, "map") and _string(t.key_type):
        return [("*", t.item_type)]
    return None


CHECKS = {
    "attributes": (_scalar, "scalars (string, number, boolean)"),
    "interests": (_number, "numbers"),
    "counters": (_number, "numbers"),
    "last_seen": (_tz_ts, "timestamps with a time zone"),
}


def check_profiles_schema(name: str, schema: Any) -> None:
    """Refuse a file whose columns are missing, unknown or of the wrong type, naming each."""
    problems: list[str] = []
    cols = {f.name: f.type for f in schema}
    problems += [f"missing column `{c}`" for c in REQUIRED if c not in cols]
    problems += [
        f"unknown column `{c}`; expected {REQUIRED + OPTIONAL}"
        for c in cols
        if c not in REQUIRED and c not in OPTIONAL
    ]
    if "source" in cols and not _string(cols["source"]):
        problems.append(f"column `source` is {cols['source']}, expected string")
    if "updated_at" in cols and not _tz_ts(cols["updated_at"]):
        problems.append(
            f"column `updated_at` is {cols['updated_at']}, expected a timestamp with a time zone"
        )
    if "ids" in cols:
        fields = _values(cols["ids"])
        if fields is None:
            problems.append(f"column `ids` is {cols['ids']}, expected a struct or map")
        else:
            for fname, ft in fields:
                if not (_string(ft) or _string_list(ft) or _is(ft, "null")):
                    problems.append(
                        f"column `ids.{fname}` is {ft}, expected string or list<string>"
                    )
    if "segments" in cols and not _string_list(cols["segments"]):
        problems.append(f"column `segments` is {cols['segments']}, expected list<string>")
    for c, (ok, what) in CHECKS.items():
        if c not in cols:
            continue
        fields = _values(cols[c])
        if fields is None:
            problems.append(f"column `{c}` is {cols[c]}, expected a struct or map of {what}")
            continue
        for fname, ft in fields:
            if not (ok(ft) or _is(ft, "null")):
                problems.append(f"column `{c}.{fname}` is {ft}, expected {what}")
    if problems:
        raise InputUnreadable(f"{name}: " + "; ".join(problems))


def quote_ident(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def rfc3339_sql(expr: str) -> str:
    """SQL rendering a timestamp with a time zone as RFC 3339 in UTC."""
    return f"strftime({expr} AT TIME ZONE 'UTC', '{TS_FORMAT}')"


_q = quote_ident
_ts = rfc3339_sql


def payload_sql(schema: Any) -> str:
    """SELECT row number (from 0), source-is-null, updated_at-is-null, ids as JSON, and the
    record as the NDJSON line it would have been (ids left out: they travel separately)."""
    cols = {f.name: f.type for f in schema}
    parts = [
        "'source', source",
        "'ids', '{}'::JSON",
        f"'updated_at', {_ts('updated_at')}",
    ]
    parts += [
        f"'{c}', coalesce(json_merge_patch('{{}}', to_json({_q(c)})), '{{}}')"
        for c in ("attributes", "interests", "counters")
        if c in cols
    ]
    if "segments" in cols:
        parts.append(
            "'segments', coalesce(to_json(list_filter(segments, lambda s: s IS NOT NULL)), '[]')"
        )
    if "last_seen" in cols:
        fields = _values(cols["last_seen"]) or []
        if fields and fields[0][0] == "*":
            seen = (
                "to_json(map_from_entries(list_transform(list_filter(map_entries(last_seen), "
                "lambda e: e.value IS NOT NULL), lambda e: {'k': e.key, 'v': "
                + _ts("e.value")
                + "})))"
            )
        else:
            inner = ", ".join(f"{_q(n)} := {_ts('last_seen.' + _q(n))}" for n, _ in fields)
            seen = f"json_merge_patch('{{}}', to_json(struct_pack({inner})))" if inner else "'{}'"
        parts.append(f"'last_seen', coalesce({seen}, '{{}}')")
    # Column names are quoted by _q; the file path is a parameter.
    return (
        "SELECT file_row_number, source IS NULL, updated_at IS NULL, to_json(ids), "  # noqa: S608
        f"json_object({', '.join(parts)})::VARCHAR "
        "FROM read_parquet(?, file_row_number = true) ORDER BY file_row_number"
    )
