"""The stamp table: one shared-memory counter per hash slot of live keys, for the answer memo.

The memo checks, on every hit, whether the visitor's live activity changed since its answer was
computed. An LMDB read transaction for that costs ~1 µs; this table makes it one index operation
into a file mapped ``MAP_SHARED`` by every worker (``stamps.bin`` next to the LMDB files).

Layout: a 64-byte header (magic, slot count, the boot id it was built in), then ``slots`` native
uint32 counters. The slot of a key is ``crc32(key) & (slots - 1)``: the same in every process
(Python's ``hash()`` is randomised per process), ~0.1 µs for a typical key. Keys that share a slot
only cause extra recomputation.

What readers may rely on:

(a) the slot of a key changes whenever its activity record is written, deleted or swept: writers
    `bump` the slots of a batch *after* its LMDB transaction commits, and readers read the slot
    *before* they read the record, so nobody can pair an old record with a new stamp;
(b) a slot that reads 0 means no key of that slot has an activity record: a batch's zero slots
    are `reserve`\\ d (set to 1) *before* its transaction, a bump never wraps to 0, and a table is
    (re)built by bumping the slot of every key in the store.

Writers (the batch and sweep threads of every worker) serialise their read-modify-write of slots
with a thread lock plus an ``flock`` on the live *directory*; readers take no lock. The directory,
not ``stamps.bin``, is the lock because the file can be replaced (rebuilt and renamed into place):
two processes locking two generations of the file would not exclude each other.

The table is (re)built under that lock — in a temporary file renamed into place, so no process
ever maps a half-built table — when ``stamps.bin`` is missing (first start, deleted), of the wrong
size or header, or was built before the last reboot (its writes sat in the page cache; the LMDB
commits they followed were synced, so a power cut could lose the former and keep the latter).
A worker notices that the file was replaced under it at its next locked write and maps the new one.
Never truncate the file in place: a process that maps it would fault on the missing pages.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from zlib import crc32

log = logging.getLogger("edgeside.live")

FILE_NAME = "stamps.bin"
MAGIC = b"edgestmp"
HEADER_BYTES = 64
_HEADER = struct.Struct("=8sI36s")  # magic, slots, boot id; the rest of the 64 bytes is zero
_MAX = 0xFFFFFFFF
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> bytes:
    """This boot of the machine (b"" where the system does not say: no reboot detection)."""
    try:
        return _BOOT_ID.read_bytes().strip()[:36]
    except OSError:
        return b""


class _Mapping:
    """One generation of the file, mapped: the view readers index and the file's identity."""

    def __init__(self, fd: int, slots: int) -> None:
        st = os.fstat(fd)
        self.identity = (st.st_dev, st.st_ino)
        self.mm = mmap.mmap(fd, HEADER_BYTES + 4 * slots, mmap.MAP_SHARED)
        self.view = memoryview(self.mm)
        self.slots = self.view[HEADER_BYTES:].cast("I")

    def header(self) -> tuple[bytes, int, bytes]:
        magic, slots, boot = _HEADER.unpack_from(self.view)
        return magic, slots, boot.rstrip(b"\0")

    def close(self) -> None:
        self.slots.release()
        self.view.release()
        self.mm.close()


class StampTable:
    """This process's handle on ``DIR/stamps.bin``.

    `keys` yields every key that has an activity record (encoded); it is called, under the lock,
    only to build the table.
    """

    def __init__(self, directory: Path, slots: int, keys: Callable[[], Iterable[bytes]]) -> None:
        if slots < 1 or slots & (slots - 1) or slots > 1 << 30:
            raise ValueError(f"stamp slots must be a power of two up to 2**30, not {slots}")
        self.path = directory / FILE_NAME
        self.nslots = slots
        self.mask = slots - 1
        self.size = HEADER_BYTES + 4 * slots
        self.rebuilt = False  # whether this process built the table (tests, logs)
        self._keys = keys
        self._boot = boot_id()
        self._mutex = threading.Lock()
        self._lock_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            with self._exclusive():
                self._current = self._attach()
        except BaseException:
            os.close(self._lock_fd)
            raise
        # The view readers index; replaced (never released while in use) if the file is replaced.
        self.slots = self._current.slots

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        self._current.close()
        os.close(self._lock_fd)
        self._lock_fd = -1

    # -- reads (any thread, no lock) -------------------------------------------------------------

    def get(self, key: str) -> int:
        return self.slots[crc32(key.encode()) & self.mask]

    # -- writes ------------------------------------------------------------------------------------

    def reserve(self, keys: Iterable[bytes]) -> None:
        """Before a write transaction: make the keys' zero slots non-zero (invariant (b) holds
        even if this process dies between the commit and its `bump`)."""
        mask = self.mask
        wanted = {crc32(k) & mask for k in keys}
        if all(self.slots[i] for i in wanted):
            return  # the usual case, no lock: only a rebuild zeroes a slot (`bump` covers it)
        with self._locked() as slots:
            for i in wanted:
                if not slots[i]:
                    slots[i] = 1

    def bump(self, keys: Iterable[bytes]) -> None:
        """After a write transaction committed: change the slot of every key written or deleted
        (each distinct slot once)."""
        mask = self.mask
        wanted = {crc32(k) & mask for k in keys}
        if not wanted:
            return
        # The lock prevents lost updates between writers. Without it, a writer descheduled
        # between reading a slot (5) and writing it (6) can, after another writer's batches moved
        # it to 6 then 7, write 6 back: a reader that memoised an answer when the slot was 6
        # (before the 7's batch) would accept it again, computed without that batch, until the
        # slot next changes. Under the lock every bump is +1 of the latest value.
        with self._locked() as slots:
            for i in wanted:
                slots[i] = (slots[i] + 1) & _MAX or 1

    @contextlib.contextmanager
    def _locked(self) -> Iterator[memoryview]:
        """Exclusive access for a read-modify-write, on the file as it is now at `path`."""
        with self._exclusive():
            try:
                st = os.stat(self.path)
                replaced = (st.st_dev, st.st_ino) != self._current.identity
            except FileNotFoundError:
                replaced = True
            except OSError:
                replaced = False  # cannot tell: keep bumping the table the others map
            if replaced:
                try:
                    fresh = self._attach()
                except Exception as exc:  # a write must not fail after its commit
                    log.error(
                        "stamp table %s cannot be rebuilt, keeping the old one: %s", self.path, exc
                    )
                else:
                    # Not closed: a reader thread may be indexing the old view; refcounting
                    # unmaps it once nobody holds it.
                    self._current = fresh
                    self.slots = fresh.slots
            yield self._current.slots

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        # flock excludes other processes only (threads share the open file description).
        with self._mutex:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _attach(self) -> _Mapping:
        """Map the table at `path`, building it first if it is not a valid one (lock held)."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            reason = "missing"
        else:
            try:
                size = os.fstat(fd).st_size
                if size == self.size:
                    mapping = _Mapping(fd, self.nslots)
                    magic, slots, boot = mapping.header()
                    if magic == MAGIC and slots == self.nslots and boot == self._boot:
                        return mapping
                    mapping.close()
                    reason = "from another boot" if magic == MAGIC else "with a bad header"
                    if magic == MAGIC and slots != self.nslots:
                        reason = f"of {slots} slots, not {self.nslots}"
                else:
                    reason = f"of {size} bytes, not {self.size}"
            finally:
                os.close(fd)
        return self._build(reason)

    def _build(self, reason: str) -> _Mapping:
        tmp = self.path.with_name(FILE_NAME + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            # Blocks on disk now: a write to a page a full disk cannot back would fault later.
            os.posix_fallocate(fd, 0, self.size)
            mapping = _Mapping(fd, self.nslots)
        finally:
            os.close(fd)
        try:
            _HEADER.pack_into(mapping.view, 0, MAGIC, self.nslots, self._boot)
            slots, mask, n = mapping.slots, self.mask, 0
            for key in self._keys():
                i = crc32(key) & mask
                slots[i] = (slots[i] + 1) & _MAX or 1
                n += 1
            os.replace(tmp, self.path)  # the same inode as `tmp`: `mapping.identity` holds
        except BaseException:
            mapping.close()
            raise
        self.rebuilt = True
        log.info("stamp table %s %s: built, %d keys in %d slots", self.path, reason, n, self.nslots)
        return mapping
