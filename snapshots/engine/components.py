"""Phase 2, stitch, first half: one sorted pass over the identifiers numbers their keys (the nodes
file, in key order) and yields, as int arrays, an edge from each identifier's node to its record's
anchor node; scipy's connected components labels that graph of nodes in C."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

from snapshots.engine.session import Session, sql_literal
from snapshots.errors import BuildFailed
from snapshots.identity import RID_FILE_SHIFT
from snapshots.stitching import key_places

RID_LINE_MASK = (1 << RID_FILE_SHIFT) - 1


class Slots:
    """Where each file's records start among the graph's record vertices: record `rid` is slot
    `base[file] + line`. Lines that are not records (invalid, blank) are slots too, isolated
    vertices nothing refers to; dense enough, and no lookup table."""

    def __init__(self, base: Any) -> None:
        self.base = base

    @classmethod
    def of_recs(cls, con: Any) -> Slots:
        """The slots of the records in `recs`."""
        import numpy as np

        rows = con.execute(
            f"SELECT rid >> {RID_FILE_SHIFT}, max(rid & {RID_LINE_MASK}) FROM recs GROUP BY 1"  # noqa: S608
        ).fetchall()
        n_files = max((int(f) for f, _ in rows), default=-1) + 1
        lines = np.zeros(n_files, np.int64)
        for f, last in rows:
            lines[int(f)] = int(last) + 1
        base = np.zeros(n_files + 1, np.int64)
        np.cumsum(lines, out=base[1:])
        return cls(base)

    def of(self, rids: Any) -> Any:
        """The slots of record ids (numpy)."""
        return self.base[rids >> RID_FILE_SHIFT] + (rids & RID_LINE_MASK)

    def rids(self, slots: Any) -> Any:
        """The record ids of slots (numpy)."""
        import numpy as np

        f = np.searchsorted(self.base, slots, side="right") - 1
        return (f << RID_FILE_SHIFT) | (slots - self.base[f])


class Nodes:
    """The nodes file: node, key, rank, first_rid, first_pos; one row per identifier key, in
    node order (= key order)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def sql(self) -> str:
        return f"read_parquet({sql_literal(self.path)})"

    def batches(self, session: Session, columns: list[str]) -> Iterator[Any]:
        import pyarrow.parquet as pq

        # Not pre-buffered: pyarrow's default reads every row group's columns ahead, so a pass
        # held the whole file (1.3 GB at 10 M people) however small its batches; and each
        # batch's memory handed back once used (else a pass leaves ~3 × more held).
        with pq.ParquetFile(self.path, pre_buffer=False) as f:
            for batch in f.iter_batches(batch_size=session.batch, columns=columns):
                yield batch
                del batch
                session.release()


class Graph(NamedTuple):
    """The components of the identifiers' graph, and what stitching goes on with."""

    nodes: Nodes
    slots: Slots
    has_rec: Any  # by record slot: a record is there
    n_nodes: int
    n_comp: int
    node_labels: Any  # each node's component
    slot_labels: Any  # each record slot's component
    node_rank: Any  # each node's type rank


def spelt_keys(names: list[str], rank: Any, vals: Any) -> Any:
    """The keys `type:value` of identifiers given as their types' ranks (numpy, ascending in
    the types' places: runs of one type) and values (Arrow strings)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    cuts = [0, *(np.flatnonzero(rank[1:] != rank[:-1]) + 1).tolist(), len(rank)]
    parts = [
        pc.binary_join_element_wise(names[int(rank[a])], vals.slice(a, b - a), ":")
        for a, b in pairwise(cuts)
        if b > a
    ]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def components(session: Session) -> Graph:
    """Number identifier keys (the nodes file, in node = key order, with each one's rank and
    first-seen (record, position)), then label the connected components of the graph of
    nodes (linked when a record carries both) with scipy, on int arrays."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    con = session.con
    session.tick("stitch", 0, None)
    n_ids: int = con.execute("SELECT count(*) FROM ids").fetchone()[0]
    slots = Slots.of_recs(con)
    n_slots = int(slots.base[-1])
    if n_slots >= 1 << 32 or n_ids + n_slots >= 1 << 31:
        raise BuildFailed(f"{n_slots} input lines: more than this engine numbers (2^31)")
    nodes = Nodes(session.work / "nodes.parquet")
    # The one pass over identifier text: sorted by key (then record, position), a key's
    # rows are adjacent and its first row is where it was first seen. Keys sort as (their
    # type's place, value) do (`key_places`): sorting those, narrower and with no prefix
    # shared by a type's every key, cost 30 % less CPU (1 M people). Node numbers are
    # counted off the sorted stream — key (byte) order, so a person's best key is its
    # smallest (rank, node) and the alias index is written in node order — and each
    # row's edge node -> record slot goes straight into int arrays: no aggregate, join,
    # window or edge table on text. The nodes go to a Parquet file in node order: the
    # alias index reads it as it stands, and inserting into a table while the stream
    # read `ids` made dropping `ids` cost seconds.
    names = session.rules.order  # by rank
    try:
        place = key_places(names)
    except ValueError as exc:
        raise BuildFailed(str(exc)) from None
    rank_at = np.empty(len(names), np.int32)  # by place
    rank_at[place] = np.arange(len(names), dtype=np.int32)
    place_sql = " ".join(f"WHEN {r} THEN {p}" for r, p in enumerate(place))
    place_type = "UTINYINT" if len(names) <= 256 else "INTEGER"
    node_col = np.empty(n_ids, np.int32)
    slot_col = np.empty(n_ids, np.int32)
    ranks: list[Any] = []
    n_nodes = 0
    at = 0
    last: Any = None
    cur = con.cursor()
    schema = pa.schema([("node", pa.int32()), ("key", pa.string()), ("rank", pa.int32()),
                        ("first_rid", pa.int64()), ("first_pos", pa.int64())])  # fmt: skip
    # Dictionaries only where values repeat: for the unique keys and numbers Arrow built one
    # per row group only to drop it; and no statistics: every reader scans the whole file.
    # 1 M people: writing it 2.7 -> 0.9 s wall (loaded), 0.56 -> 0.17 CPU s (80 -> 86 MB).
    out = pq.ParquetWriter(
        nodes.path,
        schema,
        compression="none",
        use_dictionary=["rank", "first_pos"],
        write_statistics=False,
    )
    try:
        # Ranks and places are ints (`key_places`).
        reader = cur.sql(
            f"SELECT val, rid, pos, (CASE rank {place_sql} END)::{place_type} AS t "  # noqa: S608
            "FROM ids ORDER BY t, val, rid, pos"
        ).to_arrow_reader(session.batch)
        for batch in reader:
            k = batch.num_rows
            if not k:
                continue
            vals = batch.column(0)
            t = batch.column(3).to_numpy()
            new = np.empty(k, bool)
            new[0] = last is None or last != (int(t[0]), vals[0].as_py())
            if k > 1:
                new[1:] = pc.not_equal(vals.slice(1), vals.slice(0, k - 1)).to_numpy(
                    zero_copy_only=False
                )
                new[1:] |= t[1:] != t[:-1]
            node_no = np.cumsum(new, dtype=np.int64) + (n_nodes - 1)
            node_col[at : at + k] = node_no
            rids = batch.column(1)
            slot_col[at : at + k] = slots.of(rids.to_numpy())
            first = np.flatnonzero(new)
            starts = pa.array(first)
            rank = rank_at[t[first]]
            keys = spelt_keys(names, rank, vals.take(starts))
            out.write_table(pa.Table.from_arrays([
                pa.array(node_no[new].astype(np.int32)), keys, pa.array(rank),
                rids.take(starts), batch.column(2).take(starts)], schema=schema))  # fmt: skip
            ranks.append(rank)
            n_nodes += len(first)
            at += k
            last = (int(t[k - 1]), vals[k - 1].as_py())
    finally:
        cur.close()
        out.close()
    if at != n_ids:
        raise BuildFailed(f"build engine lost identifiers: {at} of {n_ids} read")
    node_rank = np.concatenate(ranks) if ranks else np.zeros(0, np.int32)
    has_rec = np.zeros(n_slots, bool)
    has_rec[slot_col] = True
    session.measure()
    session.release()
    # The graph of the nodes alone: a record joins its identifiers, so an edge from each
    # of them to one of them (the record's anchor here: any will do) links what the
    # record links, and the record is in its anchor's component. A graph of nodes and
    # records had 1.7 × the vertices and an edge more per record, and scipy copies a
    # graph twice (float64 weights, the transpose): labelling this one takes ~0.7 GB at
    # 10 M people (measured).
    anchor = np.zeros(n_slots, np.int32)  # 0 for lines that are no record: never read
    anchor[slot_col] = node_col
    np.take(anchor, slot_col, out=slot_col)
    link = node_col != slot_col
    src = node_col[link]
    del node_col
    dst = slot_col[link]
    del slot_col, link
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n_nodes, n_nodes)).tocsr()
    del src, dst
    n_comp, labels = connected_components(graph, directed=False)
    del graph
    slot_labels = labels[anchor] if n_nodes else anchor
    session.tick("stitch", n_nodes, n_nodes)
    return Graph(nodes, slots, has_rec, n_nodes, int(n_comp), labels, slot_labels, node_rank)
