"""Operator commands: ``python -m chalicelib.cli [--stage STAGE] COMMAND``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from chalicelib import models
from chalicelib.config import ConfigError, Settings

CHALICE_CONFIG = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"


def stage_environment(stage: str, config: Path = CHALICE_CONFIG) -> dict[str, str]:
    """The environment variables ``.chalice/config.json`` gives a stage's functions."""
    data = json.loads(config.read_text())
    if stage not in data.get("stages", {}):
        known = ", ".join(sorted(data.get("stages", {})))
        raise click.BadParameter(f"unknown stage {stage!r} (known: {known})", param_hint="--stage")
    env = dict(data.get("environment_variables", {}))
    env.update(data["stages"][stage].get("environment_variables", {}))
    return {k: str(v) for k, v in env.items()}


@click.group()
@click.option(
    "--stage",
    default=None,
    help="Take table names, sender and thresholds from this stage of .chalice/config.json "
    "(default: from the environment).",
)
def cli(stage: str | None) -> None:
    """Operate the loan reminder service against the AWS account in the environment."""
    if stage:
        # AWS credentials and region still come from the operator's own environment.
        os.environ.update(stage_environment(stage))


def load_settings() -> Settings:
    """Settings from the environment, as a usage error naming the missing variable."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@cli.command()
def provision() -> None:
    """Create every missing table (CRM tables and the ledger) with its indexes."""
    for table, status in models.provision(load_settings()):
        click.echo(f"{table}: {'created' if status == 'created' else 'already exists'}")


if __name__ == "__main__":
    cli()
