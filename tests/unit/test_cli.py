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
