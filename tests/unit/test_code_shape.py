"""The code's shape rules that no linter checks: a long function says why it is long."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from ops.stages import PROJECT_DIR

LONGEST_WITHOUT_A_REASON = 50
SOURCES = ("app.py", "chalicelib", "ops", "crm_mirror")


def python_files() -> list[Path]:
    """Every module of the shipped code and the tooling."""
    files: list[Path] = []
    for name in SOURCES:
        path = PROJECT_DIR / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def long_functions_without_a_comment(source: str) -> list[tuple[str, int]]:
    """``(name, lines)`` of each function longer than the limit with no comment in it."""
    comment_lines = {
        token.start[0]
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
            length = node.end_lineno - node.lineno + 1
            span = range(node.lineno, node.end_lineno + 1)
            if length > LONGEST_WITHOUT_A_REASON and not comment_lines.intersection(span):
                found.append((node.name, length))
    return found


def test_every_function_over_50_lines_carries_a_comment_saying_why() -> None:
    # Given the shipped code and the tooling
    files = python_files()
    assert any(path.name == "delivery.py" for path in files)

    # When each module's functions are measured
    offenders = [
        f"{path.relative_to(PROJECT_DIR)}: {name} ({length} lines)"
        for path in files
        for name, length in long_functions_without_a_comment(path.read_text(encoding="utf-8"))
    ]

    # Then none is longer than 50 lines without a comment giving the reason
    assert offenders == []


def test_the_rule_finds_a_long_function_without_a_comment_and_accepts_one_with() -> None:
    # Given two 51-line functions, one of which says why it is long
    body = "".join(f"    x{n} = {n}\n" for n in range(50))
    bare = f"def bare():\n{body}"
    explained = f"def explained():\n    # one block on purpose\n{body[: -len('    x49 = 49') - 1]}"

    # When the rule looks at them
    found = long_functions_without_a_comment(bare + "\n\n" + explained)

    # Then only the bare one is reported, with its length
    assert found == [("bare", 51)]
