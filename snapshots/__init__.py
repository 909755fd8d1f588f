"""Snapshots: immutable, versioned, memory-mapped LMDB data sets and the builders that make them."""

from snapshots.blob import read_blob_snapshot, write_blob_snapshot
from snapshots.errors import (
    ChecksumMismatch,
    ConfigInvalid,
    InputInvalid,
    KindMismatch,
    ManifestInvalid,
    MissingFile,
    OutputExists,
    SchemaMismatch,
    SignatureInvalid,
    SignatureMissing,
    SizeMismatch,
    SnapshotError,
    StoreError,
    UnsafeArchive,
)
from snapshots.manifest import Manifest, Signature, read_manifest
from snapshots.model import ContentItem, Profile
from snapshots.reader import ContentReader, ProfileReader, open_content, open_profiles
from snapshots.verify import verify_snapshot

__all__ = [
    "ChecksumMismatch",
    "ConfigInvalid",
    "ContentItem",
    "ContentReader",
    "InputInvalid",
    "KindMismatch",
    "Manifest",
    "ManifestInvalid",
    "MissingFile",
    "OutputExists",
    "Profile",
    "ProfileReader",
    "SchemaMismatch",
    "Signature",
    "SignatureInvalid",
    "SignatureMissing",
    "SizeMismatch",
    "SnapshotError",
    "StoreError",
    "UnsafeArchive",
    "open_content",
    "open_profiles",
    "read_blob_snapshot",
    "read_manifest",
    "verify_snapshot",
    "write_blob_snapshot",
]
