"""Resume a mutation run on code that changed since it began: ``make mutation-resume``.

mutmut 3 (3.8.1) keeps its verdicts across runs and re-generates only the mutants of a
function whose source changed, which makes resuming cheap. Two things it does not redo
make a resumed run on changed code wrong, always towards reporting survivors a test kills:

- it copies each source file it does not mutate (``config.py``, the email templates, ...)
  into ``mutants/`` once, so the tests would run against the old ones;
- it maps tests to functions from the coverage of its first run, so a function that is
  new, or newly reached, is judged by too few tests.

:func:`refresh` copies every file of the source paths that mutmut does not mutate again,
deletes ``mutmut-stats.json`` (the next run maps tests afresh) and re-opens every verdict
that is not a kill, so survivors, timeouts and "no tests" are judged again. Kills stay:
a mutant a test killed in an unchanged function is still killed. So do the verdicts of
mutants listed as equivalent (``tests/mutation_equivalents.toml``): no test can kill
them, and judging one again runs every test of its function, the slowest part of a run
(when its function changed, mutmut makes the mutant afresh and judges it anyway).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ops.mutation_report import EQUIVALENTS, KILLED_CODES, MUTANTS, load_equivalents

STATS = "mutmut-stats.json"


@dataclass(frozen=True)
class Refreshed:
    """What :func:`refresh` did: files copied again, verdicts re-opened."""

    copied: int
    reopened: int


def mutated(path: str, only_mutate: Sequence[str]) -> bool:
    """True when mutmut mutates ``path`` (``only_mutate`` as in ``[tool.mutmut]``)."""
    return path.endswith(".py") and any(fnmatch.fnmatch(path, p) for p in only_mutate)


def refresh(project: Path, mutants: Path = MUTANTS, equivalents: Path = EQUIVALENTS) -> Refreshed:
    """Bring ``project/mutants`` up to date with the project for ``mutmut run`` to resume."""
    listed = load_equivalents(project / equivalents)
    config = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    settings = config["tool"]["mutmut"]
    only_mutate = [str(p) for p in settings.get("only_mutate", [])]
    target = project / mutants
    copied = 0
    for source_path in settings.get("source_paths", []):
        for path in sorted((project / source_path).rglob("*")):
            relative = path.relative_to(project).as_posix()
            if path.is_dir() or "__pycache__" in path.parts or mutated(relative, only_mutate):
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative)
            copied += 1
    (target / STATS).unlink(missing_ok=True)
    reopened = 0
    for meta in sorted(target.rglob("*.py.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        codes = data["exit_code_by_key"]
        for name, code in codes.items():
            if code is not None and code not in KILLED_CODES and name not in listed:
                codes[name] = None
                reopened += 1
        meta.write_text(json.dumps(data), encoding="utf-8")
    return Refreshed(copied, reopened)


def main(argv: Sequence[str] | None = None) -> int:
    """Refresh ``mutants/`` in the current directory; 1 when there is nothing to resume."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--project", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if not (args.project / MUTANTS).is_dir():
        print(f"no {MUTANTS}/ to resume: run `make mutation` first", file=sys.stderr)
        return 1
    done = refresh(args.project)
    print(
        f"mutants/: {done.copied} unmutated file(s) copied again, test map dropped, "
        f"{done.reopened} verdict(s) other than killed or listed as equivalent re-opened"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
