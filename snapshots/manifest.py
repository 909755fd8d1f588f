"""`manifest.json`: what a snapshot holds, how to check it, and who signed it."""

from __future__ import annotations

import os
import re
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

# A manifest is untrusted until verified *and* validated (issue 14): its version becomes a
# directory name, a symlink target, a response header (`X-Edge-Snapshot`), a metric label and a log
# word; its file names become paths. One grammar, checked by `read_manifest` — the only way any of
# push, pull, install, activate, rollback and start-up reads a manifest — and by `check_version`
# wherever a version arrives by another road (a URL, the activation history, the `active` link).
# Starts with a letter or digit (never `.`: dot-names in `versions/` are the store's own), then
# letters, digits and `._-`; no `/`, no `..`, no byte a header or a path could misread.
VERSION_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,127})")
# Names of files inside a snapshot directory, of counts, params and sources: the same alphabet.
NAME_RE = VERSION_RE
HEX_RE = re.compile(r"[0-9a-f]{64}")
# Ids and values that are data, not names (e.g. `params["id_priority"]`): printable ASCII only.
_PRINTABLE_RE = re.compile(r"[\x21-\x7e]{1,256}")
MAX_ENTRIES = 256  # counts, files, sizes, sources, params: a manifest lists a handful


def valid_version(version: object) -> bool:
    return (
        isinstance(version, str)
        and VERSION_RE.fullmatch(version) is not None
        and ".." not in version
    )


def check_version(version: object, where: str = "version") -> str:
    """`version` if it is a valid version name, else `ManifestInvalid` saying what is allowed."""
    if not isinstance(version, str) or not valid_version(version):
        raise ManifestInvalid(
            f"{where}: {version!r} is not a version name (1-128 of A-Z a-z 0-9 . _ -, starting "
            "with a letter or digit, no '..')"
        )
    return version


def check_names(manifest: Manifest, where: str) -> None:
    """Every manifest field used as a name, a path or a header value, against its grammar."""
    check_version(manifest.version, f"{where}: version")
    for field, names in (
        ("files", manifest.files),
        ("sizes", manifest.sizes),
        ("counts", manifest.counts),
        ("sources", manifest.sources),
        ("params", manifest.params),
    ):
        if len(names) > MAX_ENTRIES:
            raise ManifestInvalid(
                f"{where}: {field} lists {len(names)} entries (max {MAX_ENTRIES})"
            )
        for name in names:
            if not valid_version(name):  # the same alphabet as a version: it may be a path
                raise ManifestInvalid(f"{where}: {field} names {name!r}, not a valid name")
    for name, digest in manifest.files.items():
        if HEX_RE.fullmatch(digest) is None:
            raise ManifestInvalid(f"{where}: files[{name!r}] is not a sha256 hex digest")
    for name, size in manifest.sizes.items():
        if size < 0:
            raise ManifestInvalid(f"{where}: sizes[{name!r}] is negative")
    for name, values in manifest.params.items():
        if len(values) > MAX_ENTRIES or not all(_PRINTABLE_RE.fullmatch(v) for v in values):
            raise ManifestInvalid(f"{where}: params[{name!r}] holds a value that is not a name")
    for value in manifest.sources.values():
        if _PRINTABLE_RE.fullmatch(value) is None:
            raise ManifestInvalid(f"{where}: a sources digest is not printable ASCII")
    # A delta names the version it applies to: that too becomes a path.
    for base in manifest.params.get("base", []):
        check_version(base, f"{where}: params.base")
    sig = manifest.signature
    if sig is not None and not all(
        _PRINTABLE_RE.fullmatch(v) for v in (sig.alg, sig.key_id, sig.value)
    ):
        raise ManifestInvalid(f"{where}: the signature holds bytes that are not printable ASCII")


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
    check_names(manifest, str(path))
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
