"""schemathesis against OFREP's own OpenAPI document (spec/openapi.yaml, unmodified) and a real
server: generated requests, valid and invalid by the spec, to both evaluation routes; every answer
is below 500, has a status, content type and body the spec declares for it. Bounded by
`EDGESIDE_FUZZ_EXAMPLES` (default 25 per operation here). `/ofrep/v1/configuration` is an optional
extension edgeside does not serve.

Two deviations, made in a copy, each where the spec contradicts itself. First, the spec's `reason`
enum lists STATIC, TARGETING_MATCH, SPLIT, DISABLED and UNKNOWN, while its description points to
OpenFeature's resolution reasons, which add DEFAULT, CACHED, STALE and ERROR. edgeside says DEFAULT
when a placement's default was given (no rule matched, or a fallback) — the OpenFeature reason for
that, accepted by both providers (test_providers.py) — so the copy's enum is OpenFeature's list.
Second, `codeDefaultFlag` ("this schema has no `value` property") declares only `properties: {}`,
which every object satisfies: a valued answer then matches two branches of `evaluationSuccess`'s
`oneOf` and no answer with a value could conform. The copy says what its description says (`not:
{required: [value]}`).
Nothing else is changed, and the test checks that the copy differs by those lines alone."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

from bench.procs import Edgeside
from tests.provekit import bounded

SPEC = Path(__file__).with_name("spec") / "openapi.yaml"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


SPEC_REASONS = "enum: [STATIC, TARGETING_MATCH, SPLIT, DISABLED, UNKNOWN]"
OPENFEATURE_REASONS = (
    "enum: [STATIC, DEFAULT, TARGETING_MATCH, SPLIT, CACHED, DISABLED, UNKNOWN, STALE, ERROR]"
)

CODE_DEFAULT = "      properties: {}\n"
NO_VALUE = "      properties: {}\n      not: {required: [value]}\n"


def test_the_ofrep_spec_finds_nothing(server: Edgeside, tmp_path: Path) -> None:
    text = SPEC.read_text()
    assert text.count(SPEC_REASONS) == 1
    widened = tmp_path / "openapi.yaml"
    assert text.count(CODE_DEFAULT) == 1
    widened.write_text(
        text.replace(SPEC_REASONS, OPENFEATURE_REASONS).replace(CODE_DEFAULT, NO_VALUE)
    )
    diff = list(difflib.ndiff(text.splitlines(), widened.read_text().splitlines()))
    assert [line[2:].strip() for line in diff if line[:2] in ("+ ", "- ")] == [
        SPEC_REASONS,
        OPENFEATURE_REASONS,
        "not: {required: [value]}",
    ]
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        str(widened),
        "--url",
        server.url,
        "--checks",
        CHECKS,
        "--max-examples",
        str(bounded("EDGESIDE_FUZZ_EXAMPLES", 25)),
        "--seed",
        "20261204",
        "--request-timeout",
        "5",
        "--include-path-regex",
        "^/ofrep/v1/evaluate/",
        "--output-truncate",
        "false",
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    assert "2 selected" in report or "2 passed" in report, report[-3000:]
    assert "Traceback" not in server.output(), server.output()[-4000:]
