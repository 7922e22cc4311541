"""No stage reaches back: every import inside kohya_wrap, lazy and TYPE_CHECKING ones included, goes to a
module of its own row or a row above it in docs/architecture.md's table "Modules, from the bottom up".

The rows are read from the document, so the table and the code cannot drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kohya_wrap"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# the package's own __init__ (its __version__), the entry point and the shipped presets' data package
OUTSIDE_THE_ROWS = {"__init__", "__main__", "presets"}


def table_rows() -> dict[str, int]:
    """Each top-level module or package of kohya_wrap -> its row in the table, the bottom row first."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Modules, from the bottom up", 1)[1]
    table = [line for line in section.split("\n\n")[1].splitlines() if line.startswith("| `")]
    return {
        name.removesuffix(".py").removesuffix("/"): row
        for row, line in enumerate(table)
        for name in re.findall(r"`([^`]+)`", line.split("|")[1])
    }


def imports_of_the_package(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module of kohya_wrap) of every import of the package in a file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "kohya_wrap":
                found += [(node.lineno, a.name) for a in node.names]
            elif node.module.startswith("kohya_wrap."):
                found.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("kohya_wrap.")]
    return found


def test_the_table_names_every_module_of_the_package() -> None:
    rows = table_rows()
    assert len(set(rows.values())) >= 10, f"the table was not read: {rows}"
    on_disk = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    on_disk -= OUTSIDE_THE_ROWS | {"__pycache__"}
    assert on_disk - rows.keys() == set(), "modules missing from docs/architecture.md's table"
    assert rows.keys() - on_disk == set(), "the table names modules the package does not have"


def test_no_module_imports_a_later_row() -> None:
    rows = table_rows()
    reaching_back = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if module in OUTSIDE_THE_ROWS:
            continue
        for line, target in imports_of_the_package(path):
            if target == "__version__" or target in OUTSIDE_THE_ROWS:
                continue
            if rows[target] > rows[module]:
                reaching_back.append(f"{path.relative_to(ROOT)}:{line} ({module}) imports {target}, a later row")
    assert reaching_back == []
