"""Operator commands: ``python -m chalicelib.cli --help``."""

from __future__ import annotations

import click

from chalicelib import models
from chalicelib.config import ConfigError, Settings


@click.group()
def cli() -> None:
    """Operate the loan reminder service against the AWS account in the environment."""


@cli.command()
def provision() -> None:
    """Create every missing table (CRM tables and the ledger) with its indexes."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    for table, status in models.provision(settings):
        click.echo(f"{table}: {'created' if status == 'created' else 'already exists'}")


if __name__ == "__main__":
    cli()
