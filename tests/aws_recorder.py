"""A pytest plugin that records every AWS operation the Lambda code makes while a check runs.

The IAM audit (``tests/test_iam.py``) compares these operations with the stage's
policy. The recorder listens on botocore's event system: it adds a
``before-parameter-build`` handler to ``botocore.handlers.BUILTIN_HANDLERS``, which
every botocore session copies when it is created, so boto3's default session, any
other boto3 session and PynamoDB's own botocore sessions are all covered without
touching the project's code. An operation counts only while one of the Lambda
code's entry points is on the call stack (``chalicelib.runner.run_check``, a running
check; ``chalicelib.ses_events.record_event``, an SES event being recorded): what the
functions do, not what a test does to set up its tables and identities. Each
operation keeps the ``Settings`` that entry point was using (its own ``settings``),
so the audit can hold it to the policy generated for exactly that stage.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pytest
from botocore.handlers import BUILTIN_HANDLERS

# (module, function) of every entry point whose AWS calls the functions' policy must allow.
ENTRY_POINTS = frozenset(
    {("chalicelib.runner", "run_check"), ("chalicelib.ses_events", "record_event")}
)


@dataclass(frozen=True)
class AwsCall:
    """One AWS API operation made by the Lambda code (a running check, an SES event)."""

    service: str  # botocore's service name, e.g. "dynamodb", "sesv2"
    prefix: str  # the IAM action prefix (the signing name), e.g. "dynamodb", "ses"
    operation: str  # e.g. "Query"
    region: str
    params: dict[str, Any]
    settings: Any  # chalicelib.config.Settings of the run (or event) that made it
    test: str  # the test that made it, for the report

    @property
    def action(self) -> str:
        """The IAM action this operation is authorized as, e.g. ``dynamodb:Query``."""
        return f"{self.prefix}:{self.operation}"


class Recorder:
    """Collects the operations of the whole session (and of whatever test is running)."""

    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self.current_test = "<outside a test>"
        self.paused = False

    def __call__(self, params: dict[str, Any], model: Any, context: Any = None, **_: Any) -> None:
        check = _running_check(sys._getframe(1))
        if check is None or self.paused:
            return
        service_model = model.service_model
        self.calls.append(
            AwsCall(
                service=service_model.service_name,
                prefix=service_model.signing_name,
                operation=model.name,
                region=str((context or {}).get("client_region") or ""),
                params=dict(params),
                settings=check.f_locals.get("settings"),
                test=self.current_test,
            )
        )


def _running_check(frame: FrameType | None) -> FrameType | None:
    """The frame of an entry point (:data:`ENTRY_POINTS`) on the stack, if one is running."""
    while frame is not None:
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) in ENTRY_POINTS:
            return frame
        frame = frame.f_back
    return None


RECORDER = Recorder()


@contextmanager
def another_actor() -> Iterator[None]:
    """Calls a test makes as someone else (the CRM) in the middle of a run: not recorded."""
    RECORDER.paused = True
    try:
        yield
    finally:
        RECORDER.paused = False


# Every botocore session created from now on registers the recorder for every operation.
BUILTIN_HANDLERS.append(("before-parameter-build", RECORDER))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Attribute recorded operations to the test that made them."""
    RECORDER.current_test = item.nodeid
    try:
        return (yield)
    finally:
        RECORDER.current_test = "<outside a test>"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that audit the session's operations last, after everything else."""
    audits = [i for i in items if "recorded_aws_calls" in getattr(i, "fixturenames", ())]
    if audits:
        last = {id(i) for i in audits}
        items[:] = [i for i in items if id(i) not in last] + audits


@pytest.fixture(scope="session")
def recorded_aws_calls() -> list[AwsCall]:
    """Every AWS operation made inside an entry point so far in this session."""
    return RECORDER.calls


@pytest.fixture
def aws_calls(request: pytest.FixtureRequest) -> Callable[[], list[AwsCall]]:
    """The AWS operations made by checks run in this test so far."""
    nodeid = request.node.nodeid
    return lambda: [call for call in RECORDER.calls if call.test == nodeid]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start each session with no recorded operations.

    mutmut runs pytest several times in one process (and forks from it): a test's
    operations from an earlier session must not count again under the same node id.
    """
    RECORDER.calls.clear()
