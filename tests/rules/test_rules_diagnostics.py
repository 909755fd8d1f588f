"""What `rules check` tells a marketer: positions exact to the column, a caret, a suggestion."""

from __future__ import annotations

from rules_fakes import SCHEMA, diagnostics, one_rule

import rules

BASE = (
    SCHEMA
    + """
segments:
  gold: profile.tier == "gold"
sites:
  default:
    placements:
      home_hero:
        default: default
        rules:
          - id: r1
            when: profile.tierr == "gold"
            then: v1
"""
)


def only(diags: list[rules.Diagnostic], code: str) -> rules.Diagnostic:
    found = [d for d in diags if d.code == code]
    assert len(found) == 1, [rules.render(d) for d in diags]
    return found[0]


def line_of(text: str, needle: str) -> tuple[int, int]:
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n, line.index(needle) + 1
    raise AssertionError(needle)


def test_unknown_attribute_has_exact_position_caret_and_suggestion() -> None:
    d = only(diagnostics(BASE, "shop.yaml"), "unknown-attribute")
    line, col = line_of(BASE, "tierr")
    assert (d.line, d.col, d.end_col) == (line, col, col + len("tierr"))
    assert d.message == "unknown attribute `profile.tierr`"
    assert d.suggestion == "did you mean `tier`?"
    text = rules.render(d)
    head, src, caret, help_ = text.splitlines()
    assert (
        head
        == f"shop.yaml:{line}:{col}: error[unknown-attribute]: unknown attribute `profile.tierr`"
    )
    assert src.endswith('when: profile.tierr == "gold"')
    assert caret.index("^") == src.index("tierr") and caret.count("^") == 5
    assert help_.endswith("help: did you mean `tier`?")


def test_unknown_segment_context_field_function_and_placement() -> None:
    text = BASE.replace(
        'profile.tierr == "gold"', "segment.gld and ctx.hourr > 3 and dayz_since(1) > 0"
    )
    text += """
experiments:
  - id: e
    salt: s
    placement: home_heroo
    arms: [{name: a, weight: 0.5}, {name: b, weight: 0.5}]
"""
    diags = diagnostics(text)
    seg = only(diags, "unknown-segment")
    assert seg.suggestion == "did you mean `gold`?"
    assert (seg.line, seg.col) == line_of(text, "gld")
    field = only(diags, "unknown-name")
    assert field.suggestion == "did you mean `hour`?"
    fn = only(diags, "unknown-function")
    assert fn.suggestion == "did you mean `days_since`?"
    pl = only(diags, "unknown-placement")
    assert pl.suggestion == "did you mean `home_hero`?"
    assert (pl.line, pl.col) == line_of(text, "home_heroo")


def test_many_errors_reported_at_once_sorted_by_position() -> None:
    text = BASE.replace('profile.tierr == "gold"', 'profile.tier == "gld" and profile.ltv > "x"')
    text = text.replace("default: default", "default: default\n        strategy: first_mach")
    diags = diagnostics(text)
    codes = [d.code for d in diags]
    assert codes == ["bad-value", "enum-value", "type-mismatch"]
    assert [d.line for d in diags] == sorted(d.line for d in diags)
    assert diags[0].suggestion == "did you mean `first_match`?"
    assert diags[1].suggestion == "did you mean `gold`?"


def test_syntax_errors_point_at_the_offending_token() -> None:
    for expr, needle, fragment in [
        ("profile.ltv > ", None, "ends too early"),
        ("profile.ltv = 3", "=", "use `==`"),
        ("profile.ltv > 1 > 0", "> 0", "cannot be chained"),
        ('profile.tier == "gold', '"gold', "not closed"),
        ("(profile.ltv > 1", None, "expected `)`"),
        ("profile.ltv > 1 && true", "&", "write `and`"),
        ("profile.ltv 3", "3", "unexpected `3`"),
    ]:
        text = one_rule(expr)
        d = only(diagnostics(text), "syntax")
        assert fragment in d.message, d.message
        line, col = line_of(text, expr)
        assert d.line == line
        offset = len(expr) if needle is None else expr.index(needle)
        assert d.col == col + offset, (expr, d)


def test_type_errors() -> None:
    cases = {
        "profile.ltv": "must be true or false",
        "profile.tier and true": "needs true/false",
        '"x" + 1 == 2': "not defined between",
        "profile.ltv < null": "always false",
        "count(profile.ltv) > 1": "needs a list",
        'profile.ltv.startswith("a")': "works on strings",
        "profile.tier.matches(profile.country)": "literal pattern",
        'profile.tier.matches("(")': "invalid pattern",
        "has(profile.segments)": "takes 2 arguments",
    }
    for expr, fragment in cases.items():
        diags = [d for d in diagnostics(one_rule(expr)) if d.severity == "error"]
        assert diags, expr
        assert any(fragment in d.message for d in diags), (expr, [d.message for d in diags])


def test_cyclic_segments() -> None:
    text = (
        SCHEMA
        + """
segments:
  a: segment.b and profile.ltv > 1
  b: segment.c
  c: segment.a
  d: segment.d
sites:
  default:
    placements:
      p: {default: x, rules: [{id: r, when: segment.a or segment.d, then: y}]}
"""
    )
    cycles = [d for d in diagnostics(text) if d.code == "cycle"]
    messages = sorted(d.message for d in cycles)
    assert messages == [
        "segment `a` depends on itself: a → b → c → a",
        "segment `d` depends on itself: d → d",
    ]


def test_duplicate_ids_and_keys() -> None:
    text = (
        SCHEMA
        + """
sites:
  default:
    placements:
      p:
        default: x
        rules:
          - {id: r, when: true, then: a}
          - {id: r, when: false, then: b}
      p:
        default: y
actions:
  - {id: a1, priority: 1}
  - {id: a1, priority: 2}
"""
    )
    codes = sorted(d.code for d in diagnostics(text))
    assert codes == ["duplicate-id", "duplicate-id", "duplicate-key"]


def test_weights_must_sum_to_one() -> None:
    text = (
        one_rule("true")
        + """
experiments:
  - id: e
    salt: s
    placement: p
    holdout: 0.1
    arms:
      - {name: a, weight: 0.5}
      - {name: b, weight: 0.4}
"""
    )
    d = only(diagnostics(text), "weights")
    assert d.message == "arm weights of `e` sum to 0.9; they must sum to 1"
    assert d.line == line_of(text, "- {name: a")[0]


def test_limits_on_depth_and_length() -> None:
    deep = "(" * 40 + "true" + ")" * 40
    assert only(diagnostics(one_rule(deep)), "too-deep")
    chain = " or ".join(["profile.ltv > 1"] * 80)
    assert only(diagnostics(one_rule(chain)), "too-deep")
    long = "profile.ltv > 1 and " * 120 + "true"
    assert only(diagnostics(one_rule(long)), "too-long")


def test_control_characters_rejected() -> None:
    text = one_rule('profile.tier == "go\x01ld"'.replace("\x01", "\\x01"))
    # YAML double-quoted escapes are the only way to smuggle them into a YAML file.
    text = text.replace(
        "when: 'profile.tier == \"go\\x01ld\"'", "when: \"profile.tier == 'go\\x01ld'\""
    )
    d = only(diagnostics(text), "control-char")
    assert "U+0001" in d.message
    ids = one_rule("true").replace("id: r", 'id: "r\\x07"')
    assert only(diagnostics(ids), "control-char")


def test_json_files_get_the_same_checks_and_positions() -> None:
    text = """{
  "schema": {"attributes": {"tier": "string"}},
  "sites": {"default": {"placements": {"p": {
    "default": "x",
    "rules": [{"id": "r", "when": "profile.tierr == \\"gold\\"", "then": "y"}]
  }}}}
}"""
    d = only(diagnostics(text, "r.json"), "unknown-attribute")
    line, col = line_of(text, "tierr")
    assert (d.line, d.col) == (line, col)
    bad = only(diagnostics('{"sites": {,}}', "r.json"), "syntax")
    assert (bad.line, bad.col) == (1, 12) and "invalid JSON" in bad.message


def test_yaml_syntax_errors_have_positions() -> None:
    d = only(diagnostics("sites:\n  default: [\n", "x.yaml"), "syntax")
    assert d.line >= 2 and "invalid YAML" in d.message


def test_unknown_fields_are_suggested() -> None:
    text = one_rule("true").replace("then: yes", "thn: yes")
    d = next(x for x in diagnostics(text) if x.code == "unknown-field")
    assert d.suggestion == "did you mean `then`?"


def test_multiline_expressions_map_back_to_their_line() -> None:
    text = (
        SCHEMA
        + """
sites:
  default:
    placements:
      p:
        default: x
        rules:
          - id: r
            when: >-
              profile.ltv > 1
              and profile.tierr == "gold"
            then: y
"""
    )
    d = only(diagnostics(text), "unknown-attribute")
    assert (d.line, d.col) == line_of(text, "tierr")


def test_norway_stays_a_string() -> None:
    text = SCHEMA.replace("ltv: number", "ltv: number\n    c2: {type: string, values: [NO, SE]}")
    text = one_rule('profile.c2 == "NO"').replace(SCHEMA, text)
    assert [d for d in diagnostics(text) if d.severity == "error"] == []


def test_pick_mistakes() -> None:
    text = (
        SCHEMA
        + """
sites:
  default:
    placements:
      p:
        default:
          variant: d
          content: {tags: [a], exclude: [views, veiws], rank: {affinty: 1}, limit: 0}
      q:
        default: {variant: d, content: {limit: 2}}
      r:
        default: {variant: d, content: {type: banner, exclude: cart}}
"""
    )
    diags = diagnostics(text)
    by_code = sorted((d.code, d.suggestion) for d in diags)
    assert by_code == [
        ("bad-pick", "a pick filters the content indexes; it never scans the whole catalogue"),
        ("bad-value", None),
        ("unknown-field", "did you mean `affinity`?"),
        ("unknown-field", "did you mean `views`?"),
    ]
