"""The package keeps the shape the README's Layout table states: every import goes to a lower layer
(so the graph has no cycle), training needs nothing of evaluation or translation, and the analysis
only benchmarks use stays out of the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cyclegan"


def layers_from_readme() -> dict[str, int]:
    """{module: layer} from the README's Layout table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Layout"):]
    layers = {}
    for number, modules in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, flags=re.M):
        for module in re.findall(r"`(\w+)`", modules):
            layers[module] = int(number)
    return layers


def top_module(path: Path) -> str:
    """The package-level module a file belongs to (cli/models.py belongs to cli)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_modules(path: Path) -> set[str]:
    """The package-level modules of cyclegan that ``path`` imports, at its top or inside functions."""
    inside_subpackage = path.parent != PACKAGE
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            up = node.level - (1 if inside_subpackage else 0)
            if up == 1 and node.module is None:
                found |= {alias.name for alias in node.names}
            elif up == 1:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cyclegan."):
            found.add(node.module.split(".")[1])
    return found - {top_module(path), "__version__"}


def package_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py") or p.parent != PACKAGE]


def test_every_module_is_in_the_layout_table():
    layers = layers_from_readme()
    assert len(layers) > 20
    assert {top_module(p) for p in package_files()} == set(layers)


def test_every_import_goes_to_a_lower_layer():
    layers = layers_from_readme()
    upward = [(top_module(p), target) for p in package_files() for target in imported_modules(p)
              if layers[target] >= layers[top_module(p)]]
    assert not upward, upward
    assert "objective" in imported_modules(PACKAGE / "training.py")  # the parser does see imports


def test_training_needs_nothing_of_evaluation_or_translation():
    for module in ("training", "objective", "run"):
        assert not imported_modules(PACKAGE / f"{module}.py") & {"evaluate", "inception", "translate", "heldout"}, module


def test_analysis_only_benchmarks_use_is_defined_outside_the_package():
    names = ("colour_mapping_ceiling", "periodic_peak", "global_part", "reference_step", "etching_look")
    for path in PACKAGE.rglob("*.py"):
        defined = {n.name for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & set(names), path
    benchmark_defined = {n.name for f in (ROOT / "benchmarks").glob("*.py")
                         for n in ast.walk(ast.parse(f.read_text(encoding="utf-8"))) if isinstance(n, ast.FunctionDef)}
    assert set(names) <= benchmark_defined
