"""The house plan: layers as packages, each importing only the ones below it.

    base (errors, config, models, atomic)  <-  llm  <-  roles  <-  jobs  <-  shells (cli, server)

and the measuring code (app/measure) is imported by one shell module only: the CLI's measuring
commands. Every import counts: inside functions and under TYPE_CHECKING too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

APP = ROOT / "app"
BASE = {"app.errors", "app.config", "app.models", "app.atomic"}
LAYERS = ["base", "llm", "roles", "jobs", "shells"]
MEASURING_SHELL = "app.cli.measuring"
# The package's front door and the old import paths kept for users: they re-export only.
FACADES = {"app", "app.json_output", "app.tools", "app.ray_classify"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer an app module belongs to; None for the measuring code and the façades."""
    if module in BASE:
        return "base"
    if module in FACADES or module.startswith("app.measure"):
        return None
    package = module.split(".")[1]
    return {"llm": "llm", "roles": "roles", "jobs": "jobs", "cli": "shells", "server": "shells"}[
        package
    ]


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


MODULES = sorted(APP.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_its_own_layer_and_those_below(path):
    name = module_name(path)
    own = layer_of(name)
    for module in imported_modules(path):
        if not module.startswith("app.") and module != "app":
            continue
        if module.startswith("app.measure"):
            assert name.startswith("app.measure") or name == MEASURING_SHELL, (
                f"{name} imports the measuring code ({module}); only {MEASURING_SHELL} may"
            )
            continue
        if own is None or module == "app":
            assert module != "app" or name in FACADES or own is None or own == "shells", (
                f"{name} imports the package front door; import the module itself"
            )
            continue
        theirs = layer_of(module)
        assert theirs is not None, f"{name} imports a façade ({module})"
        assert LAYERS.index(theirs) <= LAYERS.index(own), (
            f"{name} ({own}) imports {module} ({theirs}): a layer may use only those below it"
        )


def test_the_layers_are_packages_a_reader_can_see():
    loose = sorted(p.name for p in APP.glob("*.py"))
    assert len(loose) <= 10, loose
    for package in ("llm", "roles", "jobs", "cli", "server", "measure"):
        assert (APP / package / "__init__.py").is_file(), package
    assert {p.stem for p in (APP / "measure").glob("*.py")} >= {
        "bench",
        "evaluation",
        "baselines",
        "metrics",
        "report",
        "chat_quality",
    }


def test_llama_cpp_python_internals_live_in_one_module():
    """Its private names and low-level calls may change between its releases: one place."""
    markers = ("_internals", "._ctx", "._model", "llama_decode", "llama_batch_", "llama_state_seq")
    users = {
        module_name(path)
        for path in MODULES
        if any(marker in code_only(path) for marker in markers)
    }
    assert users <= {"app.llm.native"}, users


def code_only(path: Path) -> str:
    """The module's source without its docstrings and comments."""
    source = path.read_text(encoding="utf-8")
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docstrings.update(range(node.lineno, node.end_lineno + 1))
    lines = source.splitlines()
    return "\n".join(
        line.split("#")[0] for number, line in enumerate(lines, 1) if number not in docstrings
    )
