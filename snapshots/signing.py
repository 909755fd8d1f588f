"""Manifest signatures. HMAC-SHA256 with a shared key now; `alg` names the scheme so Ed25519
can be added beside it without changing the format."""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from snapshots.errors import SignatureInvalid, SignatureMissing
from snapshots.manifest import Manifest, Signature, canonical_bytes

HMAC_SHA256 = "hmac-sha256"


def key_id(key: bytes) -> str:
    """A short public fingerprint, so a mismatch can say "signed with another key"."""
    return hashlib.sha256(b"edgeside-key-id:" + key).hexdigest()[:12]


def sign_manifest(manifest: Manifest, key: bytes) -> Manifest:
    value = hmac.new(key, canonical_bytes(manifest), hashlib.sha256).hexdigest()
    signature = Signature(alg=HMAC_SHA256, key_id=key_id(key), value=value)
    return msgspec.structs.replace(manifest, signature=signature)


def check_signature(manifest: Manifest, key: bytes | None, where: str) -> None:
    """Raise unless the manifest is signed by `key`. Without a key there is nothing to check."""
    if key is None:
        return
    sig = manifest.signature
    if sig is None:
        raise SignatureMissing(f"{where}: snapshot is unsigned but a signing key is configured")
    if sig.alg != HMAC_SHA256:
        raise SignatureInvalid(f"{where}: unsupported signature algorithm {sig.alg!r}")
    expected = hmac.new(key, canonical_bytes(manifest), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sig.value):
        if sig.key_id != key_id(key):
            raise SignatureInvalid(
                f"{where}: signed with key {sig.key_id}, the configured key is {key_id(key)}"
            )
        raise SignatureInvalid(f"{where}: signature does not match the manifest (tampered)")
