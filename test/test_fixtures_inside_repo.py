"""No test reads outside the clone: a fresh `git clone` passes its own tests with nothing beside it.

The official reference tensors live in test/fixtures/official/. These checks read every test file's
source (AST, not a grep of comments) for the ways a path escapes the repository: a `..` or an
absolute path in a string, `parents[k]` above the repository root, `REPO.parent`, or a path taken
from the environment. And every fixture the tests name must be in the repository.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO

TEST_DIR = REPO / "test"
TEST_FILES = sorted(TEST_DIR.rglob("*.py"))
SHARED_VARIABLE = "VJEPA2_" + "SHARED"               # the old way out (in pieces: this file is grepped too)
ALLOWED_ABSOLUTE = ("/dev/",)                      # device files some tests name; not data


def is_filesystem_path(text: str) -> bool:
    """An absolute path into this machine's folders ("/work/shared/x"), not a ROS name ("/camera/image")."""
    if not text.startswith("/") or text.startswith(ALLOWED_ABSOLUTE) or " " in text or "\n" in text:
        return False
    top = text.split("/")[1]
    return bool(top) and Path("/", top).is_dir()


def escapes(tree: ast.AST, depth: int) -> list[str]:
    """Reasons a module's AST may read outside the repository; `depth`: the file's folder depth
    below the repository root (test/x.py: 1), so `Path(__file__).parents[depth]` is the root."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if "../" in text or "..\\" in text or text == "..":
                found.append(f"line {node.lineno}: relative path up out of the tree: {text!r}")
            if is_filesystem_path(text):
                found.append(f"line {node.lineno}: absolute path: {text!r}")
            if "shared/" in text or SHARED_VARIABLE in text:
                found.append(f"line {node.lineno}: names the shared/ folder: {text!r}")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "parents" and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, int) and node.slice.value > depth:
            found.append(f"line {node.lineno}: parents[{node.slice.value}] is above the repository root")
        elif isinstance(node, ast.Attribute) and node.attr == "parent" and isinstance(node.value, ast.Name) \
                and node.value.id == "REPO":
            found.append(f"line {node.lineno}: REPO.parent is outside the repository")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("get", "getenv", "__getitem__") and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                and any(w in node.args[0].value.upper() for w in ("SHARED", "FIXTURE", "DATA_DIR")):
            found.append(f"line {node.lineno}: a path from the environment: {node.args[0].value!r}")
    return found


def test_the_scan_catches_each_way_out():
    # Spelled in pieces, so this file itself does not read as a way out to a grep for them.
    bad = """
import os
from pathlib import Path
A = Path(__file__).resolve().parents[2] / "x"
B = REPO.parent / "{shared}"
C = os.environ.get("{env}", "")
D = "{up}{shared}/fixtures/official"
E = "/work/{shared}/spec/keys.txt"
""".format(shared="sha" + "red", env=SHARED_VARIABLE, up="." + "./")
    reasons = escapes(ast.parse(bad), depth=1)
    assert len(reasons) >= 5, reasons
    good = 'from pathlib import Path\nA = Path(__file__).resolve().parents[1] / "config"\nB = "/dev/null"\n'
    assert escapes(ast.parse(good), depth=1) == []


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(TEST_DIR)))
def test_no_test_file_reads_outside_the_repository(path: Path):
    if path.name == Path(__file__).name:
        pytest.skip("this file spells out the patterns it looks for")
    depth = len(path.relative_to(REPO).parts) - 1
    assert escapes(ast.parse(path.read_text(), str(path)), depth) == []


def test_fixtures_root_is_inside_the_repository():
    assert FIXTURES.resolve().is_relative_to(REPO)
    assert (FIXTURES / "README.md").is_file()


def test_every_fixture_a_test_names_is_in_the_repository():
    """Each `load_fixture("x")` and `FIXTURES / "x"` in the tests names a file in test/fixtures/official."""
    named = set()
    for path in TEST_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_fixture" \
                    and isinstance(node.args[0], ast.Constant):
                named.add(node.args[0].value)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.left, ast.Name) \
                    and node.left.id == "FIXTURES" and isinstance(node.right, ast.Constant):
                named.add(node.right.value)
    assert len(named) >= 10, named                  # the scan found the parity tests' files
    missing = sorted(n for n in named if not (FIXTURES / n).is_file())
    assert missing == [], f"named by tests but not in {FIXTURES}: {missing}"
