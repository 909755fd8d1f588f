"""`/openapi.json`, generated once at start-up from the msgspec types of the API."""

from __future__ import annotations

from typing import Any

import msgspec

import snapshots

from .lifecycle.admin import StatusBody
from .lifecycle.pipeline import PushResult, SwitchResult
from .live.events import EventBatch, EventsAnswer
from .ofrep.schemas import (
    BulkEvaluationFailure,
    BulkEvaluationSuccess,
    EvaluationFailure,
    EvaluationRequest,
    EvaluationSuccess,
    FlagNotFound,
    GeneralErrorResponse,
)
from .schemas import DecideRequest, DecideResponse, ErrorBody, ReadyBody

_REF = "#/components/schemas/{name}"
PLACEMENT_PATTERN = "^[A-Za-z0-9_.:-]{1,128}$"


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _errors(*statuses: int) -> dict[str, Any]:
    ref = {"$ref": _REF.format(name="ErrorBody")}
    return {str(s): _json(ref, "error") for s in statuses}


# What the server enforces on placement names (PLACEMENT_NAME, server/decide/context.py), so
# generated clients and fuzzers know a valid request when they see one.
_PLACEMENT_NAME = {"type": "string", "pattern": PLACEMENT_PATTERN}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_KIND_PARAM = {"name": "kind", "in": "path", "required": True, "schema": {"type": "string"}}
_EDGE_HEADERS = {
    name: {"schema": {"type": "string"}}
    for name in ("X-Edge-Key", "X-Edge-Decision", "X-Edge-Segments", "X-Edge-Snapshot")
}
_EDGE_PARAMS = [
    {"name": "p", "in": "query", "schema": {"type": "string"}, "description": "placements"},
    {"name": "site", "in": "query", "schema": {"type": "string"}},
    {"name": "X-Placements", "in": "header", "schema": {"type": "string"}},
    {"name": "X-Visitor-Id", "in": "header", "schema": {"type": "string"}},
]


def build_openapi(version: str) -> bytes:
    """The document, one part per room of routes: what pages ask, data reads, admin, operations."""
    types = [DecideRequest, DecideResponse, ErrorBody, ReadyBody, snapshots.Profile]
    types += [snapshots.ContentItem, PushResult, StatusBody, SwitchResult, EventBatch, EventsAnswer]
    types += _OFREP_TYPES
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    request, response, _err, ready, profile, content, pushed, status, switched = schemas[:9]
    events, accepted = schemas[9:11]
    ofrep = dict(zip(_OFREP_NAMES, schemas[11:], strict=True))
    # No minItems: with no placements named, the page's own (the rules' `pages`) are decided.
    components["DecideRequest"]["properties"]["placements"] |= {"items": _PLACEMENT_NAME}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "edgeside", "version": version},
        "paths": {
            **_request_paths(request, response, events, accepted),
            **_data_paths(profile, content),
            **_admin_paths(status, pushed, switched),
            **_operations_paths(ready),
            **_ofrep_paths(ofrep),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    return msgspec.json.encode(doc)


Schema = dict[str, Any]

_OFREP_TYPES: list[Any] = [
    EvaluationRequest,
    EvaluationSuccess,
    EvaluationFailure,
    FlagNotFound,
    BulkEvaluationSuccess,
    BulkEvaluationFailure,
    GeneralErrorResponse,
]
_OFREP_NAMES = [t.__name__ for t in _OFREP_TYPES]


def _request_paths(request: Schema, response: Schema, events: Schema, accepted: Schema) -> Schema:
    """What pages, apps and browsers ask: decisions, edge callouts, fragments, events."""
    return {
        "/v1/events": {
            "post": {
                "summary": "Feed live activity (views, clicks, carts, purchases, consent)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": events}},
                },
                "responses": {
                    "202": _json(accepted, "accepted (some events may be rejected, with why)"),
                    **_errors(400, 413, 415, 422, 429, 503),
                },
            }
        },
        "/v1/decide": {
            "post": {
                "summary": "Decide the named placements for a visitor",
                "parameters": [{"name": "explain", "in": "query", "schema": {"type": "string"}}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request}},
                },
                "responses": {
                    "200": _json(response, "the decisions"),
                    **_errors(400, 401, 413, 415, 422),
                },
            }
        },
        "/v1/edge": {
            "get": {
                "summary": "Decision headers for a proxy callout",
                "parameters": _EDGE_PARAMS,
                "responses": {
                    "204": {"description": "decided", "headers": _EDGE_HEADERS},
                    **_errors(400),
                },
            }
        },
        "/v1/fragments/{placement}": {
            "get": {
                "summary": "The chosen content as an HTML fragment (ESI)",
                "parameters": [
                    {
                        "name": "placement",
                        "in": "path",
                        "required": True,
                        "schema": _PLACEMENT_NAME,
                    },
                    *_EDGE_PARAMS[1:],
                ],
                "responses": {
                    "200": {
                        "description": "fragment",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    **_errors(400),
                },
            }
        },
    }


def _data_paths(profile: Schema, content: Schema) -> Schema:
    """Headless reads of the snapshots, for trusted apps."""
    return {
        "/v1/profiles/{id}": {
            "get": {
                "summary": "A unified profile by canonical id or type:value alias",
                "security": _BEARER,
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(profile, "profile"), **_errors(401, 404, 503)},
            }
        },
        "/v1/content/{id}": {
            "get": {
                "summary": "A content item",
                "security": _BEARER,
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(content, "item"), **_errors(401, 404, 503)},
            }
        },
    }


def _admin_paths(status: Schema, pushed: Schema, switched: Schema) -> Schema:
    """The snapshot lifecycle's admin API (server/lifecycle/admin.py)."""
    return {
        "/v1/admin/snapshots": {
            "get": {
                "summary": "Versions of every kind, their states and ages",
                "security": _BEARER,
                "responses": {"200": _json(status, "status"), **_errors(401)},
            }
        },
        "/v1/admin/snapshots/{kind}": {
            "put": {
                "summary": "Upload a snapshot .tar; verified, validated, then activated",
                "security": _BEARER,
                "parameters": [_KIND_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {"application/x-tar": {"schema": {"type": "string"}}},
                },
                "responses": {
                    "200": _json(pushed, "activated"),
                    **_errors(400, 401, 404, 408, 409, 413, 422, 507),
                },
            }
        },
        "/v1/admin/snapshots/{kind}/activate/{version}": {
            "post": {
                "summary": "Activate a kept version",
                "security": _BEARER,
                "parameters": [
                    _KIND_PARAM,
                    {
                        "name": "version",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(switched, "activated"),
                    **_errors(400, 401, 404, 409, 422),
                },
            }
        },
        "/v1/admin/snapshots/{kind}/rollback": {
            "post": {
                "summary": "Go back to the previously active version",
                "security": _BEARER,
                "parameters": [_KIND_PARAM],
                "responses": {
                    "200": _json(switched, "rolled back"),
                    **_errors(400, 401, 404, 409),
                },
            }
        },
    }


def _operations_paths(ready: Schema) -> Schema:
    """Liveness, readiness and metrics, for orchestrators and Prometheus."""
    return {
        "/healthz": {"get": {"responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "responses": {
                    "200": _json(ready, "ready"),
                    "503": _json(ready, "not ready"),
                }
            }
        },
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
    }


def _ofrep_paths(s: dict[str, Schema]) -> Schema:
    """OpenFeature's remote evaluation protocol (server/ofrep/): placements as flags. Credentials
    are optional: without them the targeting key is read as the visitor's cookie value."""
    general = s["GeneralErrorResponse"]
    refused = {
        "401": _json(general, "the bearer token is not valid"),
        "403": _json(general, "the token lacks the decide scope"),
        "405": _json({"$ref": _REF.format(name="ErrorBody")}, "use POST"),
        "413": _json(general, "the body is too large"),
        "415": _json(general, "the body is not application/json"),
        "429": {
            "description": "too many evaluations for this targeting key",
            "headers": {"Retry-After": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": general}},
        },
    }
    body = {"content": {"application/json": {"schema": s["EvaluationRequest"]}}}
    optional_auth: list[dict[str, list[str]]] = [{}, *_BEARER]
    return {
        "/ofrep/v1/evaluate/flags/{key}": {
            "post": {
                "summary": "OFREP: evaluate one placement as a flag (value: the variant)",
                "security": optional_auth,
                "parameters": [
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": body,
                "responses": {
                    "200": _json(s["EvaluationSuccess"], "the evaluation"),
                    "400": _json(s["EvaluationFailure"], "bad context"),
                    "404": _json(s["FlagNotFound"], "no such placement"),
                    **refused,
                },
            }
        },
        "/ofrep/v1/evaluate/flags": {
            "post": {
                "summary": "OFREP: evaluate every placement of the context's site",
                "security": optional_auth,
                "parameters": [
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                ],
                "requestBody": body,
                "responses": {
                    "200": {
                        **_json(s["BulkEvaluationSuccess"], "every flag"),
                        "headers": {"ETag": {"schema": {"type": "string"}}},
                    },
                    "304": {
                        "description": "not modified since the ETag given",
                        "headers": {"ETag": {"schema": {"type": "string"}}},
                    },
                    "400": _json(s["BulkEvaluationFailure"], "bad context"),
                    **refused,
                },
            }
        },
    }
