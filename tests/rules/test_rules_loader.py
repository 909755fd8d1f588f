"""Reading YAML and JSON into positioned nodes."""

from __future__ import annotations

from rules.loader import ScalarOrigin, load_text


def test_json_numbers_and_tabs() -> None:
    loaded = load_text('{\t"a": 1e5, "b": [1, 2.5, true, null], "c": "x\\u00e9"}', "f.json")
    assert loaded.diagnostics == []
    root = loaded.root
    assert root is not None
    a, b, c = root.get("a"), root.get("b"), root.get("c")
    assert a is not None and a.value == 100000.0
    assert b is not None and [i.value for i in b.items] == [1, 2.5, True, None]
    assert c is not None and c.value == "xé"


def test_positions_are_one_based_line_and_column() -> None:
    text = "sites:\n  default:\n    placements: {}\n"
    root = load_text(text, "f.yaml").root
    assert root is not None
    sites = root.get("sites")
    assert sites is not None and (sites.line, sites.col) == (2, 3)


def test_scalar_origin_maps_offsets_through_quotes_and_folding() -> None:
    text = 'when: "a == \\"b\\""\nw2: >-\n  x and\n  y\n'
    loaded = load_text(text, "f.yaml")
    assert loaded.root is not None
    node = loaded.root.get("when")
    assert node is not None and node.value == 'a == "b"'
    origin = ScalarOrigin(loaded.source, node, str(node.value))
    assert origin.position(0) == (1, 8)  # `a`
    assert origin.position(5) == (1, 14)  # the `"` (escaped in the file)
    node2 = loaded.root.get("w2")
    assert node2 is not None and node2.value == "x and y"
    o2 = ScalarOrigin(loaded.source, node2, str(node2.value))
    assert o2.position(6) == (4, 3)  # `y`, on the next line


def test_duplicate_keys_and_empty_files() -> None:
    d = load_text("a: 1\na: 2\n", "f.yaml").diagnostics
    assert [x.code for x in d] == ["duplicate-key"] and d[0].line == 2
    assert [x.code for x in load_text("", "f.yaml").diagnostics] == ["syntax"]
    assert [x.code for x in load_text("[1, 2", "f.json").diagnostics] == ["syntax"]


def test_yaml_booleans_keep_their_text() -> None:
    root = load_text("a: NO\nb: on\n", "f.yaml").root
    assert root is not None
    a = root.get("a")
    assert a is not None and a.value is False and a.text == "NO"


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    loaded = load_text("\n".join(lines) + "\n", "bomb.yaml")
    assert loaded.root is None
    assert [d.code for d in loaded.diagnostics] == ["too-long"]


def test_invalid_utf8_is_a_diagnostic() -> None:
    import rules

    ruleset, diags = rules.load(b"sites:\n  default: \xff\n", filename="x.yaml")
    assert ruleset is None
    assert [(d.code, d.line, d.col) for d in diags] == [("encoding", 2, 12)]


def test_recursive_aliases_are_refused() -> None:
    loaded = load_text("a: &a [1, *a]\n", "loop.yaml")
    assert loaded.root is None and loaded.diagnostics
