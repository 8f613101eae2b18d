"""A worker process for tests/ddblocal/test_concurrency.py: one run of a check.

A separate module, so ``spawn`` can import it in a fresh interpreter: the child gets
the test's environment (tables, DynamoDB Local's endpoint), mocks only SES in-process,
waits at the barrier with its rivals, runs the check, and reports what its SES took.
"""

from __future__ import annotations

from datetime import datetime
from email import message_from_string
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import boto3
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from ops import ddblocal
from tests.support import REGION, SENDER, warm_moto_sesv2


def _to_and_subject(raw: str) -> tuple[str, str]:
    message = message_from_string(raw)
    return str(message["To"]), str(message["Subject"])


def run_once(
    check: str, at: str, endpoint: str, barrier: Barrier, results: Queue[dict[str, object]]
) -> None:
    """Run ``check`` at ``at`` against DynamoDB Local; put the recipients SES accepted."""
    from chalicelib.delivery import DeliveryIncomplete
    from chalicelib.runner import run_check

    with mock_aws(config=ddblocal.moto_config(endpoint)):
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
        warm_moto_sesv2(boto3.client("sesv2", region_name=REGION))
        when = datetime.fromisoformat(at)
        barrier.wait()
        try:
            summary = run_check(check, at=when, now=when, emit_metrics=False)
        except DeliveryIncomplete as incomplete:
            # Reported like any other run, so the test fails on what went wrong instead of
            # waiting for a result this process would never put.
            summary = incomplete.summary
        sent = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
        results.put(
            {
                "notices_due": summary.notices_due,
                "sent": summary.sent,
                "emails_sent": summary.emails_sent,
                "skipped": summary.skipped,
                "messages": [_to_and_subject(m.raw_data) for m in sent],
            }
        )
