"""Fixtures: fake AWS credentials, the moto mock, tables created from the models, SES.

``--dynamodb=local`` runs the same tests with DynamoDB on Amazon's DynamoDB Local
(started once per session on a free loopback port) while SES stays on moto.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import chalice.test
import pytest
from chalice.local import LambdaContext
from chalice.test import Client
from moto import mock_aws
from mypy_boto3_sesv2 import SESV2Client

import app
from chalicelib.config import Settings
from chalicelib.observability import logger
from ops import ddblocal
from ops.demo import LENDER_ENVIRONMENT
from ops.stages import CHALICE_CONFIG, stage_environment
from tests.support import (
    REGION,
    SENDER,
    SES_ACCOUNT,
    SUPPRESSION_LIST,
    SuppressionList,
    provisioned,
    ses_client,
    verify_sender,
    warm_moto_sesv2,
)

# Every botocore session (boto3's, PynamoDB's, each test's) gets its own data loader and
# parses the same service JSON again: a third of the suite's time. Tests create hundreds
# of sessions, a Lambda container a handful, so one loader per process is shared here.
botocore.session.create_loader = functools.cache(botocore.session.create_loader)

# Records the AWS operations of every running check and audits each test's against its
# stage's policy (tests/aws_recorder.py); pytester runs the audit's own test of itself;
# moto's DynamoDB answers are encoded with json.dumps (tests/moto_dynamodb_json.py).
pytest_plugins = ["tests.aws_recorder", "tests.moto_dynamodb_json", "pytester"]

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
    **LENDER_ENVIRONMENT,
    "BUSINESS_TIMEZONE": "Australia/Sydney",
    "SES_CONFIGURATION_SET": "test-reminders",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--dynamodb=moto`` (default) or ``--dynamodb=local`` (DynamoDB Local)."""
    parser.addoption(
        "--dynamodb",
        choices=("moto", "local"),
        default="moto",
        help="where DynamoDB calls go: moto (default) or DynamoDB Local (make test-ddblocal)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Refuse the local tier up front when DynamoDB Local is not installed."""
    if config.getoption("dynamodb") == "local":
        try:
            ddblocal.installed_jar()
        except ddblocal.DynamoDBLocalError as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Set the garbage collector for a long test session (each pytest-xdist worker's).

    Every test makes botocore clients, moto backends and parsed messages: thousands of
    short-lived objects in reference cycles, over the tens of thousands that imports and
    collection left for good. With CPython's defaults the collector runs every 700
    allocations and keeps walking those long-lived objects: about a tenth of the suite's
    time. They are frozen out of its view, and it runs every 50,000 allocations.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``make mutation``, run a mutant's tests fastest first.

    mutmut hands each mutant its tests in no particular order and stops at the first
    failure, so a mutant that a 5 ms unit test kills could otherwise wait behind seconds
    of moto tests. The durations are the ones mutmut measured (mutants/mutmut-stats.json).
    """
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return
    stats = Path("mutmut-stats.json")
    if not stats.exists():
        return
    durations: dict[str, float] = json.loads(stats.read_text())["duration_by_test"]
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))


@pytest.fixture(scope="session")
def dynamodb_endpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str | None]:
    """DynamoDB Local's URL for the session in the local tier; ``None`` on moto."""
    if request.config.getoption("dynamodb") != "local":
        yield None
        return
    with ddblocal.running(tmp_path_factory.mktemp("dynamodb-local")) as server:
        yield server.endpoint


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, dynamodb_endpoint: str | None) -> None:
    """Fake credentials and the service's variables, so nothing can reach real AWS."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "POWERTOOLS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("DYNAMODB_ENDPOINT_URL", raising=False)
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    if dynamodb_endpoint is not None:
        # The models through chalicelib (bind), any other boto3 client through botocore.
        monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", dynamodb_endpoint)
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint)
    else:
        # moto's in-process DynamoDB applies no conditional write atomically across
        # threads: on moto a run sends from one worker, and the runs' worker threads are
        # exercised where writes are atomic, on DynamoDB Local (make test-ddblocal).
        monkeypatch.setenv("SEND_CONCURRENCY", "1")


@pytest.fixture
def aws(dynamodb_endpoint: str | None) -> Iterator[None]:
    """Every AWS call in the test goes to moto, DynamoDB to DynamoDB Local in that tier.

    In the local tier every table is dropped after the test, so each test starts
    from an empty account as it does on moto.
    """
    SES_ACCOUNT.reset()
    if dynamodb_endpoint is None:
        with mock_aws():
            yield
        return
    with mock_aws(config=ddblocal.moto_config(dynamodb_endpoint)):
        try:
            yield
        finally:
            ddblocal.delete_all_tables(dynamodb_endpoint)


@pytest.fixture
def suppression_list(aws: None) -> Iterator[SuppressionList]:
    """SES's account-level suppression list (moto has none; see tests/support.py), empty."""
    SUPPRESSION_LIST.reset()
    yield SUPPRESSION_LIST
    SUPPRESSION_LIST.reset()


@pytest.fixture
def settings() -> Settings:
    """The settings a deployed function would read from its environment."""
    return Settings.from_env()


@pytest.fixture
def tables(aws: None, settings: Settings) -> Settings:
    """The CRM tables and the ledger, created from the models with their indexes."""
    provisioned(settings)
    return settings


@pytest.fixture
def ses(aws: None) -> SESV2Client:
    """SES with the sender verified; returns a client without retries for fault injection."""
    verify_sender()
    client = ses_client()
    warm_moto_sesv2(client)
    return client


@pytest.fixture
def service(tables: Settings, ses: SESV2Client) -> Settings:
    """Tables and a verified sender: everything a check needs."""
    return tables


# The dev stage as `.chalice/config.json` defines it (chalice's test Client applies it).
DEV_ENV = stage_environment("dev")


@pytest.fixture
def dev_stage(aws: None) -> Settings:
    """The dev stage's tables (names from .chalice/config.json) and its verified sender."""
    settings = Settings.from_env({**os.environ, **DEV_ENV})
    provisioned(settings)
    verify_sender(DEV_ENV["SENDER_EMAIL"])
    return settings


@pytest.fixture
def client(dev_stage: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """Chalice's test client for the dev stage of this project.

    Its Lambda context allows every invocation 3 s whatever ``lambda_timeout`` says;
    give it the configured timeout, as Lambda does, so the runs' time budget is real.
    """
    timeout_ms = json.loads(CHALICE_CONFIG.read_text())["lambda_timeout"] * 1000
    monkeypatch.setattr(
        chalice.test, "LambdaContext", functools.partial(LambdaContext, max_runtime_ms=timeout_ms)
    )
    root = Path(app.__file__).resolve().parent
    with Client(app.app, stage_name="dev", project_dir=str(root)) as test_client:
        yield test_client


class _CurrentStdout:
    """A stream that writes to the ``sys.stdout`` of the moment."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def stdout_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[dict[str, Any]]]:
    """Read the JSON lines (Powertools logs and EMF documents) printed since the last read.

    The logger's handler kept the ``sys.stdout`` of import time; make it write to
    whatever ``sys.stdout`` is when it logs (``capsys``'s, during the test).
    """
    monkeypatch.setattr(logger.registered_handler, "stream", _CurrentStdout())

    def read() -> list[dict[str, Any]]:
        lines = capsys.readouterr().out.splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    return read
