"""The house plan: the runtime core never depends on the shells or on the measuring code."""

import ast

from tests.conftest import ROOT

SHELLS = {"app.cli", "app.server", "app.openai_api"}  # openai_api: the server's API shapes


def imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_the_core_imports_neither_shells_nor_measuring_code():
    core = [p for p in (ROOT / "app").glob("*.py") if f"app.{p.stem}" not in SHELLS]
    assert {p.stem for p in core} >= {"engine", "dispatcher", "prompts", "bank", "training"}
    for path in core:
        for module in imported_modules(path):
            assert not module.startswith("app.measure"), f"{path.name} imports {module}"
            assert module not in SHELLS, f"{path.name} imports {module}"


def test_measuring_code_lives_in_app_measure():
    measured = {p.stem for p in (ROOT / "app" / "measure").glob("*.py")}
    assert {"bench", "evaluation", "baselines", "metrics", "report", "chat_quality"} <= measured
