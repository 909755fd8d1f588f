"""The rooms of `server/` (SPEC §2) hold as the folders say: no import cycle anywhere in `server/`,
no room reaching into one it must not know, no module taking another's private `_name`.

The graph is read from the source with `ast` — every `import`, including those under
`TYPE_CHECKING` and inside functions, since a cycle that only type checking sees is still a cycle
a reader has to untangle — so it needs no import of the code and shows what the code says.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[2] / "server"

# Shared ground at the root of `server/`: what every room may stand on. It imports no room.
GROUND = {
    "server",
    "server.asgi",
    "server.auth",
    "server.config",
    "server.decision_log",
    "server.memo",
    "server.metrics",
    "server.schemas",
    "server.visitor",
}
# Who may not import whom, room by room (transitively: a way round through another module counts).
# `decide/` and `live/` stand below the worker's state (server/state.py composes them): their
# routes name what they need of it as a protocol instead of importing it.
NEVER = {
    "server.decide": ("server.edge", "server.lifecycle", "server.offline", "server.state"),
    "server.lifecycle": ("server.edge", "server.offline"),
    "server.live": (
        "server.edge",
        "server.decide",
        "server.lifecycle",
        "server.offline",
        "server.state",
    ),
    "server.edge": ("server.lifecycle", "server.offline"),
    "server.offline": ("server.edge", "server.decide", "server.lifecycle", "server.live"),
    # OFREP is a view of the decision service: it stands on decide/ (and so on live/) only.
    "server.ofrep": ("server.edge", "server.lifecycle", "server.offline", "server.state"),
}
# The composition root and the command line: nothing in a room or the ground imports them.
TOP = ("server.app", "server.cli", "server.serve")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SERVER.rglob("*.py"))}


def _imports(name: str, path: Path) -> dict[str, set[str]]:
    """The `server` modules `name` imports, each with the names it takes from them."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:  # `from . import serve`: the module itself
                    found.setdefault(sub, set())
                elif base in MODULES:
                    found.setdefault(base, set()).add(alias.name)
    found.pop(name, None)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(GRAPH[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(GRAPH[name])
    return seen


def _in(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


def test_the_graph_is_read() -> None:
    # A reader that found nothing would pass every test below.
    assert {"server.edge.protocol", "server.decide.service", "server.lifecycle.pipeline"} <= set(
        MODULES
    )
    assert "server.edge.remembering" in GRAPH["server.edge.protocol"]
    assert "server.decide.world" in GRAPH["server.lifecycle.pipeline"]
    assert "server.decide.route" in GRAPH["server.app"]


def test_no_import_cycle_in_server() -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(GRAPH[name]):
            cycle = visit(target, [*path, name])
            if cycle is not None:
                return cycle
        done.add(name)
        return None

    for name in sorted(GRAPH):
        cycle = visit(name, [])
        assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("room", sorted(NEVER))
def test_a_room_never_reaches_the_rooms_it_must_not_know(room: str) -> None:
    for name in (m for m in GRAPH if _in(m, room)):
        reached = _reachable(name)
        bad = sorted(r for r in reached for other in NEVER[room] if _in(r, other))
        assert not bad, f"{name} reaches {bad}"


def test_the_ground_imports_no_room_and_nothing_imports_the_top() -> None:
    for name in GROUND:
        assert all(target in GROUND for target in GRAPH[name]), (name, sorted(GRAPH[name]))
    for name, targets in GRAPH.items():
        if name not in TOP:
            assert not [t for t in targets if t in TOP], (name, sorted(targets))


def test_the_protocol_is_handed_its_routes_and_never_imports_the_app() -> None:
    reached = _reachable("server.edge.protocol")
    assert "server.app" not in reached
    source = MODULES["server.edge.protocol"].read_text()
    # (`\b`: `.append` and `.app_state` are not the app.)
    assert re.search(r"\.app\b", source) is None


def test_no_module_takes_another_ones_private_name() -> None:
    taken = [
        f"{name} takes {target}.{taken}"
        for name, targets in GRAPH.items()
        for target, names in targets.items()
        for taken in names
        if taken.startswith("_") and not taken.startswith("__")
    ]
    assert not taken
