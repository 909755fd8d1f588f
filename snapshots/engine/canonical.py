"""Phase 2, stitch, last: canonical ids, hashed once per person from its best key, and persons
renumbered in canonical-id order, the order of the profiles in the snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from snapshots.engine.components import Nodes
from snapshots.engine.persons import Persons
from snapshots.engine.session import Session
from snapshots.errors import BuildFailed
from snapshots.stitching import CID_DIGEST_BYTES, digest_order

CID_WIDTH = 2 + 2 * CID_DIGEST_BYTES  # "p_" + hex


class Canonical(NamedTuple):
    """Each person's place in canonical-id order (-1: no profile), and the canonical ids in
    that order: one fixed-width row of bytes ("p_" + hex) each."""

    order: Any
    cids: Any


def best_keys(session: Session, nodes: Nodes, best_of: Any, idx: list[Any]) -> Iterator[Any]:
    """The best keys in node order, a batch at a time; appends to `idx` the person each
    one is best of (`best_of`: that person by node, -1 for the other nodes)."""
    import pyarrow as pa

    for batch in nodes.batches(session, ["node", "key"]):
        i = best_of[batch.column(0).to_numpy()]
        best = i >= 0
        idx.append(i[best])
        yield batch.column(1).filter(pa.array(best))


def canonical_ids(session: Session, persons: Persons) -> Canonical:
    """Canonical ids, once per person from its best key (blake2b in Python, in batches,
    by the merge workers when there are some); then persons are renumbered in canonical-id
    order. Drops `persons.person_best` and `persons.has_person`: nothing reads them later."""
    import numpy as np

    person_ids = np.flatnonzero(persons.has_person)
    # Each person's best node, and the person (index into `person_ids`) it is best of.
    best_of = np.full(len(persons.node_person), -1, np.int32)
    best_of[persons.person_best[person_ids]] = np.arange(len(person_ids), dtype=np.int32)
    idx: list[Any] = []
    assert session.pool is not None
    digests = list(session.pool.digests(best_keys(session, persons.nodes, best_of, idx)))
    del best_of
    n = len(person_ids)
    at = np.concatenate(idx) if idx else np.zeros(0, np.int32)
    if len(at) != n:
        raise BuildFailed(f"build engine lost persons: {len(at)} of {n} best keys found")
    d = np.frombuffer(b"".join(digests), np.uint8).reshape(-1, CID_DIGEST_BYTES)
    del digests
    # The ids in their order (bytewise, as the snapshot's keys are): the digests'.
    sort = digest_order(d)
    d = d[sort]
    # The ids' text, "p_" + hex, made in bulk: one fixed-width row of bytes per person.
    text = np.empty((n, CID_WIDTH), np.uint8)
    text[:, 0], text[:, 1] = ord("p"), ord("_")
    hexd = np.frombuffer(b"0123456789abcdef", np.uint8)
    text[:, 2::2] = hexd[d >> 4]
    text[:, 3::2] = hexd[d & 15]
    del d
    order = np.full(len(persons.person_best), -1, np.int32)
    order[person_ids[at[sort]]] = np.arange(n, dtype=np.int32)
    persons.person_best = persons.has_person = None
    session.release()
    return Canonical(order, text)
