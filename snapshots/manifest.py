"""`manifest.json`: what a snapshot holds, how to check it, and who signed it."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from snapshots.errors import ManifestInvalid, MissingFile, SchemaMismatch, SizeMismatch

MANIFEST_NAME = "manifest.json"
DATA_NAME = "data.mdb"
SCHEMA_VERSION = 1
KINDS = ("profiles", "content", "rules")
# A delta is shipped and verified like a snapshot but never activated itself: the server applies
# it to the profiles version it names (`params["base"]`), which yields a new `profiles` version.
DELTA_KIND = "profiles-delta"
MANIFEST_KINDS = (*KINDS, DELTA_KIND)


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`alg` is "hmac-sha256" today; the field leaves room for "ed25519" without a format change."""

    alg: str
    key_id: str
    value: str


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: str
    version: str
    created_at: float
    schema_version: int
    counts: dict[str, int]
    files: dict[str, str]  # name -> sha256 hex
    sizes: dict[str, int]  # name -> bytes; checked at every open because it is cheap
    sources: dict[str, str]  # input name -> sha256 hex
    # Reader parameters fixed at build time, e.g. the id-type priority for profile lookups.
    params: dict[str, list[str]] = {}
    signature: Signature | None = None


_decoder = msgspec.json.Decoder(Manifest)


def canonical_bytes(manifest: Manifest) -> bytes:
    """The signed bytes: the manifest without its signature, keys sorted, no whitespace."""
    unsigned = msgspec.structs.replace(manifest, signature=None)
    return msgspec.json.encode(msgspec.to_builtins(unsigned), order="sorted")


def encode_manifest(manifest: Manifest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(manifest, order="sorted"), indent=2) + b"\n"


def read_manifest(snapshot_dir: str | os.PathLike[str]) -> Manifest:
    path = Path(snapshot_dir) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingFile(f"{path}: no manifest; this is not a snapshot directory") from None
    try:
        manifest = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ManifestInvalid(f"{path}: {exc}") from None
    if manifest.schema_version != SCHEMA_VERSION:
        raise SchemaMismatch(
            f"{path}: schema_version {manifest.schema_version}, this edgeside reads "
            f"{SCHEMA_VERSION}; rebuild the snapshot or upgrade"
        )
    if manifest.kind not in MANIFEST_KINDS:
        raise ManifestInvalid(
            f"{path}: unknown kind {manifest.kind!r}; expected one of {MANIFEST_KINDS}"
        )
    if set(manifest.files) != set(manifest.sizes):
        raise ManifestInvalid(f"{path}: `files` and `sizes` name different files")
    return manifest


def check_sizes(snapshot_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Cheap structural check done at every open: every listed file exists with its size."""
    root = Path(snapshot_dir)
    for name, size in manifest.sizes.items():
        path = root / name
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            raise MissingFile(f"{path}: listed in the manifest but missing") from None
        if actual != size:
            raise SizeMismatch(
                f"{path}: {actual} bytes, the manifest says {size} (truncated or replaced)"
            )
