"""Every way a snapshot can be refused, one class per meaning.

Messages name the file and say what is wrong, so an operator can act on them without reading code.
"""

from __future__ import annotations


class SnapshotError(Exception):
    """Base of every snapshot failure: opening, verifying, building, packing, storing."""


class MissingFile(SnapshotError):
    """A file the manifest (or the format) requires is absent."""


class ManifestInvalid(SnapshotError):
    """`manifest.json` is not valid JSON or does not match the manifest schema."""


class SizeMismatch(SnapshotError):
    """A file's size differs from the size recorded in the manifest (truncated or replaced)."""


class ChecksumMismatch(SnapshotError):
    """A file's sha256 differs from the digest recorded in the manifest."""


class SignatureMissing(SnapshotError):
    """A signing key was given but the snapshot is not signed."""


class SignatureInvalid(SnapshotError):
    """The manifest's signature does not verify with the given key (tampered or other key)."""


class KindMismatch(SnapshotError):
    """The snapshot is of another kind than the caller expects (profiles, content, rules)."""


class SchemaMismatch(SnapshotError):
    """The snapshot was written with a schema version this code cannot read."""


class CorruptRecord(SnapshotError):
    """A stored value does not decode as the record type its database holds."""


class UnsafeArchive(SnapshotError):
    """A `.tar` member would escape the target directory, is not a regular file, or is too big."""


class ConfigInvalid(SnapshotError):
    """A build configuration file is malformed or inconsistent."""


class InputInvalid(SnapshotError):
    """Input records were rejected; `problems` holds every `file:line: reason`."""

    def __init__(self, problems: list[str], total: int | None = None) -> None:
        self.problems = problems
        count = total if total is not None else len(problems)
        shown = "\n  ".join(problems[:20])
        more = f"\n  … and {count - 20} more" if count > 20 else ""
        super().__init__(
            f"{count} invalid input record(s); nothing was written "
            f"(--skip-invalid builds from the valid ones):\n  {shown}{more}"
        )


class OutputExists(SnapshotError):
    """The build output directory already exists; snapshots are immutable, so it is not replaced."""


class StoreError(SnapshotError):
    """The version store on disk is inconsistent or the requested version is absent."""


class InputUnreadable(SnapshotError):
    """An input cannot be read at all: missing, unreachable or refused object storage, not
    Parquet, truncated, or columns missing or of the wrong type. The message names the file."""


class BuildFailed(SnapshotError):
    """The build engine failed (out of disk while spilling, out of memory); nothing was written
    and the build's temp files were removed."""
