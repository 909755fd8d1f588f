"""Phase 2, stitch, second half: persons from the components. A component with at most one value
of each unique type and no more identifiers than the cap is a person as it stands; the rare
others (the guards fire) are split by the original sequential union-find
(`identity.split_component`), so links refused, conflict reports and the cluster cap are exactly
what the old builder did. Persons are numbers from here on (no key text is a join, group or sort
key again)."""

from __future__ import annotations

from typing import Any, NamedTuple

from snapshots.engine.components import Nodes, Slots, components
from snapshots.engine.session import Session
from snapshots.identity import first_examples, split_component


class Persons:
    """Stitching's result, numpy arrays: person numbers by node and by record slot, each
    person's best node and whether it has records. The later phases drop what they were the
    last to read."""

    def __init__(
        self,
        nodes: Nodes,
        slots: Slots,
        has_rec: Any,
        node_person: Any,
        slot_person: Any,
        person_best: Any,
        has_person: Any,
    ) -> None:
        self.nodes = nodes
        self.slots = slots
        self.has_rec = has_rec  # by record slot: a record is there
        self.node_person = node_person
        self.slot_person = slot_person
        self.person_best = person_best  # by person: its best node (-1: a label split up)
        self.has_person = has_person  # by person: it has records


class Links(NamedTuple):
    """What stitching linked and refused, for the build's summary."""

    links: int
    conflicts: int
    capped: int
    conflict_examples: list[str]
    capped_examples: list[str]


def stitch(session: Session) -> tuple[Persons, Links]:
    """Give every node and record its person number: the component's label, or fresh
    numbers past the labels for the persons `split_component` makes of a component whose
    guards fire; each person's best node. Return them and the link counts and examples."""
    import numpy as np
    import pyarrow as pa

    graph = components(session)
    nodes, slots, has_rec = graph.nodes, graph.slots, graph.has_rec
    n_nodes, n_comp = graph.n_nodes, graph.n_comp
    comp, slot_labels = graph.node_labels, graph.slot_labels
    rank = graph.node_rank.astype(np.int64)
    del graph
    con = session.con
    cap = session.cfg.max_cluster_size
    size = np.bincount(comp, minlength=n_comp)
    dirty = size > cap
    for r in session.rules.unique_ranks:
        dirty |= np.bincount(comp[rank == r], minlength=n_comp) > 1
    clean = (size > 0) & ~dirty
    links = int(size[clean].sum()) - int(np.count_nonzero(clean))
    # Best key = smallest (rank, key) = smallest (rank, node).
    best = np.full(n_comp, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(best, comp, (rank << 32) | np.arange(n_nodes, dtype=np.int64))
    del rank
    person_best = np.where(clean, best & 0xFFFFFFFF, -1).astype(np.int32)
    del best, size
    node_person, slot_person = comp, slot_labels
    del slot_labels, comp
    conflicts = capped = 0
    conflict_ex: list[tuple[int, int, str]] = []
    capped_ex: list[tuple[int, int, str]] = []
    fresh_best: list[int] = []
    if dirty.any():
        dirty_nodes = np.flatnonzero(dirty[node_person]).astype(np.int32)
        cur = con.cursor()
        cur.register("dirty_nodes", pa.table({"node": dirty_nodes}))
        # Their keys' values: past `type:` (a substring counts characters, as len() does).
        start = " ".join(f"WHEN {r} THEN {len(t) + 2}" for r, t in enumerate(session.rules.order))
        rows = cur.execute(
            f"""SELECT i.rid, list(n.key ORDER BY i.pos), list(n.node ORDER BY i.pos)
               FROM ids i JOIN (
                   SELECT node, key, rank, substr(key, CASE rank {start} END) AS val
                   FROM {nodes.sql()}
                   WHERE node IN (SELECT node FROM dirty_nodes)
               ) n ON i.rank = n.rank AND i.val = n.val
               GROUP BY i.rid"""  # noqa: S608
        ).fetchall()
        cur.close()
        # A record's identifiers are all in its component; components in label order,
        # each one's records in input order (split_component's contract).
        rows.sort(key=lambda r: (int(node_person[r[2][0]]), r[0]))
        unique, by_type = session.rules.unique, session.rules.rank
        node_fix: list[int] = []
        node_to: list[int] = []
        rec_fix: list[int] = []
        rec_to: list[int] = []
        nxt = n_comp
        i = 0
        while i < len(rows):
            c = node_person[rows[i][2][0]]
            j = i
            while j < len(rows) and node_person[rows[j][2][0]] == c:
                j += 1
            group = rows[i:j]
            node_of = {k: n for _, keys, nos in group for k, n in zip(keys, nos, strict=True)}
            split = split_component(((rid, keys) for rid, keys, _ in group), by_type, unique, cap)
            links += split.links
            conflicts += split.conflicts
            capped += split.capped
            conflict_ex.extend(split.conflict_examples)
            capped_ex.extend(split.capped_examples)
            person_of: dict[str, int] = {}
            for key, bkey in split.node_best.items():
                q = person_of.get(bkey)
                if q is None:
                    q = person_of[bkey] = nxt
                    nxt += 1
                    fresh_best.append(node_of[bkey])
                node_fix.append(node_of[key])
                node_to.append(q)
            for rid, bkey in split.record_best.items():
                rec_fix.append(rid)
                rec_to.append(person_of[bkey])
            i = j
        # Fixed after the loop: the loop groups rows by the labels it reads.
        node_person[np.array(node_fix, np.int64)] = node_to
        slot_person[slots.of(np.array(rec_fix, np.int64))] = rec_to
    person_best = np.concatenate([person_best, np.array(fresh_best, np.int32)])
    # A person is one with records. A split can leave identifiers whose every link was
    # refused and on which no record is anchored: like the original builder, they get
    # neither a profile nor an alias.
    has_person = np.zeros(len(person_best), bool)
    has_person[slot_person[has_rec]] = True
    con.execute("DROP TABLE ids")
    session.measure()
    persons = Persons(nodes, slots, has_rec, node_person, slot_person, person_best, has_person)
    return persons, Links(
        links,
        conflicts,
        capped,
        first_examples(conflict_ex),
        first_examples(capped_ex),
    )
