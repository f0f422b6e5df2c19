"""The library's dependencies point one way: cest/ (plain PyTorch) imports neither pipelines/ nor jobs/, and
pipelines/ does not import jobs/. Checked by reading every import statement, including those inside functions."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(path: Path) -> set[str]:
    """Top-level package names of every absolute import in a Python file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imported_packages_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("import numpy as np\n\ndef f():\n    from pipelines.align import warp\n    import jobs.runs\n"
                      "    from . import sibling\n")
    assert imported_packages(source) == {"numpy", "pipelines", "jobs"}


@pytest.mark.parametrize("package, forbidden", [("cest", {"pipelines", "jobs"}), ("pipelines", {"jobs"})])
def test_package_does_not_import(package, forbidden):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & forbidden) for path in files}
    assert {path: names for path, names in offenders.items() if names} == {}
