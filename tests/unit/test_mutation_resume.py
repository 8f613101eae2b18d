"""``make mutation-resume``: a resumed mutation run judges the code as it is now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.mutation_resume import main, refresh

PYPROJECT = """
[tool.mutmut]
source_paths = ["pkg"]
only_mutate = ["pkg/core.py"]
"""


def project(tmp_path: Path) -> Path:
    """A project whose mutants/ predates a change to every source file."""
    (tmp_path / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    for name, text in {
        "pkg/core.py": "new core",
        "pkg/settings.py": "new settings",
        "pkg/templates/mail.html": "<p>new</p>",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
        (tmp_path / "mutants" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "mutants" / name).write_text("old", encoding="utf-8")
    codes: dict[str, int | None] = {"core.x_a__mutmut_1": 1, "core.x_a__mutmut_2": 0}
    codes |= {"core.x_b__mutmut_1": 36, "core.x_b__mutmut_2": None, "core.x_c__mutmut_1": 33}
    meta = {"exit_code_by_key": codes, "hash_by_function_name": {"a": "h"}}
    (tmp_path / "mutants/pkg/core.py.meta").write_text(json.dumps(meta), encoding="utf-8")
    (tmp_path / "mutants/mutmut-stats.json").write_text("{}", encoding="utf-8")
    return tmp_path


def test_resuming_copies_unmutated_files_drops_the_test_map_and_reopens_all_but_kills(
    tmp_path: Path,
) -> None:
    # Given a mutants/ dir from before the code changed
    root = project(tmp_path)

    # When it is refreshed
    done = refresh(root)

    # Then the files mutmut does not mutate are the current ones, the mutated one is left
    # to mutmut, the test map is gone, and only the kill keeps its verdict
    mutants = root / "mutants"
    assert (mutants / "pkg/settings.py").read_text(encoding="utf-8") == "new settings"
    assert (mutants / "pkg/templates/mail.html").read_text(encoding="utf-8") == "<p>new</p>"
    assert (mutants / "pkg/core.py").read_text(encoding="utf-8") == "old"
    assert not (mutants / "mutmut-stats.json").exists()
    meta = json.loads((mutants / "pkg/core.py.meta").read_text(encoding="utf-8"))
    assert meta["exit_code_by_key"] == {
        "core.x_a__mutmut_1": 1,
        "core.x_a__mutmut_2": None,
        "core.x_b__mutmut_1": None,
        "core.x_b__mutmut_2": None,
        "core.x_c__mutmut_1": None,
    }
    assert meta["hash_by_function_name"] == {"a": "h"}
    assert (done.copied, done.reopened) == (2, 3)


def test_resuming_keeps_the_verdict_of_a_mutant_listed_as_equivalent(tmp_path: Path) -> None:
    # Given a mutants/ dir whose surviving core.x_a__mutmut_2 is listed as equivalent
    root = project(tmp_path)
    listed = root / "tests/mutation_equivalents.toml"
    listed.parent.mkdir()
    listed.write_text('[equivalent]\n"core.x_a__mutmut_2" = "same output"\n', encoding="utf-8")

    # When it is refreshed
    done = refresh(root)

    # Then that survivor is not judged again; the other survivors and the timeout are
    codes = json.loads((root / "mutants/pkg/core.py.meta").read_text(encoding="utf-8"))
    assert codes["exit_code_by_key"] == {
        "core.x_a__mutmut_1": 1,
        "core.x_a__mutmut_2": 0,
        "core.x_b__mutmut_1": None,
        "core.x_b__mutmut_2": None,
        "core.x_c__mutmut_1": None,
    }
    assert done.reopened == 2


def test_resuming_without_a_mutation_run_says_to_run_one_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a project never mutation-tested
    (tmp_path / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")

    # When a resume is asked for
    status = main(["--project", str(tmp_path)])

    # Then it fails and says what to run
    assert status == 1
    assert "run `make mutation` first" in capsys.readouterr().err
