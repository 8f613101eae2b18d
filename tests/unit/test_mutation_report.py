"""``make mutation``'s report: per-module scores from mutmut's meta files, and its gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops import mutation_report

LEDGER = "chalicelib.ledger.x_claim__mutmut_"


def write_meta(mutants: Path, module: str, codes: dict[str, int | None]) -> None:
    meta = mutants / f"{module}.meta"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(
        json.dumps(
            {
                "exit_code_by_key": codes,
                "durations_by_key": {},
                "estimated_durations_by_key": {},
            }
        )
    )


def write_equivalents(path: Path, entries: dict[str, str]) -> Path:
    lines = ["[equivalent]"] + [f'"{name}" = "{reason}"' for name, reason in entries.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_module_scores_its_detected_mutants_over_the_non_equivalent_ones(tmp_path: Path) -> None:
    # Given 20 ledger mutants: 17 killed, 1 timed out, 1 equivalent, 1 survivor
    codes: dict[str, int | None] = {f"{LEDGER}{n}": 1 for n in range(1, 18)}
    codes |= {f"{LEDGER}18": 36, f"{LEDGER}19": 0, f"{LEDGER}20": 0}
    write_meta(tmp_path, "chalicelib/ledger.py", codes)

    # When it is scored with mutant 19 listed as equivalent
    report = mutation_report.score(
        mutation_report.load_results(tmp_path), {f"{LEDGER}19": "a log message"}
    )

    # Then 18 of 19 are detected (94.7 %) and the survivor is named
    (ledger,) = report.modules
    assert (ledger.module, ledger.total, ledger.killed, ledger.timeout, ledger.equivalent) == (
        "chalicelib/ledger.py",
        20,
        17,
        1,
        1,
    )
    assert ledger.score == pytest.approx(100 * 18 / 19)
    assert ledger.undetected == {f"{LEDGER}20": 0}
    assert report.failing(95.0) == [ledger]
    assert report.failing(94.0) == []
    assert report.problems == []


def test_the_gate_fails_a_module_under_the_threshold_and_names_its_survivors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a perfect mailer and a delivery module with 1 survivor and 1 unchecked in 10
    write_meta(tmp_path / "mutants", "chalicelib/mailer.py", {"m.x_a__mutmut_1": 1})
    codes: dict[str, int | None] = {f"d.x_b__mutmut_{n}": 1 for n in range(1, 9)}
    codes |= {"d.x_b__mutmut_9": 0, "d.x_b__mutmut_10": None}
    write_meta(tmp_path / "mutants", "chalicelib/delivery.py", codes)
    equivalents = write_equivalents(tmp_path / "eq.toml", {})

    # When the report runs
    status = mutation_report.main(
        ["--mutants", str(tmp_path / "mutants"), "--equivalents", str(equivalents)]
    )

    # Then it fails on delivery alone, listing what was not detected
    out, err = capsys.readouterr()
    assert status == 1
    assert "chalicelib/delivery.py" in err
    assert "mailer" not in err
    assert "d.x_b__mutmut_9: survived" in out
    assert "d.x_b__mutmut_10" not in out
    assert "      1   80.0 %  < 95 %" in out
    assert "100.0 %\n" in out


def test_the_gate_passes_when_every_module_reaches_the_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given one module whose only survivor is listed as equivalent
    write_meta(tmp_path, "chalicelib/formatting.py", {"f.x__mutmut_1": 1, "f.x__mutmut_2": 0})
    equivalents = write_equivalents(tmp_path / "eq.toml", {"f.x__mutmut_2": "same value"})

    # When the report runs
    status = mutation_report.main(["--mutants", str(tmp_path), "--equivalents", str(equivalents)])

    # Then it passes
    assert status == 0
    assert "at least 95 %" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (
            {"f.x__mutmut_1": "it is killed"},
            "f.x__mutmut_1 is listed as equivalent but a test kills it",
        ),
        (
            {"f.x__mutmut_9": "gone"},
            "f.x__mutmut_9 is listed as equivalent but no such mutant exists",
        ),
        ({"f.x__mutmut_2": " "}, "f.x__mutmut_2 is listed as equivalent without a reason"),
    ],
    ids=["killed", "unknown", "no-reason"],
)
def test_a_wrong_equivalents_entry_fails_the_gate(
    tmp_path: Path, entries: dict[str, str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a killed mutant and a survivor, and an entry that is not a listed survivor
    write_meta(tmp_path, "chalicelib/formatting.py", {"f.x__mutmut_1": 1, "f.x__mutmut_2": 0})
    equivalents = write_equivalents(tmp_path / "eq.toml", entries)

    # When the report runs with a threshold every score meets
    status = mutation_report.main(
        ["--mutants", str(tmp_path), "--equivalents", str(equivalents), "--threshold", "0"]
    )

    # Then the list's problem fails it
    out, err = capsys.readouterr()
    assert status == 1
    assert problem in out
    assert "the equivalents list is wrong" in err


def test_no_results_fail_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given no mutmut run
    # When the report runs
    status = mutation_report.main(["--mutants", str(tmp_path)])

    # Then it fails and says why
    assert status == 1
    assert "run `mutmut run` first" in capsys.readouterr().err


def test_the_equivalents_file_names_each_mutant_with_a_reason() -> None:
    # Given the project's equivalents list
    # When it is loaded
    equivalents = mutation_report.load_equivalents(mutation_report.EQUIVALENTS)

    # Then every entry is a mutmut mutant of a core module with a reason
    assert all("__mutmut_" in name for name in equivalents)
    assert all(name.startswith("chalicelib.") for name in equivalents)
    assert all(reason.strip() for reason in equivalents.values())
