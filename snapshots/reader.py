"""Readers: open a snapshot read-only in the process that uses it (after fork, SPEC §10) and
decode records straight from LMDB's buffers inside the transaction."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

import cachetools
import lmdb
import msgspec

from snapshots.errors import CorruptRecord, SnapshotError
from snapshots.manifest import Manifest
from snapshots.model import ContentItem, Profile, ProfileView, profile_view
from snapshots.verify import check_snapshot

T = TypeVar("T")
IndexField = Literal["tag", "type", "placement", "locale", "category"]
# Catalogues up to this size are cached whole in plain dicts (fastest); bigger ones in an LRU.
SMALL_CATALOGUE = 200_000
LRU_SIZE = 50_000


# LMDB refuses an empty key or one over its compile-time limit (511 bytes by default) with
# BadValsizeError; ids arrive from requests, so such a key is simply not found.
def _key(text: str, limit: int) -> bytes | None:
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # lone surrogates: no stored key is made of them
        return None
    return raw if 0 < len(raw) <= limit else None


def _open_env(path: Path) -> lmdb.Environment:
    try:
        return lmdb.open(
            str(path),
            readonly=True,
            lock=False,  # immutable data: no reader table, no lock file, nothing shared
            readahead=False,  # random access; do not pull neighbouring pages into the cache
            subdir=True,
            create=False,
            max_dbs=8,
            max_readers=2048,
            max_spare_txns=4,
        )
    except lmdb.Error as exc:
        raise SnapshotError(f"{path}: cannot open LMDB environment: {exc}") from None


# What a stored record that does not decode raises (ValidationError is a DecodeError).
UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError)


def _undecodable(where: str, exc: Exception) -> CorruptRecord:
    return CorruptRecord(f"{where}: a stored record does not decode: {exc}")


def _decoder(type_: type[T], where: str) -> Callable[[memoryview | bytes], T]:
    """A msgpack decoder whose failures are `CorruptRecord`s naming the snapshot (never the key:
    keys are visitor identifiers, and error messages end up in logs)."""
    decode = msgspec.msgpack.Decoder(type_).decode

    def checked(buf: memoryview | bytes) -> T:
        try:
            return decode(buf)
        except UNDECODABLE as exc:
            raise _undecodable(where, exc) from None

    return checked


class _Base:
    kind = ""

    def __init__(
        self, path: str | os.PathLike[str], signing_key: bytes | None, verify: bool
    ) -> None:
        self.path = Path(path)
        self.manifest: Manifest = check_snapshot(
            self.path, signing_key=signing_key, hashes=verify, expect_kind=self.kind
        )
        self.version: str = self.manifest.version
        self._env = _open_env(self.path)
        self._max_key: int = self._env.max_key_size()

    def _db(self, name: str) -> lmdb._Database:
        try:
            return self._env.open_db(name.encode(), create=False)
        except lmdb.Error as exc:
            raise SnapshotError(f"{self.path}: database {name!r} missing: {exc}") from None

    def _damaged(self, exc: Exception) -> CorruptRecord:
        """LMDB's own complaint about a page (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, …) or a key that
        is not UTF-8: damage on disk that the size check at open cannot see."""
        return CorruptRecord(f"{self.path}: damaged {self.kind} snapshot: {exc}")

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> _Base:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Get = Callable[[bytes | memoryview], memoryview | None]


class _Txns(threading.local):
    """A thread's read transactions on one reader's environment (LMDB transactions belong to
    one thread; the world is opened on a worker thread and served from the event loop's): the
    `get` of one bound to the alias db and of one bound to the profiles db (passing `db=` to
    py-lmdb's get costs ~0.4 µs of keyword parsing per call)."""

    gets: tuple[Get, Get] | None = None


class ProfileReader(_Base):
    """Look-ups run in one long-lived read transaction per thread, not one `begin()` per call
    (half of a warm look-up was beginning and ending it). A snapshot is immutable and opened with
    lock=False: no writer ever runs on this environment and there is no reader table, so the
    transaction pins no page and sees nothing stale; a new snapshot is a new reader with its own
    environment, and `close()` ends every transaction of the old one (py-lmdb invalidates them
    with the environment). After any LMDB error the thread's transaction is dropped and the next
    call begins a fresh one (an LMDB transaction that hit a damaged page refuses all later
    reads)."""

    kind = "profiles"

    def __init__(
        self, path: str | os.PathLike[str], signing_key: bytes | None, verify: bool
    ) -> None:
        super().__init__(path, signing_key, verify)
        self._profiles = self._db("profiles")
        self._alias = self._db("alias")
        self._where = f"{self.path} (profiles)"
        self._decode = _decoder(Profile, self._where)
        # get/lookup call msgspec's decoders bare (one Python frame less per look-up) and turn
        # their errors into CorruptRecord themselves.
        self._decode_bare = msgspec.msgpack.Decoder(Profile).decode
        # Decoders of `ProfileView`s by the fields they decode (`fields` of get/lookup).
        self._views: dict[frozenset[str], Callable[[memoryview | bytes], ProfileView]] = {}
        self.id_priority: list[str] = list(self.manifest.params.get("id_priority", []))
        # Alias keys are `type:value`; the prefixes are made once, not per look-up.
        self._prefixes = [(t, f"{t}:") for t in self.id_priority]
        self._local = _Txns()
        # The field set asked last and its decoder: callers pass the same frozenset each time
        # (the engine's `profile_fields`), so an identity check skips hashing it.
        self._last: tuple[
            frozenset[str] | None, Callable[[memoryview | bytes], Profile | ProfileView]
        ]
        self._last = (None, self._decode_bare)

    def _gets(self) -> tuple[Get, Get]:
        """This thread's (alias get, profiles get)."""
        gets = self._local.gets
        if gets is None:
            begin = self._env.begin
            gets = (
                begin(db=self._alias, buffers=True).get,
                begin(db=self._profiles, buffers=True).get,
            )
            self._local.gets = gets
        return gets

    def _failed(self, exc: Exception) -> CorruptRecord:
        self._local.gets = None
        return self._damaged(exc)

    def _decoder_for(
        self, fields: frozenset[str] | None
    ) -> Callable[[memoryview | bytes], Profile | ProfileView]:
        """The whole profile (None), or only `fields` of it: what the caller will read. Bare:
        the caller turns `UNDECODABLE` errors into CorruptRecord."""
        last, decode = self._last
        if fields is last:
            return decode
        if fields is None:
            return self._decode_bare
        found = self._views.get(fields)
        if found is None:
            if len(self._views) >= 64:  # field sets come from rules: a handful, but bounded
                self._views.clear()
            found = self._views[fields] = msgspec.msgpack.Decoder(profile_view(fields)).decode
        self._last = (fields, found)
        return found

    def get(
        self, canonical_id: str, fields: frozenset[str] | None = None
    ) -> Profile | ProfileView | None:
        """The profile of a canonical id; given `fields`, decoded only that far (`ProfileView`)."""
        key = _key(canonical_id, self._max_key)
        if key is None:
            return None
        decode = self._decoder_for(fields)
        try:
            buf = (self._local.gets or self._gets())[1](key)
            return None if buf is None else decode(buf)
        except lmdb.Error as exc:
            raise self._failed(exc) from None
        except UNDECODABLE as exc:
            raise _undecodable(self._where, exc) from None

    def resolve(self, id_type: str, value: str) -> str | None:
        key = _key(f"{id_type}:{value}", self._max_key)
        if key is None:
            return None
        try:
            cid = self._gets()[0](key)
            return None if cid is None else bytes(cid).decode()
        except lmdb.Error as exc:
            raise self._failed(exc) from None
        except UnicodeDecodeError as exc:
            raise self._damaged(exc) from None

    def lookup(
        self, ids: Mapping[str, str], fields: frozenset[str] | None = None
    ) -> Profile | ProfileView | None:
        """The profile of the first identifier (in configured priority) that is known; given
        `fields`, decoded only that far (`ProfileView`)."""
        decode = self._decoder_for(fields)
        limit = self._max_key
        try:
            alias, profile = self._local.gets or self._gets()
            for t, prefix in self._prefixes:
                v = ids.get(t)
                if v is None:
                    continue
                # _key inlined: this loop is the hot path of every visitor with an id.
                try:
                    key = (prefix + v).encode()
                except UnicodeEncodeError:  # lone surrogates: no stored key is made of them
                    continue
                cid = alias(key) if len(key) <= limit else None
                if cid is not None:
                    # An empty or over-long alias target is damage (BadValsizeError below).
                    buf = profile(cid)
                    if buf is not None:
                        return decode(buf)
        except lmdb.Error as exc:
            raise self._failed(exc) from None
        except UNDECODABLE as exc:
            raise _undecodable(self._where, exc) from None
        return None

    def sample(self, n: int = 1) -> list[Profile]:
        out: list[Profile] = []
        try:
            with self._env.begin(db=self._profiles, buffers=True) as txn:
                for _, buf in txn.cursor():
                    out.append(self._decode(buf))
                    if len(out) >= n:
                        break
        except lmdb.Error as exc:
            raise self._damaged(exc) from None
        return out

    def __enter__(self) -> ProfileReader:
        return self


class ContentReader(_Base):
    kind = "content"

    def __init__(
        self, path: str | os.PathLike[str], signing_key: bytes | None, verify: bool
    ) -> None:
        super().__init__(path, signing_key, verify)
        self._items_db = self._db("items")
        self._index_db = self._db("index")
        self._decode = _decoder(ContentItem, f"{self.path} (items)")
        self._decode_ids = _decoder(list[str], f"{self.path} (index)")
        small = self.manifest.counts.get("items", 0) <= SMALL_CATALOGUE
        # Values are cached decoded, so `item()`/`ids()` are dict lookups after first use.
        self._items: (
            dict[str, ContentItem | None] | cachetools.LRUCache[str, ContentItem | None]
        ) = {} if small else cachetools.LRUCache(LRU_SIZE)
        self._index: dict[tuple[str, str], frozenset[str]] = {}

    def get(self, id: str) -> ContentItem | None:
        try:
            return self._items[id]
        except KeyError:
            pass
        key = _key(id, self._max_key)
        if key is None:
            return None
        try:
            with self._env.begin(db=self._items_db, buffers=True) as txn:
                buf = txn.get(key)
                item = None if buf is None else self._decode(buf)
        except lmdb.Error as exc:
            raise self._damaged(exc) from None
        self._items[id] = item
        return item

    item = get

    def ids(self, field: IndexField | str, value: str) -> frozenset[str]:
        """Ids of the items whose `field` (tag, type, placement, locale, category) holds `value`;
        empty for anything else. Typed `str` too, so the reader satisfies the rules'
        `ContentCatalog` protocol."""
        key = (field, value)
        found = self._index.get(key)
        if found is not None:
            return found
        raw = _key(f"{field}:{value}", self._max_key)
        if raw is None:
            return frozenset()
        try:
            with self._env.begin(db=self._index_db, buffers=True) as txn:
                buf = txn.get(raw)
                found = frozenset() if buf is None else frozenset(self._decode_ids(buf))
        except lmdb.Error as exc:
            raise self._damaged(exc) from None
        # Index keys are bounded by the catalogue's vocabulary, so this dict stays small.
        if len(self._index) < LRU_SIZE:
            self._index[key] = found
        return found

    def all_ids(self) -> list[str]:
        try:
            with self._env.begin(db=self._items_db) as txn:
                return [bytes(k).decode() for k in txn.cursor().iternext(keys=True, values=False)]
        except (lmdb.Error, UnicodeDecodeError) as exc:
            raise self._damaged(exc) from None

    def __enter__(self) -> ContentReader:
        return self


def open_profiles(
    path: str | os.PathLike[str], *, signing_key: bytes | None = None, verify: bool = True
) -> ProfileReader:
    """Open a profiles snapshot. The manifest, file sizes and (with a key) the signature are
    always checked; `verify=False` skips hashing the data files, which at 10 M profiles is
    seconds per worker start — do it once when installing instead."""
    return ProfileReader(path, signing_key, verify)


def open_content(
    path: str | os.PathLike[str], *, signing_key: bytes | None = None, verify: bool = True
) -> ContentReader:
    return ContentReader(path, signing_key, verify)
