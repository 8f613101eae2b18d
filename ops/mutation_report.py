"""The per-module mutation score of a ``mutmut run``, and the gate ``make mutation`` applies.

mutmut 3 records each mutant's outcome in ``mutants/<module path>.meta`` (JSON,
``exit_code_by_key``: the test run's exit code per mutant name). A module's score is
``detected / (total - equivalent)``: a mutant is detected when a test failed
(killed) or it made the tests hang (timeout). Equivalent mutants, which no test can
tell from the original, are listed with a reason in one TOML file; an entry that
names no mutant, or one a test kills, is an error, so the list cannot go stale.

``python -m ops.mutation_report`` prints the table and the undetected mutants and
exits 1 when a module scores below the threshold (95 % unless ``--threshold``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MUTANTS = Path("mutants")
EQUIVALENTS = Path("tests/mutation_equivalents.toml")
THRESHOLD = 95.0

# mutmut's exit codes (mutmut.stats.status_by_exit_code): 1 and 3 are failing tests;
# these are the hangs and the CPU limit it enforces. Any other code is not detected.
KILLED_CODES = frozenset({1, 3})
TIMEOUT_CODES = frozenset({36, 24, -24, 152, 255})
SURVIVED_CODE = 0


@dataclass
class ModuleScore:
    """One module's mutants by outcome."""

    module: str
    total: int = 0
    killed: int = 0
    timeout: int = 0
    equivalent: int = 0
    # Neither detected nor listed as equivalent: survived, untested or not run.
    undetected: dict[str, int | None] = field(default_factory=dict)

    @property
    def detected(self) -> int:
        """Mutants some test noticed: killed or timed out."""
        return self.killed + self.timeout

    @property
    def unchecked(self) -> int:
        """Mutants mutmut has not run yet (an interrupted run); they count as undetected."""
        return sum(code is None for code in self.undetected.values())

    @property
    def score(self) -> float:
        """Detected as a percentage of the mutants that are not equivalent."""
        scored = self.total - self.equivalent
        return 100.0 if scored == 0 else 100.0 * self.detected / scored


@dataclass
class Report:
    """Every module's score and the problems found in the equivalents list."""

    modules: list[ModuleScore]
    problems: list[str]

    def failing(self, threshold: float) -> list[ModuleScore]:
        """The modules scoring below ``threshold`` percent."""
        return [m for m in self.modules if m.score < threshold]


def module_name(meta: Path, mutants: Path) -> str:
    """``mutants/chalicelib/checks/x.py.meta`` -> ``chalicelib/checks/x.py``."""
    return meta.relative_to(mutants).as_posix().removesuffix(".meta")


def load_results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """Each mutated module's ``{mutant name: exit code}`` (``None``: not run)."""
    results: dict[str, dict[str, int | None]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        results[module_name(meta, mutants)] = dict(data["exit_code_by_key"])
    return results


def load_equivalents(path: Path) -> dict[str, str]:
    """``{mutant name: reason}`` from the ``[equivalent]`` table of the TOML file."""
    if not path.exists():
        return {}
    table = tomllib.loads(path.read_text(encoding="utf-8")).get("equivalent", {})
    return {str(name): str(reason) for name, reason in table.items()}


def score(
    results: Mapping[str, Mapping[str, int | None]], equivalents: Mapping[str, str]
) -> Report:
    """Score each module, excluding the equivalent mutants from its denominator."""
    modules: list[ModuleScore] = []
    problems: list[str] = []
    known: set[str] = set()
    for module, codes in sorted(results.items()):
        entry = ModuleScore(module, total=len(codes))
        for name, code in sorted(codes.items()):
            known.add(name)
            if code in KILLED_CODES:
                entry.killed += 1
                if name in equivalents:
                    problems.append(f"{name} is listed as equivalent but a test kills it")
            elif code in TIMEOUT_CODES:
                entry.timeout += 1
            elif name in equivalents:
                entry.equivalent += 1
            else:
                entry.undetected[name] = code
        modules.append(entry)
    problems += [
        f"{name} is listed as equivalent but no such mutant exists"
        for name in sorted(set(equivalents) - known)
    ]
    for name, reason in sorted(equivalents.items()):
        if not reason.strip():
            problems.append(f"{name} is listed as equivalent without a reason")
    return Report(modules, problems)


def describe(code: int | None) -> str:
    """What an undetected mutant's exit code means."""
    if code is None:
        return "not checked"
    if code == SURVIVED_CODE:
        return "survived"
    if code in (5, 33):
        return "no tests"
    return f"exit code {code}"


def render(report: Report, threshold: float) -> str:
    """The score table, then the undetected mutants and the equivalents list's problems."""
    width = max([len(m.module) for m in report.modules] + [len("module")])
    lines = [
        f"{'module':<{width}}  {'killed':>6}  {'timeout':>7}  {'total':>5}  {'equiv':>5}"
        f"  {'unrun':>5}  score",
    ]
    for m in report.modules:
        mark = "" if m.score >= threshold else f"  < {threshold:g} %"
        lines.append(
            f"{m.module:<{width}}  {m.killed:>6}  {m.timeout:>7}  {m.total:>5}  "
            f"{m.equivalent:>5}  {m.unchecked:>5}  {m.score:5.1f} %{mark}"
        )
    undetected = [
        (name, code)
        for m in report.modules
        for name, code in m.undetected.items()
        if code is not None
    ]
    if undetected:
        lines += ["", "Undetected mutants (`mutmut show NAME` prints the change):"]
        lines += [f"  {name}: {describe(code)}" for name, code in undetected]
    if report.problems:
        lines += ["", "Equivalents list:"] + [f"  {problem}" for problem in report.problems]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; 1 when a module is under the threshold or the list is wrong."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mutants", type=Path, default=MUTANTS, help="mutmut's mutants/ dir")
    parser.add_argument("--equivalents", type=Path, default=EQUIVALENTS)
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="percent per module")
    args = parser.parse_args(argv)
    results = load_results(args.mutants)
    if not results:
        print(f"no mutmut results under {args.mutants}/ (run `mutmut run` first)", file=sys.stderr)
        return 1
    report = score(results, load_equivalents(args.equivalents))
    print(render(report, args.threshold))
    failing = report.failing(args.threshold)
    if failing or report.problems:
        names = ", ".join(m.module for m in failing)
        print(
            f"\nFAILED: {names or 'the equivalents list is wrong'}"
            + (f" below {args.threshold:g} %" if failing else ""),
            file=sys.stderr,
        )
        return 1
    print(f"\nEvery module scores at least {args.threshold:g} %.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
