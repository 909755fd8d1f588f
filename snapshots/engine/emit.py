"""Phases 3 and 4, merge and write: the snapshot's two streams, in key order. Profiles: persons
cut a group at a time from two sorted streams (`persons_file`) and merged by the pool's workers;
aliases: the nodes file as it stands, each key with its person's canonical id."""

from __future__ import annotations

from collections.abc import Iterator

from snapshots.engine.canonical import CID_WIDTH, Canonical
from snapshots.engine.persons import Persons
from snapshots.engine.session import Session

# Persons per group cut from the sorted persons: one merge task (~10 MB of JSON).
PERSON_GROUP = 16_384


def profiles(
    session: Session, persons: Persons, canon: Canonical, n_profiles: int
) -> Iterator[tuple[bytes, bytes]]:
    """(canonical id, profile) in canonical-id order. Drops `persons.slot_person` and
    `persons.has_rec`, and the table `recs`: nothing reads them later."""
    import numpy as np
    import pyarrow as pa

    from snapshots.persons_file import person_groups

    con = session.con
    # The merge phase starts here: the two sorts below (records with their payloads, and
    # keys) run before the first group is cut, and are the merge's input, not stitching.
    session.tick("merge", 0, n_profiles)
    # Records sorted by (person, input order) as one int: person << 32 | slot.
    slots = np.flatnonzero(persons.has_rec)
    key = (canon.order[persons.slot_person[slots]].astype(np.int64) << 32) | slots
    rc = con.cursor()
    rc.register("rec_order", pa.table({"rid": persons.slots.rids(slots), "k": key}))
    del slots, key
    persons.slot_person = persons.has_rec = None
    records = rc.sql(
        "SELECT (o.k >> 32)::INTEGER AS p, r.payload FROM recs r "
        "JOIN rec_order o USING (rid) ORDER BY o.k"
    ).to_arrow_reader(min(session.batch, PERSON_GROUP))
    node_p = canon.order[persons.node_person]
    kept = np.flatnonzero(node_p >= 0)
    kc = con.cursor()
    kc.register("node_order", pa.table({"node": kept.astype(np.int32), "p": node_p[kept]}))
    del node_p, kept
    keys = kc.sql(
        f"SELECT o.p, n.key FROM {persons.nodes.sql()} n JOIN node_order o USING (node) "  # noqa: S608
        "ORDER BY o.p, n.first_rid, n.first_pos"
    ).to_arrow_reader(session.batch)
    session.measure()
    session.release()
    assert session.pool is not None
    done = 0
    try:
        groups = person_groups(canon.cids, records, keys, PERSON_GROUP)
        for pairs in session.pool.merged_groups(groups):
            yield from pairs
            done += len(pairs)
            session.measure()
            session.tick("merge", done, n_profiles)
    finally:
        rc.close()
        kc.close()
    session.con.execute("DROP TABLE recs")
    session.release()


def aliases(
    session: Session, persons: Persons, canon: Canonical, n_aliases: int
) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """The alias index's keys and values, a batch of each at a time (for
    `EnvWriter.put_sorted_columns`)."""
    import pyarrow as pa

    # Node order is key order; each node's canonical id is its person's.
    node_p = canon.order[persons.node_person]
    cids = canon.cids.view(f"S{CID_WIDTH}").ravel()
    done = 0
    for batch in persons.nodes.batches(session, ["node", "key"]):
        p = node_p[batch.column(0).to_numpy()]
        keys = batch.column(1).cast(pa.binary())  # bytes for LMDB, no encode per alias
        kept = p >= 0
        if not kept.all():
            keys = keys.filter(pa.array(kept))
            p = p[kept]
        yield keys.to_pylist(), cids[p].tolist()
        done += len(p)
        session.tick("aliases", done, n_aliases)
