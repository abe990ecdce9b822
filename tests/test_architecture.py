"""The layering of docs/architecture.md, checked on the source: each part imports only what it may."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "semlens"
BASICS = {"errors", "windows", "metrics", "executors", "interrupts", "runtime"}
# part -> the semlens parts it may import (besides itself). Packages count as one part.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "windows": set(),
    "metrics": set(),
    "executors": set(),
    "interrupts": {"errors"},
    "runtime": {"errors"},
    "io": {"errors"},
    "semantics": {"errors", "windows"},
    "enhancer": {"semantics", "errors"},
    "tiling": {"enhancer", "semantics", "errors", "runtime"},
    "hub": {"enhancer", "semantics", "errors"},
    "pipeline": {"enhancer", "semantics", "io", "tiling", "windows", "errors", "runtime"},
    "scan": {"io", "errors"},
    "upscaler": {"pipeline", "hub", "io", "enhancer", "semantics", "tiling", "scan"} | BASICS,
    "segments": {"upscaler", "pipeline", "io", "semantics", "windows", "errors", "runtime"},
    "distributed": {"upscaler", "segments", "io", "enhancer", "scan"} | BASICS,
    "describe": {"upscaler", "io", "errors", "windows"},
    "compare": {"upscaler", "evaluate", "io", "errors"},
    "evaluate": {"io", "metrics", "scan", "train", "errors"},
    "train": {"enhancer", "semantics", "hub", "windows", "metrics", "io", "errors", "runtime"},
    "__init__": {"upscaler", "hub"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    found = set()
    package = ["semlens", *path.relative_to(ROOT).parent.parts] if path.is_relative_to(ROOT) else ["semlens"]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom):  # relative: resolved against the file's package
            base = package[:len(package) - (node.level - 1)]
            names = [".".join(base + ([node.module] if node.module else [a.name for a in node.names][:1]))]
        for name in names:
            if name == "semlens_cli" or name.startswith("semlens_cli."):
                found.add("semlens_cli")
            elif name.startswith("semlens."):
                found.add(name.split(".")[1])
    return found


def test_every_part_is_known_and_imports_only_what_it_may() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        part = _part(path)
        assert part in ALLOWED, f"{path.relative_to(ROOT)} belongs to no part of docs/architecture.md"
        for target in sorted(_imports(path) - {part}):
            if target not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_checker_sees_a_forbidden_import(tmp_path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from semlens.hub import load_model\nimport semlens_cli.main\n", encoding="utf-8")
    assert _imports(bad) == {"hub", "semlens_cli"}
    assert _imports(ROOT / "io" / "writer.py") >= {"errors"}  # relative imports count too
