"""Provisioning: the stage's tables and their indexes, created from the models, and its
fan-out queue with its dead-letter queue (``make deploy``; the packaged template has them).

Operators run it (``python -m ops.cli provision``, ``make deploy``); the demo and the
tests create their tables with it. The Lambda functions never create tables.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import boto3
from pynamodb.models import Model

from chalicelib.config import Settings
from chalicelib.models import ALL_MODELS, TABLE_FIELDS, bind

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.literals import KeyTypeType, ScalarAttributeTypeType
    from mypy_boto3_dynamodb.type_defs import ProjectionTypeDef
    from mypy_boto3_sqs import SQSClient


def table_environment(prefix: str) -> dict[str, str]:
    """The table variables (``APPLICATIONS_TABLE``, ...) naming every table ``<prefix>-<name>``:
    a benchmark's own set of tables."""
    return {f"{name.upper()}_TABLE": f"{prefix}-{name}" for name in TABLE_FIELDS.values()}


def provision(settings: Settings, poll_seconds: float = 5.0) -> list[tuple[str, str]]:
    """Create every missing table with its indexes, and missing indexes on existing tables.

    Returns ``(table, what)`` rows: ``created``, ``exists``, or ``index <name> added``.
    The CRM's tables usually exist already; the checks need their indexes, so any
    the CRM lacks are added one at a time (DynamoDB backfills each before the next).
    """
    bind(settings)
    report: list[tuple[str, str]] = []
    for model in ALL_MODELS:
        name = model.Meta.table_name
        if not model.exists():
            model.create_table(wait=True)
            report.append((name, "created"))
            continue
        added = _add_missing_indexes(model, settings, poll_seconds)
        report.extend((name, f"index {index} added") for index in added)
        if not added:
            report.append((name, "exists"))
    return report


def _add_missing_indexes(model: type[Model], settings: Settings, poll_seconds: float) -> list[str]:
    described = model.describe_table()
    present = {index["IndexName"] for index in described.get("GlobalSecondaryIndexes", [])}
    schema = model._get_schema()
    types = {a["AttributeName"]: a["AttributeType"] for a in schema["attribute_definitions"]}
    client = boto3.client(
        "dynamodb", region_name=settings.region, endpoint_url=settings.dynamodb_endpoint
    )
    added = []
    # PynamoDB's schema holds DynamoDB's own key types, attribute types and projections as
    # plain strings; the casts name them as the client's types.
    for index in schema["global_secondary_indexes"]:
        if index["index_name"] in present:
            continue
        keys = sorted(index["key_schema"], key=lambda k: k["KeyType"] != "HASH")
        client.update_table(
            TableName=model.Meta.table_name,
            AttributeDefinitions=[
                {
                    "AttributeName": k["AttributeName"],
                    "AttributeType": cast("ScalarAttributeTypeType", types[k["AttributeName"]]),
                }
                for k in keys
            ],
            GlobalSecondaryIndexUpdates=[
                {
                    "Create": {
                        "IndexName": index["index_name"],
                        "KeySchema": [
                            {
                                "AttributeName": k["AttributeName"],
                                "KeyType": cast("KeyTypeType", k["KeyType"]),
                            }
                            for k in keys
                        ],
                        "Projection": cast("ProjectionTypeDef", dict(index["projection"])),
                    }
                }
            ],
        )
        _wait_for_index(client, model.Meta.table_name, index["index_name"], poll_seconds)
        added.append(index["index_name"])
    return added


def _wait_for_index(client: DynamoDBClient, table: str, index: str, poll_seconds: float) -> None:
    # A table takes one index creation at a time; a large table backfills for minutes.
    while True:
        indexes = client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes", [])
        status = next((i.get("IndexStatus") for i in indexes if i["IndexName"] == index), None)
        if status in (None, "ACTIVE"):
            return
        time.sleep(poll_seconds)


def put_items(client: DynamoDBClient, table: str, items: Iterable[Mapping[str, Any]]) -> None:
    """Write ``items`` (DynamoDB JSON) into ``table``: BatchWriteItem in pages of 25,
    retrying what DynamoDB leaves unprocessed."""
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append({"PutRequest": {"Item": item}})
        if len(batch) == 25:
            _flush(client, table, batch)
            batch = []
    if batch:
        _flush(client, table, batch)


def _flush(client: DynamoDBClient, table: str, batch: list[dict[str, Any]]) -> None:
    pending: Mapping[str, Any] = {table: batch}
    while pending:
        answer = client.batch_write_item(RequestItems=cast("Any", pending))
        pending = answer.get("UnprocessedItems") or {}


def provision_fanout_queue(
    name: str, region: str, client: SQSClient | None = None
) -> list[tuple[str, str]]:
    """Create the fan-out queue ``name`` and its dead-letter queue when missing.

    The same settings as the packaged template's (``ops.infra``): the queue redrives a
    record after ``FANOUT_MAX_RECEIVES`` receives to ``<name>-dead-letters``. Returns
    ``(queue, "created" | "exists")`` rows, the dead-letter queue first.
    """
    from ops import infra

    sqs = client or boto3.client("sqs", region_name=region)
    dead = name + "-dead-letters"
    report = [
        (
            dead,
            _queue(
                sqs,
                dead,
                {
                    "MessageRetentionPeriod": str(infra.DLQ_RETENTION_SECONDS),
                    "SqsManagedSseEnabled": "true",
                },
            ),
        )
    ]
    dead_arn = sqs.get_queue_attributes(
        QueueUrl=sqs.get_queue_url(QueueName=dead)["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    attributes = {
        "VisibilityTimeout": str(infra.FANOUT_VISIBILITY_SECONDS),
        "MessageRetentionPeriod": str(infra.FANOUT_RETENTION_SECONDS),
        "SqsManagedSseEnabled": "true",
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dead_arn, "maxReceiveCount": infra.FANOUT_MAX_RECEIVES}
        ),
    }
    report.append((name, _queue(sqs, name, attributes)))
    return report


def _queue(sqs: SQSClient, name: str, attributes: dict[str, str]) -> str:
    try:
        sqs.get_queue_url(QueueName=name)
    except sqs.exceptions.QueueDoesNotExist:
        sqs.create_queue(QueueName=name, Attributes=attributes)  # type: ignore[arg-type]
        return "created"
    return "exists"


class FanOutNotDeployed(RuntimeError):
    """``fanout-on`` found no deployed consumer reading the stage's queue (the message says)."""


def enable_fanout(
    function_prefix: str,
    region: str,
    *,
    lambda_client: Any | None = None,
    sqs_client: SQSClient | None = None,
) -> list[tuple[str, str]]:
    """After ``chalice deploy``: what Chalice cannot set for the stage's fan-out.

    The consumer's event source reports partial batch failures (``ReportBatchItemFailures``,
    so a batch's failed records alone are received again), the consumer is paced at its
    share of the quota (``FANOUT_CONSUMER_RATE``), and each scheduled function gets the
    queue's URL (``FANOUT_QUEUE_URL``), without which it hands nothing on. The packaged
    template sets the same. Each function keeps its other variables; a second call
    changes nothing. Returns ``(what, "updated" | "already set")`` rows.
    """
    from chalicelib import fanout, registry
    from chalicelib.runner import SCHEDULED_PREFIX
    from ops import infra

    # One pass over the three settings Chalice cannot make, in the order a half-done call
    # is safe to repeat: the consumer's mapping first, then its pace, then the producers.
    functions = lambda_client or boto3.client("lambda", region_name=region)
    sqs = sqs_client or boto3.client("sqs", region_name=region)
    queue = infra.fanout_queue_name(function_prefix)
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    consumer = f"{function_prefix}{infra.FANOUT_FUNCTION}"
    mappings = functions.list_event_source_mappings(FunctionName=consumer, EventSourceArn=arn)
    if not mappings["EventSourceMappings"]:
        raise FanOutNotDeployed(f"{consumer} reads no event source on {queue}: deploy it first")
    report: list[tuple[str, str]] = []
    for mapping in mappings["EventSourceMappings"]:
        what = f"{consumer}: partial batch responses from {queue}"
        if "ReportBatchItemFailures" in (mapping.get("FunctionResponseTypes") or []):
            report.append((what, "already set"))
            continue
        functions.update_event_source_mapping(
            UUID=mapping["UUID"], FunctionResponseTypes=["ReportBatchItemFailures"]
        )
        report.append((what, "updated"))
    wanted = {consumer: ("FANOUT_CONSUMER_RATE", f"{fanout.CONSUMER_RATE:g}")} | {
        f"{function_prefix}{SCHEDULED_PREFIX}{name}": ("FANOUT_QUEUE_URL", url)
        for name in registry.NAMES
    }
    for function, (variable, value) in wanted.items():
        config = functions.get_function_configuration(FunctionName=function)
        variables = dict(config.get("Environment", {}).get("Variables", {}))
        if variables.get(variable) == value:
            report.append((f"{function}: {variable}", "already set"))
            continue
        functions.update_function_configuration(
            FunctionName=function, Environment={"Variables": {**variables, variable: value}}
        )
        report.append((f"{function}: {variable}", "updated"))
    return report
