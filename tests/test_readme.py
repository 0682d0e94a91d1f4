"""The README's Python blocks run as written, so the front door cannot drift from the code.

Every ```python block of README.md is a case here, run by exec in a fresh namespace:

- Run on the real model (marked `model`): every block without an example marker. Today: the
  Python API block (sentiment, a streamed reply, feel + reply, history, a role by name, a
  Completion's usage and logprobs, embeddings), the JSON and tools block, and the block that
  labels the user's own file, whose `reviews.txt` is a fixture (a temporary file of reviews).
  Each runs as a user's script would, with the user's settings and cache folder
  (`~/.cache/allinone`: the first run reads the chat role's example bank there once, minutes;
  later runs reuse it), in a temporary working folder: a block writes nothing into the
  repository, nor any file beside the one it reads.
- Skipped, as examples: a block whose first line is `# example: needs ...`, naming what it needs
  that one machine with the model does not have: a running server (the OpenAI client block) or
  Ray and the user's own Parquet files (the `classify_dataset` block). Such a block is still
  compiled and its imports from `app` resolved; no block without the marker is ever skipped.

Also here, without the model: the README shows the public API's imports, and every relative link
of README.md and docs/ points at a file (and a heading) that exists.
"""

from __future__ import annotations

import ast
import gc
import importlib
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
EXAMPLE = "# example:"
# What an example block may give as the reason it is not run here.
EXAMPLE_NEEDS = ("server", "ray", "cluster", "your own")
PUBLIC_API = {
    "Assistant",
    "Turn",
    "Verdict",
    "Completion",
    "JsonFormat",
    "Tool",
    "split_tool_calls",
}
REVIEWS = ["这家酒店太棒了，房间干净，服务热情。", "", "质量太差，用了两天就坏了。", "还行吧。"]


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first code line, code) of each ```python block, in order."""
    blocks, code, start = [], None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if code is None and line.strip() == "```python":
            code, start = [], number + 1
        elif code is not None and line.strip() == "```":
            blocks.append((start, "\n".join(code) + "\n"))
            code = None
        elif code is not None:
            code.append(line)
    assert code is None, f"{path.name}: a ```python block opened at line {start - 1} never closes"
    return blocks


BLOCKS = python_blocks(README)
RUNNABLE = [block for block in BLOCKS if not block[1].startswith(EXAMPLE)]
EXAMPLES = [block for block in BLOCKS if block[1].startswith(EXAMPLE)]


def block_id(block: tuple[int, str]) -> str:
    return f"README.md:{block[0]}"


def compiled(block: tuple[int, str]):
    """The block's code object, its line numbers the README's (so a traceback points there)."""
    start, code = block
    return compile("\n" * (start - 1) + code, str(README), "exec")


def imports_from_app(code: str) -> list[tuple[str, str]]:
    """(module, name) of every `from app... import name` in the code."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "app":
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_the_readme_has_runnable_blocks_and_every_other_block_says_why_not():
    assert len(RUNNABLE) >= 3, "the README's Python API should show blocks that run"
    for start, code in EXAMPLES:
        reason = code.splitlines()[0].removeprefix(EXAMPLE).strip().lower()
        assert any(need in reason for need in EXAMPLE_NEEDS), (
            f"README.md:{start}: an example block must say what it needs that this machine "
            f"lacks ({', '.join(EXAMPLE_NEEDS)}), not {reason!r}"
        )
    for start, code in RUNNABLE:
        assert EXAMPLE not in code.splitlines()[0], f"README.md:{start}: marker on the first line"


def test_the_readme_shows_the_public_api_imported_from_app():
    imported = [pair for _, code in BLOCKS for pair in imports_from_app(code)]
    shown = {name for module, name in imported if module == "app"}
    assert shown >= PUBLIC_API, f"not imported from app in the README: {PUBLIC_API - shown}"


@pytest.mark.parametrize("block", EXAMPLES, ids=block_id)
def test_example_block_compiles_and_its_app_imports_resolve(block):
    compiled(block)
    for module, name in imports_from_app(block[1]):
        assert hasattr(importlib.import_module(module), name), f"{block_id(block)}: {module}.{name}"
    pytest.skip(f"{block_id(block)} is an example: {block[1].splitlines()[0]}")


@pytest.mark.model
@pytest.mark.parametrize("block", RUNNABLE, ids=block_id)
def test_readme_block_runs(block, model_path, tmp_path, monkeypatch, capsys):
    """`model_path`: a missing model fails here with the download command, not in the block."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reviews.txt").write_text("\n".join(REVIEWS) + "\n", encoding="utf-8")
    namespace: dict = {"__name__": "__readme__"}
    try:
        exec(compiled(block), namespace)
    finally:
        namespace.clear()  # the block's model goes now, not at the end of the session
        gc.collect()
    assert capsys.readouterr().out.strip(), f"{block_id(block)} printed nothing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.txt"], "the block wrote files"


# -- links --------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's ids for the page's headings: lower case, punctuation dropped, spaces to '-'."""
    ids = set()
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            ids.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return ids


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_something_that_exists(page):
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"
