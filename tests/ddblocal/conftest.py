"""The DynamoDB Local server's own tests exist only in the local tier."""

from __future__ import annotations

from pathlib import Path

import pytest

# Real DynamoDB only: the server itself, races moto cannot apply atomically, a benchmark.
LOCAL_ONLY = {
    "test_dynamodb_local_server.py",
    "test_concurrency.py",
    "test_concurrent_sending.py",
    # The fan-out benchmark measures the ledger on DynamoDB Local itself.
    "test_bench_fanout_local.py",
}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave the server tests out unless the run is ``--dynamodb=local``."""
    if collection_path.name in LOCAL_ONLY and config.getoption("dynamodb") != "local":
        return True
    return None
