"""Fixtures: fake AWS credentials, the moto mock, tables created from the models, SES."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib import models
from chalicelib.config import Settings
from tests.support import REGION, SENDER, ses_client

# Records the AWS operations of every running check for the IAM audit (tests/test_iam.py).
pytest_plugins = ["tests.aws_recorder"]

ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "APPLICATIONS_TABLE": "test-applications",
    "NOTES_TABLE": "test-notes",
    "REPAYMENTS_TABLE": "test-repayments",
    "STAFF_TABLE": "test-staff",
    "BORROWERS_TABLE": "test-borrowers",
    "NOTIFICATIONS_TABLE": "test-notifications",
    "SENDER_EMAIL": SENDER,
    "BUSINESS_TIMEZONE": "Australia/Sydney",
}


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and the service's variables, so nothing can reach real AWS."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "POWERTOOLS_"))]:
        monkeypatch.delenv(name)
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def aws() -> Iterator[None]:
    """Every AWS call in the test goes to moto."""
    with mock_aws():
        yield


@pytest.fixture
def settings() -> Settings:
    """The settings a deployed function would read from its environment."""
    return Settings.from_env()


@pytest.fixture
def tables(aws: None, settings: Settings) -> Settings:
    """The CRM tables and the ledger, created from the models with their indexes."""
    models.provision(settings)
    return settings


@pytest.fixture
def ses(aws: None) -> Any:
    """SES with the sender verified; returns a client without retries for fault injection."""
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
    return ses_client()


@pytest.fixture
def service(tables: Settings, ses: Any) -> Settings:
    """Tables and a verified sender: everything a check needs."""
    return tables
