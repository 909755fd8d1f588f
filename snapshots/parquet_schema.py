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
    # Column names are quoted by _q; the file path is a parameter.
    return (
        "SELECT file_row_number, source IS NULL, updated_at IS NULL, to_json(ids), "  # noqa: S608
        f"{payload_expr(schema)} "
        "FROM read_parquet(?, file_row_number = true) ORDER BY file_row_number"
    )


def payload_expr(schema: Any) -> str:
    """SQL rendering a row as the NDJSON line it would have been (ids left out), VARCHAR."""
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
    return f"json_object({', '.join(parts)})::VARCHAR"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def keys_sql(
    schema: Any, types: list[tuple[str, int, frozenset[str] | None, bool]]
) -> tuple[str, str]:
    """SQL over a row's `ids` column: (its keys as a list of {'k': 'type:value', 'r': rank} in
    priority order, a condition true when the row is *plain*). A plain row is one for which
    `IdRules.keyed` gives exactly those keys, no problem and nothing blocked: every id field is
    a configured type, no value is blocklisted, no list holds a null or (for a unique type) two
    values, and at least one key remains. Other rows — rare — go through `keyed` itself, so
    reports and errors stay the original builder's. `types` is `IdRules.tinfo`."""
    cols = {f.name: f.type for f in schema}
    fields = _values(cols["ids"]) or []
    is_map = bool(fields) and fields[0][0] == "*"
    configured = {t for t, _, _, _ in types}
    parts: list[str] = []
    odd: list[str] = []
    if is_map:
        listed = ", ".join(_lit(t) for t, _, _, _ in types)
        odd.append(
            "len(list_filter(map_entries(ids), lambda e: e.value IS NOT NULL "
            f"AND e.key NOT IN ({listed}))) > 0"
        )
        vtype = fields[0][1]
    else:
        named = dict(fields)
        odd += [f"ids.{_q(n)} IS NOT NULL" for n, ft in fields if n not in configured
                and not _is(ft, "null")]  # fmt: skip
    for t, rank, junk, unique in types:
        if is_map:
            expr, ft = f"map_extract_value(ids, {_lit(t)})", vtype
        else:
            if t not in named or _is(named[t], "null"):
                continue
            expr, ft = f"ids.{_q(t)}", named[t]
        prefix = _lit(t + ":")
        junk_in = ", ".join(_lit(j) for j in sorted(junk)) if junk else ""
        if _string(ft):
            parts.append(
                f"CASE WHEN {expr} IS NOT NULL AND {expr} <> '' "
                f"THEN [{{'k': {prefix} || {expr}, 'r': {int(rank)}}}] ELSE [] END"
            )
            if junk_in:
                odd.append(f"coalesce({expr} IN ({junk_in}), false)")
        else:
            parts.append(
                f"coalesce(list_transform(list_filter({expr}, lambda v: v <> ''), "
                f"lambda v: {{'k': {prefix} || v, 'r': {int(rank)}}}), [])"
            )
            odd.append(f"coalesce(list_count({expr}) <> len({expr}), false)")
            if junk_in:
                odd.append(
                    f"coalesce(len(list_filter({expr}, lambda v: v IN ({junk_in}))) > 0, false)"
                )
            if unique:
                odd.append(f"coalesce(len(list_distinct({expr})) > 1, false)")
    keys = "[]::STRUCT(k VARCHAR, r INTEGER)[]"
    for part in parts:
        keys = f"list_concat({keys}, {part})"
    odd.append(f"len({keys}) = 0")
    plain = "NOT (ids IS NULL OR source IS NULL OR updated_at IS NULL OR " + " OR ".join(odd) + ")"
    return keys, plain
