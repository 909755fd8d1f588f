"""`rules` stands alone (SPEC §2): it imports nothing of `snapshots` or `server`."""

from __future__ import annotations

import subprocess
import sys


def test_rules_imports_no_other_part() -> None:
    code = (
        "import sys, rules, rules.cli, rules.engine\n"
        "parts = ('snapshots', 'server', 'bench')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in parts)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
