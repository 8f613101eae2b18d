"""The Makefile's own interface: `make help` (and a bare `make`), `make demo-reset`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.stages import PROJECT_DIR

MAKEFILE = PROJECT_DIR / "Makefile"
MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="needs GNU make on the PATH")


def make(*args: str, cwd: Path = PROJECT_DIR) -> subprocess.CompletedProcess[str]:
    """Run make on the project's Makefile in ``cwd``."""
    assert MAKE is not None
    return subprocess.run(  # noqa: S603 - make on our own Makefile, fixed arguments
        [MAKE, "--no-print-directory", "-s", "-f", str(MAKEFILE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def targets() -> list[str]:
    """Every target a person runs: the rules of the Makefile that are not files."""
    rule = re.compile(r"^([a-z][a-z0-9-]*):(?!=)", re.MULTILINE)
    return rule.findall(MAKEFILE.read_text(encoding="utf-8"))


def test_help_lists_every_target_with_a_one_line_description(tmp_path: Path) -> None:
    result = make("help", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    listed = dict(
        line.strip().split(maxsplit=1) for line in result.stdout.splitlines()[1:] if line.strip()
    )
    assert set(targets()) <= set(listed)
    assert {"help", "demo", "demo-reset", "test", "deploy"} <= set(listed)
    assert all(len(description) > 10 for description in listed.values())
    assert "DRY_RUN=1" in listed["demo"]


def test_a_bare_make_prints_the_same_help(tmp_path: Path) -> None:
    bare = make(cwd=tmp_path)

    assert bare.returncode == 0, bare.stderr
    assert bare.stdout == make("help", cwd=tmp_path).stdout
    assert "  demo-reset " in bare.stdout


def test_demo_reset_says_it_also_clears_the_outbox_and_does(tmp_path: Path) -> None:
    # Given a demo's state and outbox
    (tmp_path / ".demo").mkdir()
    (tmp_path / ".demo" / "state.json").write_text("{}", encoding="utf-8")
    (tmp_path / "outbox" / "2026-11-23").mkdir(parents=True)

    # When they are reset
    result = make("demo-reset", cwd=tmp_path)

    # Then it says what it removes, outbox/ included, and removes both
    assert result.returncode == 0, result.stderr
    assert "outbox/" in result.stdout
    assert ".demo/" in result.stdout
    assert not (tmp_path / ".demo").exists()
    assert not (tmp_path / "outbox").exists()
