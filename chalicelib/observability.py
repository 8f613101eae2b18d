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
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

SERVICE = "loan-reminders"
NAMESPACE = "LoanReminders"

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


def _masked_json(record: Any) -> str:
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
    metrics.add_dimension(name="check", value=check)
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
    metrics.add_metric(name="ItemsRead", unit=MetricUnit.Count, value=items_read)
    metrics.add_metric(name="NoticesSent", unit=MetricUnit.Count, value=sent)
    metrics.add_metric(name="NoticesFailed", unit=MetricUnit.Count, value=failed)
    metrics.add_metric(name="NoticesRetrying", unit=MetricUnit.Count, value=retrying)
    metrics.add_metric(name="NoticesUnknown", unit=MetricUnit.Count, value=unknown)
    metrics.add_metric(name="NoticesDeferred", unit=MetricUnit.Count, value=deferred)
    metrics.add_metric(name="NoticesSuppressed", unit=MetricUnit.Count, value=suppressed)
    metrics.add_metric(name="ItemsInvalid", unit=MetricUnit.Count, value=invalid)
    metrics.add_metric(name="RunDuration", unit=MetricUnit.Milliseconds, value=duration_ms)
    metrics.flush_metrics()


def publish_counts(check: str, counts: dict[str, int]) -> None:
    """Print one EMF document of ``counts`` (metric name -> Count) for ``check``."""
    metrics = run_metrics(check)
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.flush_metrics()
