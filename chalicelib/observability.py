"""Structured logs and CloudWatch metrics (Powertools), shared by the checks.

Logs are JSON lines on stdout (Lambda sends them to CloudWatch Logs); every email
address in a log line is masked (``b***@example.net``) and no email body is ever
logged. Metrics are CloudWatch Embedded Metric Format (EMF) documents, one per
run of a check, in the ``LoanReminders`` namespace with the ``check`` dimension.
"""

from __future__ import annotations

import json
import os
import re

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

SERVICE = "loan-reminders"
NAMESPACE = "LoanReminders"
# The dimensions of every document: the check, and the stage's service name.
CHECK_DIMENSION = "check"
SERVICE_DIMENSION = "service"

# Metric names (the alarms of ops.infra watch some of them): a run's counts ...
ITEMS_READ = "ItemsRead"
NOTICES_SENT = "NoticesSent"
NOTICES_FAILED = "NoticesFailed"
NOTICES_RETRYING = "NoticesRetrying"
NOTICES_UNKNOWN = "NoticesUnknown"
NOTICES_DEFERRED = "NoticesDeferred"
NOTICES_SUPPRESSED = "NoticesSuppressed"
ITEMS_INVALID = "ItemsInvalid"
RUN_DURATION = "RunDuration"
# ... and what SES's events did to the ledger (chalicelib.ses_events).
NOTICES_SETTLED = "NoticesSettled"
NOTICES_DELIVERED = "NoticesDelivered"
NOTICES_DELAYED = "NoticesDelayed"
NOTICES_BOUNCED = "NoticesBounced"
NOTICES_SOFT_BOUNCED = "NoticesSoftBounced"
NOTICES_COMPLAINED = "NoticesComplained"
NOTICES_REJECTED = "NoticesRejected"

# local part (its first character kept) @ domain, non-ASCII ones included; the local
# part stops at whitespace and at the delimiters around an address in JSON or prose.
_LOCAL_CHAR = r"[^\s@<>()\[\]\\,;:\"]"
_ADDRESS = re.compile(
    rf"(?P<first>{_LOCAL_CHAR}){_LOCAL_CHAR}*"
    r"@(?P<domain>[^\W_](?:[\w-]*[^\W_])?(?:\.[\w-]+)+)"
)


def mask_addresses(text: str) -> str:
    """Mask every email address in ``text``: ``ben.lee@example.net`` -> ``b***@example.net``."""
    return _ADDRESS.sub(lambda m: f"{m['first']}***@{m['domain']}", text)


def _masked_json(record: object) -> str:
    return mask_addresses(
        json.dumps(record, default=str, separators=(",", ":"), ensure_ascii=False)
    )


def service_name() -> str:
    """The stage's service name (``POWERTOOLS_SERVICE_NAME``), so stages' metrics stay apart."""
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE


logger = Logger(service=service_name(), json_serializer=_masked_json)


def run_metrics(check: str) -> EphemeralMetrics:
    """A fresh EMF metric set for one run of ``check`` (not shared with other runs)."""
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=service_name())
    metrics.add_dimension(name=CHECK_DIMENSION, value=check)
    return metrics


def publish_run(
    metrics: EphemeralMetrics,
    *,
    items_read: int,
    sent: int,
    failed: int,
    retrying: int,
    invalid: int,
    unknown: int = 0,
    deferred: int = 0,
    suppressed: int = 0,
    duration_ms: float,
) -> None:
    """Add one run's counts and duration and print them as one EMF document."""
    counts = {
        ITEMS_READ: items_read,
        NOTICES_SENT: sent,
        NOTICES_FAILED: failed,
        NOTICES_RETRYING: retrying,
        NOTICES_UNKNOWN: unknown,
        NOTICES_DEFERRED: deferred,
        NOTICES_SUPPRESSED: suppressed,
        ITEMS_INVALID: invalid,
    }
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.add_metric(name=RUN_DURATION, unit=MetricUnit.Milliseconds, value=duration_ms)
    metrics.flush_metrics()


def publish_counts(check: str, counts: dict[str, int]) -> None:
    """Print one EMF document of ``counts`` (metric name -> Count) for ``check``."""
    metrics = run_metrics(check)
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.flush_metrics()
