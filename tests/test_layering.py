"""protocols/ stays sans-IO: no trio, no sockets, no clock (DESIGN §1, STYLE §1)."""

from __future__ import annotations

import ast
from pathlib import Path

PROTOCOLS = Path(__file__).resolve().parent.parent / "protocols"
FORBIDDEN_MODULES = {"trio", "socket", "asyncio", "time", "gateway", "queues", "selectors"}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "monotonic", "perf_counter"}


def test_protocols_imports_no_io_and_reads_no_clock() -> None:
    files = sorted(PROTOCOLS.glob("*.py"))
    assert len(files) > 5
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                names = []
            bad = FORBIDDEN_MODULES.intersection(names)
            assert not bad, f"{path.name} imports {bad}"
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                assert node.attr not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} .{node.attr}"
