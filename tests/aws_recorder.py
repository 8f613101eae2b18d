"""A pytest plugin that records every AWS operation the Lambda code makes, and audits it.

Every test's operations are held to the stage's policy when the test ends
(``tests/iam_audit.py``): a test whose code made an operation the policy does not
allow fails, naming the action and resource. The audit is per test, so it holds in
any order and in any pytest-xdist worker.

The recorder listens on botocore's event system: it adds a
``before-parameter-build`` handler to ``botocore.handlers.BUILTIN_HANDLERS``, which
every botocore session copies when it is created, so boto3's default session, any
other boto3 session and PynamoDB's own botocore sessions are all covered without
touching the project's code. An operation counts only while one of the Lambda
code's entry points is on the call stack (``chalicelib.runner.run_check``, a running
check; ``chalicelib.ses_events.record_event``, an SES event being recorded): what the
functions do, not what a test does to set up its tables and identities. Each
operation keeps the ``Settings`` that entry point was using (its own ``settings``),
so the audit can hold it to the policy generated for exactly that stage. A run
sends from worker threads (``chalicelib.delivery``), whose own stacks start in the
thread pool: their operations belong to the run the delivery functions were handed,
whose settings are the entry point's. Only the calling thread's own stack is ever read.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest
from botocore.handlers import BUILTIN_HANDLERS

from tests.iam_audit import AwsCall, not_allowed, policy_for

__all__ = ["AwsCall", "another_actor"]

if TYPE_CHECKING:
    from botocore.model import OperationModel

    from chalicelib.config import Settings
    from chalicelib.run import Run

# (module, function) of every entry point whose AWS calls the functions' policy must allow.
ENTRY_POINTS = frozenset(
    {
        ("chalicelib.runner", "run_check"),
        ("chalicelib.ses_events", "record_event"),
        ("chalicelib.fanout", "handle_batch"),
    }
)
# Where a run's worker thread delivers a notice (chalicelib.delivery's pool): every function
# there is handed the run, whose settings are the entry point's.
WORKER_MODULE = "chalicelib.delivery"


class Recorder:
    """Collects the operations of the running test."""

    def __init__(self) -> None:
        self.calls: list[AwsCall] = []
        self.current_test = "<outside a test>"
        # Paused per thread: a run's workers can each act as someone else at once.
        self._threads = threading.local()

    @property
    def paused(self) -> bool:
        """Whether the calling thread's operations are someone else's (not recorded)."""
        return bool(getattr(self._threads, "paused", 0))

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Leave the calling thread's operations unrecorded for the duration of the block."""
        self._threads.paused = getattr(self._threads, "paused", 0) + 1
        try:
            yield
        finally:
            self._threads.paused -= 1

    def __call__(
        self,
        params: dict[str, Any],
        model: OperationModel,
        context: dict[str, Any] | None = None,
        **_: object,
    ) -> None:
        running, settings = _running_check(sys._getframe(1))
        if not running or self.paused:
            return
        service_model = model.service_model
        self.calls.append(
            AwsCall(
                service=service_model.service_name,
                prefix=service_model.signing_name,
                operation=model.name,
                region=str((context or {}).get("client_region") or ""),
                params=dict(params),
                settings=settings,
                test=self.current_test,
            )
        )


def _running_check(frame: FrameType | None) -> tuple[bool, Settings | None]:
    """Whether an entry point (:data:`ENTRY_POINTS`) is running this call, and its settings.

    Only the calling thread's own stack is read: reading another running thread's frames
    can crash CPython. A run's worker thread has no entry point on its stack; its calls
    come from a function of :data:`WORKER_MODULE` holding the ``run``, which carries the
    entry point's settings. Any of them: ``make mutation`` runs each one under another name
    (``_deliver_one`` becomes mutmut's wrapper, holding only ``*args``).
    """
    while frame is not None:
        code = (frame.f_globals.get("__name__"), frame.f_code.co_name)
        if code in ENTRY_POINTS:
            settings: Settings | None = frame.f_locals.get("settings")
            return True, settings
        run: Run | None = frame.f_locals.get("run") if code[0] == WORKER_MODULE else None
        if run is not None:
            return True, run.settings
        frame = frame.f_back
    return False, None


RECORDER = Recorder()


@contextmanager
def another_actor() -> Iterator[None]:
    """Calls a test makes as someone else (the CRM) in the middle of a run: not recorded."""
    with RECORDER.pause():
        yield


# Every botocore session created from now on registers the recorder for every operation.
BUILTIN_HANDLERS.append(("before-parameter-build", RECORDER))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start recording the operations of this test (its fixtures' included)."""
    RECORDER.calls.clear()
    RECORDER.current_test = item.nodeid


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a test if the policy of its stage does not allow an operation it made."""
    yield
    problems = not_allowed(RECORDER.calls, policy_for)
    if problems:
        raise AssertionError("operations the stage policy does not allow:\n" + "\n".join(problems))


def pytest_runtest_logfinish(nodeid: str) -> None:
    """Operations after the test (none are expected) are nobody's."""
    RECORDER.current_test = "<outside a test>"


@pytest.fixture
def aws_calls() -> Callable[[], list[AwsCall]]:
    """The AWS operations made by checks run in this test so far."""
    return lambda: list(RECORDER.calls)
