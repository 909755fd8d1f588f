"""Snapshots: immutable, versioned, memory-mapped LMDB data sets and the builders that make them."""

from snapshots.archive import pack, unpack
from snapshots.blob import read_blob_snapshot, write_blob_snapshot
from snapshots.config import ContentConfig, ProfilesConfig, load_config
from snapshots.content_build import build_content
from snapshots.errors import (
    ChecksumMismatch,
    ConfigInvalid,
    CorruptRecord,
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
from snapshots.model import ContentItem, Profile, ProfileView
from snapshots.profiles_build import build_profiles
from snapshots.reader import ContentReader, ProfileReader, open_content, open_profiles
from snapshots.summary import BuildSummary
from snapshots.verify import verify_snapshot

__all__ = [
    "BuildSummary",
    "ChecksumMismatch",
    "ConfigInvalid",
    "ContentConfig",
    "ContentItem",
    "ContentReader",
    "CorruptRecord",
    "InputInvalid",
    "KindMismatch",
    "Manifest",
    "ManifestInvalid",
    "MissingFile",
    "OutputExists",
    "Profile",
    "ProfileReader",
    "ProfileView",
    "ProfilesConfig",
    "SchemaMismatch",
    "Signature",
    "SignatureInvalid",
    "SignatureMissing",
    "SizeMismatch",
    "SnapshotError",
    "StoreError",
    "UnsafeArchive",
    "build_content",
    "build_profiles",
    "load_config",
    "open_content",
    "open_profiles",
    "pack",
    "read_blob_snapshot",
    "read_manifest",
    "unpack",
    "verify_snapshot",
    "write_blob_snapshot",
]
