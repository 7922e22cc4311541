"""Code outside kohya_wrap/sdscripts/ uses sd-scripts only through its surface: the modules
sdscripts.SURFACE names, and of each only the names in its __all__."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import kohya_wrap.sdscripts as sdscripts

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kohya_wrap"


def _imports_of_sdscripts() -> list[tuple[str, int, str, str]]:
    """(file, line, module, name) of every name imported from kohya_wrap.sdscripts outside the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "sdscripts") in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            rel = str(path.relative_to(ROOT))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kohya_wrap.sdscripts"):
                found += [(rel, node.lineno, node.module or "", a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [
                    (rel, node.lineno, a.name, "") for a in node.names if a.name.startswith("kohya_wrap.sdscripts")
                ]
    return found


def test_only_the_surface_is_imported_from_outside() -> None:
    imports = _imports_of_sdscripts()
    assert imports, "the scan found no use of sdscripts at all"
    wrong = []
    for file, line, module, name in imports:
        if module == "kohya_wrap.sdscripts":
            allowed = set(sdscripts.__all__)
        elif module.removeprefix("kohya_wrap.sdscripts.") in sdscripts.SURFACE:
            allowed = set(importlib.import_module(module).__all__)
        else:
            allowed = set()
        if name not in allowed:
            wrong.append(f"{file}:{line}: {module} {name}")
    assert not wrong, "imports of sdscripts beyond its surface:\n" + "\n".join(wrong)


def test_the_surface_names_exist_and_are_few() -> None:
    names = set(sdscripts.__all__)
    for module in sdscripts.SURFACE:
        loaded = importlib.import_module(f"kohya_wrap.sdscripts.{module}")
        for name in loaded.__all__:
            assert hasattr(loaded, name), f"sdscripts.{module}.__all__ names {name}, which it lacks"
        names |= {f"{module}.{n}" for n in loaded.__all__}
    # 121 names on one lazily loaded facade before; a few operations and their records now
    assert len(names) <= 88, len(names)


def test_the_package_imports_none_of_its_modules() -> None:
    code = "import sys, kohya_wrap.sdscripts; print([m for m in sys.modules if m.startswith('kohya_wrap.sdscripts.')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
