"""The structured (JSON) logger shared by the checks."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="loan-reminders")
