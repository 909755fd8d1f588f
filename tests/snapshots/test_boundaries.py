"""`snapshots` stands alone (SPEC §2): it imports nothing of `rules`, `server` or `bench`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SNAPSHOTS = Path(__file__).resolve().parents[2] / "snapshots"
OURS = ("rules", "server", "bench", "tests")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SNAPSHOTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_snapshots_source_names_another_part() -> None:
    # Every import, even one inside a function or under TYPE_CHECKING, which the run-time check
    # below would not see.
    files = sorted(SNAPSHOTS.rglob("*.py"))
    assert len(files) > 10
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                names = ["(above snapshots) " + "." * node.level + (node.module or "")]
            bad += [
                f"{path.relative_to(SNAPSHOTS)}: {n}"
                for n in names
                if n.split(".")[0] in OURS or "above" in n
            ]
    assert not bad


def test_importing_every_snapshots_module_loads_no_other_part() -> None:
    # Subpackages too (`snapshots.engine` and its phases).
    modules = sorted(
        _module_name(p) for p in SNAPSHOTS.rglob("*.py") if p != SNAPSHOTS / "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"parts = {OURS!r}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in parts)))\n"
        "print(len([m for m in sys.modules if m.startswith('snapshots.')]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, count = out.stdout.splitlines()
    assert loaded == ""
    assert int(count) == len(modules)
