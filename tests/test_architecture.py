"""The layers hold: algorithms/ and envs/ import only the base layer (``rlad.core``, the folder
platform/core), the base layer imports no algorithm and nothing of ``rlad.platform``, envs import
no algorithm, and nothing imports the CLI."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (folder, prefixes its modules must never import, why)
RULES = [
    ("algorithms", ("rlad.platform.runtime", "rlad.platform.cli", "rlad.tune_specs"), "algorithms are a library: runtime uses them, not the reverse"),
    ("envs", ("rlad.algorithms", "rlad.platform.runtime", "rlad.platform.cli", "rlad.tune_specs"), "envs sit below algorithms"),
    ("platform/core", ("rlad.algorithms", "rlad.envs", "rlad.platform", "rlad.tune_specs"), "core is the base layer"),
    ("platform/runtime", ("rlad.platform.cli",), "the CLI drives the runtime, not the reverse"),
    ("tune_specs", ("rlad.platform.runtime", "rlad.platform.cli"), "specs and their schema only"),
]


def imported_modules(source: str) -> set[str]:
    """Every module an import statement names, at any depth (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in imported_modules(path.read_text()):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("folder, forbidden, why", RULES, ids=[r[0] for r in RULES])
def test_no_import_crosses_a_layer_the_wrong_way(folder, forbidden, why):
    assert (ROOT / folder).is_dir()
    assert violations(folder, forbidden) == [], why


def test_the_base_layer_has_one_import_path():
    """``platform/core`` is importable as ``rlad.platform.core`` too (a folder of a namespace
    package); a module imported under both names would exist twice, with two sets of classes."""
    found = [v for folder in ("algorithms", "envs", "platform", "tune_specs", "tests", "benchmarks")
             for v in violations(folder, ("rlad.platform.core",))]
    assert found == []


def test_checker_sees_nested_and_from_imports():
    source = "import os\ndef f():\n    from rlad.platform.runtime import serving\n    import rlad.platform.cli.main\n"
    names = imported_modules(source)
    assert {"rlad.platform.runtime", "rlad.platform.runtime.serving", "rlad.platform.cli.main"} <= names


def test_every_cli_module_lives_under_platform_cli():
    cli = ROOT / "platform" / "cli"
    stray = [str(p.relative_to(ROOT)) for folder in ("algorithms", "envs", "platform", "tune_specs")
             for p in (ROOT / folder).rglob("*cli*.py") if cli not in p.parents]
    assert stray == []
