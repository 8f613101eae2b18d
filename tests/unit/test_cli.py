"""The operator CLI, driven through Click's runner against moto."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from chalicelib.cli import cli


def test_provision_creates_missing_tables_then_finds_them(aws: None) -> None:
    runner = CliRunner()

    first = runner.invoke(cli, ["provision"])
    second = runner.invoke(cli, ["provision"])

    assert first.exit_code == 0, first.output
    assert "test-notifications: created" in first.output
    assert first.output.count("created") == 6
    assert second.exit_code == 0
    assert second.output.count("already exists") == 6


def test_provision_names_the_missing_variable(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTES_TABLE")

    result = CliRunner().invoke(cli, ["provision"])

    assert result.exit_code == 2
    assert "NOTES_TABLE is not set" in result.output


def test_provision_takes_the_table_names_of_a_stage(aws: None) -> None:
    result = CliRunner().invoke(cli, ["--stage", "dev", "provision"])

    assert result.exit_code == 0, result.output
    assert "dev-applications: created" in result.output


def test_an_unknown_stage_is_a_usage_error(aws: None) -> None:
    result = CliRunner().invoke(cli, ["--stage", "staging", "provision"])

    assert result.exit_code == 2
    assert "unknown stage 'staging'" in result.output
