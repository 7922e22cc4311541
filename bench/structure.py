"""The structure figures of kohya_wrap/ that docs/architecture.md keeps in bounds, printed as a table.

    python bench/structure.py [--json] [--mypy-strict] [ROOT]

Figures: total lines; record codec functions (to_json/from_json/to_dict/from_dict-style); isinstance(x, dict)
walks; mentions of `Any`; import cycles among kohya_wrap's modules (lazy imports included); modules spelling
each record file name; functions over 50 lines; with --mypy-strict, the errors `mypy --strict` reports.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

RECORD_FILES = ("plan.json", "run.json", "events.jsonl", "score.json", "sweep.json", "prepare.json")
CODEC_NAME = re.compile(r"^_?(\w+_)?(to|from)_(json|dict)$|^_?(encode|decode)(_\w+)?$|^_?json_(value|cell)$")
DICT_WALK = re.compile(r"isinstance\([^()]*,\s*\(?[^()]*\b(dict|Mapping|MutableMapping)\b")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from package import submodule` imports the submodule, not the package's own names.
            submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
            targets = submodules if len(submodules) == len(node.names) else [module, *submodules]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def measure(root: Path, mypy_strict: bool) -> dict[str, object]:
    files = sorted(root.rglob("*.py"))
    sources = {path: path.read_text(encoding="utf-8") for path in files}
    names = {path: module_name(root, path) for path in files}
    known = set(names.values())
    codec: list[str] = []
    long_functions: list[str] = []
    graph: dict[str, set[str]] = {}
    dict_walks: list[str] = []
    any_count = 0
    spelled: dict[str, list[str]] = {record: [] for record in RECORD_FILES}
    for path, text in sources.items():
        tree = ast.parse(text)
        name = names[path]
        rel = str(path.relative_to(root.parent))
        checking = type_checking_lines(tree)
        # Imports made only for type checking cannot form a cycle at run time.
        runtime_tree = ast.Module(
            body=[
                n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and n.lineno not in checking
            ],
            type_ignores=[],
        )
        graph[name] = imports_of(runtime_tree, name, path.name == "__init__.py", known)
        any_count += len(re.findall(r"\bAny\b", text))
        for lineno, line in enumerate(text.splitlines(), 1):
            if DICT_WALK.search(line):
                dict_walks.append(f"{rel}:{lineno}")
        for record in RECORD_FILES:
            if f'"{record}"' in text or f"'{record}'" in text:
                spelled[record].append(rel)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 50:
                    long_functions.append(f"{rel}:{node.name} ({length})")
                if CODEC_NAME.match(node.name):
                    codec.append(f"{rel}:{node.name}")
    figures: dict[str, object] = {
        "lines": sum(text.count("\n") for text in sources.values()),
        "files": len(files),
        "codec_functions": len(codec),
        "dict_walks": len(dict_walks),
        "any": any_count,
        "import_cycles": cycles(graph),
        "record_file_spellings": {record: mods for record, mods in spelled.items()},
        "functions_over_50_lines": len(long_functions),
        "details": {"codec": codec, "dict_walks": dict_walks, "long_functions": sorted(long_functions)},
    }
    if mypy_strict:
        out = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", str(root)], capture_output=True, text=True, cwd=root.parent
        ).stdout
        figures["mypy_strict_errors"] = len([line for line in out.splitlines() if ": error:" in line])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1] / "kohya_wrap"))
    parser.add_argument("--json", action="store_true", help="print every figure and its details as JSON")
    parser.add_argument("--mypy-strict", action="store_true", help="also count the errors of mypy --strict")
    parser.add_argument("--verbose", action="store_true", help="list the codec functions, walks and long functions")
    args = parser.parse_args()
    figures = measure(Path(args.root).resolve(), args.mypy_strict)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    if args.verbose:
        for key, items in figures["details"].items():  # type: ignore[attr-defined]
            print(f"## {key}")
            for item in items:
                print(f"  {item}")
    spelled = figures["record_file_spellings"]
    print(f"{'figure':<36} value")
    print(f"{'lines of kohya_wrap/':<36} {figures['lines']}")
    print(f"{'python files':<36} {figures['files']}")
    print(f"{'record codec functions':<36} {figures['codec_functions']}")
    print(f"{'isinstance(x, dict) walks':<36} {figures['dict_walks']}")
    print(f"{'mentions of Any':<36} {figures['any']}")
    print(f"{'import cycles':<36} {len(figures['import_cycles'])} {figures['import_cycles']}")  # type: ignore[arg-type]
    for record, modules in spelled.items():  # type: ignore[attr-defined]
        print(f"{'modules spelling ' + record:<36} {len(modules)} {modules}")
    print(f"{'functions over 50 lines':<36} {figures['functions_over_50_lines']}")
    if "mypy_strict_errors" in figures:
        print(f"{'mypy --strict errors':<36} {figures['mypy_strict_errors']}")


if __name__ == "__main__":
    main()
