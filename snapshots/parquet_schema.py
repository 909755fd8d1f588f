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


def typed_payload_expr(schema: Any) -> str:
    """SQL rendering a row as a typed payload (BLOB, see `flat`): the record's fields as they
    are, times as epoch seconds (µs / 1e6: the very double `datetime.timestamp()` gives; the
    JSON writer prints doubles round-trip). A row holding no null value anywhere is
    `flat.CLEAN` (decoded straight into a `FlatRecord`), one with nulls is `flat.LOOSE` (its
    nulls are dropped in Python). Several times cheaper for DuckDB than `payload_expr`: no
    merge patch, no time formatting."""
    cols = {f.name: f.type for f in schema}
    parts = ["source := source", "updated_at := epoch_us(updated_at)::DOUBLE / 1e6"]
    nulls: list[str] = []

    def nullable_values(c: str) -> None:
        fields = _values(cols[c]) or []
        if fields and fields[0][0] == "*":
            nulls.append(f"list_count(map_values({_q(c)})) < cardinality({_q(c)})")
        elif fields:
            nulls.extend(f"{_q(c)}.{_q(n)} IS NULL" for n, _ in fields)
        else:
            nulls.append("true")  # a struct of no fields: rare, let Python read it

    for c in ("attributes", "interests", "segments", "counters", "last_seen"):
        if c not in cols:
            continue
        nulls.append(f"{_q(c)} IS NULL")
        if c == "segments":
            nulls.append("list_count(segments) < len(segments)")
            parts.append("segments := segments")
            continue
        nullable_values(c)
        if c != "last_seen":
            parts.append(f"{c} := {_q(c)}")
            continue
        fields = _values(cols[c]) or []
        if fields and fields[0][0] == "*":
            parts.append(
                "last_seen := map(map_keys(last_seen), list_transform(map_values(last_seen), "
                "lambda x: epoch_us(x)::DOUBLE / 1e6))"
            )
        elif fields:
            inner = ", ".join(
                f"{_q(n)} := epoch_us(last_seen.{_q(n)})::DOUBLE / 1e6" for n, _ in fields
            )
            parts.append(f"last_seen := struct_pack({inner})")
    body = f"encode(to_json(struct_pack({', '.join(parts)}))::VARCHAR)"
    loose = " OR ".join(nulls) or "false"
    return f"CASE WHEN {loose} THEN '\\x02'::BLOB ELSE '\\x01'::BLOB END || {body}"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


INT64_MAX = 2**63 - 1  # a record's integers are signed 64-bit (`model.StoredInt`), as in NDJSON


def wide_attributes_sql(schema: Any) -> tuple[str, str] | None:
    """For an `attributes` column with unsigned 64-bit values — the one Parquet integer type
    that holds more than a record's integers may be — SQL for (a condition true when a row
    holds one above 2^63 - 1, the first such attribute as text: `` `name` is value``). None
    when there is no such column: every other integer fits."""
    import pyarrow.types as pt

    cols = {f.name: f.type for f in schema}
    fields = (_values(cols["attributes"]) or []) if "attributes" in cols else []
    if fields and fields[0][0] == "*":
        if not pt.is_uint64(fields[0][1]):
            return None
        big = f"list_filter(map_entries(attributes), lambda e: e.value > {INT64_MAX})"
        return (
            f"coalesce(len({big}) > 0, false)",
            f"'`' || {big}[1].key || '` is ' || {big}[1].value::VARCHAR",
        )
    wide = [n for n, t in fields if pt.is_uint64(t)]
    if not wide:
        return None
    over = {n: f"attributes.{_q(n)} > {INT64_MAX}" for n in wide}
    text = " ".join(
        f"WHEN {over[n]} THEN {_lit(f'`{n}` is ')} || attributes.{_q(n)}::VARCHAR" for n in wide
    )
    return " OR ".join(f"coalesce({o}, false)" for o in over.values()), f"CASE {text} END"


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
    # "At least one key": said per field, not by building the key list a second time (that
    # made this condition most of the read's cost).
    some: list[str] = []
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
            some.append(f"coalesce({expr} <> '', false)")
            if junk_in:
                odd.append(f"coalesce({expr} IN ({junk_in}), false)")
        else:
            parts.append(
                f"coalesce(list_transform(list_filter({expr}, lambda v: v <> ''), "
                f"lambda v: {{'k': {prefix} || v, 'r': {int(rank)}}}), [])"
            )
            some.append(f"coalesce(list_bool_or(list_transform({expr}, lambda v: v <> '')), false)")
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
    odd.append("NOT (" + (" OR ".join(some) or "false") + ")")
    plain = "NOT (ids IS NULL OR source IS NULL OR updated_at IS NULL OR " + " OR ".join(odd) + ")"
    return keys, plain


# A key's position is (rank << POS_SHIFT) + its index in the type's list: ordered as
# `IdRules.keyed` lists a record's keys, which is all positions are used for (the anchor is
# the smallest; first-seen order sorts by them).
POS_SHIFT = 32


def key_rows_sql(
    schema: Any, types: list[tuple[str, int, frozenset[str] | None, bool]], rows: str
) -> str:
    """SQL selecting `(rid, pos, val, rank)` for every key of the rows `rows` (a relation with
    columns `rid` and `ids`, plain rows only: see `keys_sql`), one branch per id type: no list
    of structs is built per row, which made this a large part of reading. The key `type:val`
    is not spelt out: the rank says the type (`stitching.key_places`)."""
    cols = {f.name: f.type for f in schema}
    fields = _values(cols["ids"]) or []
    is_map = bool(fields) and fields[0][0] == "*"
    named = dict(fields)
    branches: list[str] = []
    for t, rank, _, _ in types:
        if is_map:
            expr, ft = f"map_extract_value(ids, {_lit(t)})", fields[0][1]
        else:
            if t not in named or _is(named[t], "null"):
                continue
            expr, ft = f"ids.{_q(t)}", named[t]
        base = int(rank) << POS_SHIFT
        # Names are quoted by _q, values are SQL literals, ranks are ints.
        if _string(ft):
            inner, pos = f"SELECT rid, {expr} AS v FROM {rows}", f"{base}::BIGINT"  # noqa: S608
        else:
            inner = (
                f"SELECT rid, unnest({expr}) AS v, generate_subscripts({expr}, 1) AS i FROM {rows}"  # noqa: S608
            )
            pos = f"{base}::BIGINT + i - 1"
        branches.append(
            f"SELECT rid, {pos} AS pos, v AS val, {int(rank)} AS rank "  # noqa: S608
            f"FROM ({inner}) WHERE v <> ''"
        )
    if not branches:
        return "SELECT NULL::BIGINT AS rid, NULL::BIGINT AS pos, NULL AS val, NULL AS rank LIMIT 0"
    return " UNION ALL ".join(branches)
