"""OFREP request and answer bodies, as the protocol names them (open-feature/protocol,
`service/openapi.yaml`; a copy is in tests/server/ofrep/spec/). Field names are the spec's
camelCase, so these types are the wire format and `/openapi.json` is generated from them."""

from __future__ import annotations

from typing import Literal

import msgspec

# What an OpenFeature context attribute may be: the SDKs send JSON scalars, lists and objects.
# Unknown attributes are ignored, so their values are kept as undecoded JSON.
Attribute = msgspec.Raw

ErrorCode = Literal["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]
Reason = Literal["STATIC", "TARGETING_MATCH", "SPLIT", "DEFAULT"]
MetadataValue = str | int | float | bool


class EvaluationRequest(msgspec.Struct):
    """A single or bulk evaluation request. Unknown top-level fields are ignored: the protocol
    may grow, and a provider of a newer version must still be answered."""

    context: dict[str, Attribute] | None = None


class EvaluationSuccess(msgspec.Struct, omit_defaults=True):
    key: str
    value: str
    reason: Reason
    variant: str
    metadata: dict[str, MetadataValue] = msgspec.field(default_factory=dict)


class EvaluationFailure(msgspec.Struct):
    key: str
    errorCode: ErrorCode
    errorDetails: str


class FlagNotFound(msgspec.Struct):
    key: str
    errorCode: Literal["FLAG_NOT_FOUND"]
    errorDetails: str


class BulkEvaluationSuccess(msgspec.Struct):
    flags: list[EvaluationSuccess]


class BulkEvaluationFailure(msgspec.Struct):
    errorCode: ErrorCode
    errorDetails: str


class GeneralErrorResponse(msgspec.Struct):
    errorDetails: str
