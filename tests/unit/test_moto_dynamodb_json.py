"""The suite's fast encoding of moto's DynamoDB answers reads exactly as moto's own.

``tests/moto_dynamodb_json.py`` replaces moto's generic response serializer for
DynamoDB's successful answers. Here every answer of a real workload (the three checks
sending, and every kind of value and operation the project's code or tests use) is
encoded both ways and parsed by botocore, as any client reads it: same values, same
types, for every answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.model import OperationModel
from botocore.parsers import create_parser
from moto.core.responses import ActionContext
from moto.dynamodb.responses import DynamoResult

from chalicelib.config import Settings
from tests import factories
from tests.moto_dynamodb_json import CONTENT_TYPE, encode, moto_encode
from tests.support import REGION, run, utc

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef


@dataclass(frozen=True)
class Answer:
    """One successful DynamoDB answer moto produced: its operation and its result."""

    operation: OperationModel
    result: DynamoResult
    context: ActionContext


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[Answer]:
    """Every DynamoDB answer moto gives during the test (encoded the fast way meanwhile)."""
    seen: list[Answer] = []

    def record(result: DynamoResult, context: ActionContext) -> Any:
        seen.append(Answer(context.operation_model, result, context))
        return encode(result, context)

    monkeypatch.setattr(DynamoResult, "execute_result", record)
    return seen


def read(answer: Answer, body: str) -> str:
    """What botocore parses ``body`` to, as JSON that tells 1 from 1.0 and bytes from text."""
    shape = answer.operation.output_shape
    assert shape is not None
    parsed = create_parser("json").parse(
        {"status_code": 200, "headers": {}, "body": body.encode()}, shape
    )
    parsed.pop("ResponseMetadata", None)
    return json.dumps(parsed, sort_keys=True, default=repr)


def bodies(answer: Answer) -> tuple[str, str]:
    """The answer encoded the suite's way and moto's way (same status and content type)."""
    fast, moto = encode(answer.result, answer.context), moto_encode(answer.result, answer.context)
    assert (fast[0], fast[1]["Content-Type"]) == (moto[0], moto[1]["Content-Type"])
    assert fast[1]["Content-Type"] == CONTENT_TYPE
    return str(fast[2]), str(moto[2])


def assert_read_alike(answers: list[Answer]) -> None:
    """botocore reads each answer the same from both encodings."""
    for answer in answers:
        fast, moto = bodies(answer)
        assert read(answer, fast) == read(answer, moto), answer.operation.name


def test_botocore_reads_every_answer_of_the_checks_runs_the_same_from_both_encodings(
    answers: list[Answer], service: Settings
) -> None:
    # Given a CRM with something due for every check
    factories.one_of_each()
    factories.repayment_due_to_two_borrowers("rep-2", due_date="2026-11-13")

    # When the three checks run and send, and run again with nothing new due
    noon = utc("2026-11-23 01:00")
    for _ in range(2):
        for check in ("stale_applications", "note_reminders", "repayment_reminders"):
            run(check, noon)

    # Then botocore reads each answer the same from both encodings
    assert {a.operation.name for a in answers} >= {
        "PutItem",
        "Query",
        "BatchGetItem",
        "UpdateItem",
    }
    assert_read_alike(answers)


def test_botocore_reads_every_kind_of_value_and_operation_the_same_from_both_encodings(
    aws: None, answers: list[Answer]
) -> None:
    # Given a table with a sparse index, and items holding every kind of attribute value
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "day", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "day-at-index",
                "KeySchema": [
                    {"AttributeName": "day", "KeyType": "HASH"},
                    {"AttributeName": "at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["b"]},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName="t", TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )
    every_kind: dict[str, AttributeValueTypeDef] = {
        "s": {"S": 'Zoë ✓ "quoted" \\ </script>'},
        "n": {"N": "1.50"},
        "big": {"N": "12345678901234567890.123456789"},
        "b": {"B": b"\x00\xff binary"},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": [b"\x01", b"\x02"]},
        "m": {"M": {"inner": {"L": [{"NULL": True}, {"BOOL": False}, {"S": ""}]}}},
        "day": {"S": "2026-11-23"},
    }

    # When every operation the project's code and tests use answers about them
    for n in range(3):
        client.put_item(
            TableName="t", Item={"id": {"S": f"i{n}"}, "at": {"N": str(n)}, **every_kind}
        )
    client.put_item(
        TableName="t",
        Item={"id": {"S": "i0"}, "at": {"N": "0"}, **every_kind},
        ReturnValues="ALL_OLD",
    )
    client.get_item(TableName="t", Key={"id": {"S": "i1"}}, ConsistentRead=True)
    client.get_item(TableName="t", Key={"id": {"S": "missing"}})
    client.get_item(
        TableName="t",
        Key={"id": {"S": "i1"}},
        ProjectionExpression="#m.inner, b",
        ExpressionAttributeNames={"#m": "m"},
    )
    client.query(
        TableName="t",
        IndexName="day-at-index",
        KeyConditionExpression="#d = :d AND #a >= :a",
        ExpressionAttributeNames={"#d": "day", "#a": "at"},
        ExpressionAttributeValues={":d": {"S": "2026-11-23"}, ":a": {"N": "1"}},
        ReturnConsumedCapacity="INDEXES",
        Limit=1,
    )
    client.query(
        TableName="t",
        KeyConditionExpression="id = :i",
        ExpressionAttributeValues={":i": {"S": "i2"}},
        Select="COUNT",
    )
    client.scan(TableName="t", Limit=2)
    client.scan(TableName="t", FilterExpression="attribute_exists(nothing)")
    client.batch_get_item(
        RequestItems={"t": {"Keys": [{"id": {"S": "i0"}}, {"id": {"S": "nope"}}]}},
        ReturnConsumedCapacity="TOTAL",
    )
    for returned in ("ALL_NEW", "ALL_OLD", "UPDATED_NEW", "UPDATED_OLD", "NONE"):
        client.update_item(
            TableName="t",
            Key={"id": {"S": "i1"}},
            UpdateExpression="SET s = :s ADD tries :one REMOVE bs",
            ExpressionAttributeValues={":s": {"S": returned}, ":one": {"N": "1"}},
            ReturnValues=returned,
        )
    client.batch_write_item(
        RequestItems={
            "t": [
                {"PutRequest": {"Item": {"id": {"S": "i9"}, **every_kind}}},
                {"DeleteRequest": {"Key": {"id": {"S": "i2"}}}},
            ]
        }
    )
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "t", "Item": {"id": {"S": "t1"}, **every_kind}}},
            {
                "Update": {
                    "TableName": "t",
                    "Key": {"id": {"S": "i9"}},
                    "UpdateExpression": "SET n = :n",
                    "ExpressionAttributeValues": {":n": {"N": "7"}},
                }
            },
        ]
    )
    client.transact_get_items(
        TransactItems=[{"Get": {"TableName": "t", "Key": {"id": {"S": "t1"}}}}]
    )
    client.delete_item(TableName="t", Key={"id": {"S": "t1"}}, ReturnValues="ALL_OLD")
    client.describe_table(TableName="t")
    client.describe_time_to_live(TableName="t")
    client.list_tables()
    client.delete_table(TableName="t")

    # Then botocore reads each answer the same from both encodings
    # (the others, BatchWriteItem, TransactWriteItems, the TTL and ListTables, answer with no
    # item and keep moto's serializer)
    assert sorted({a.operation.name for a in answers}) == [
        "BatchGetItem",
        "CreateTable",
        "DeleteItem",
        "DeleteTable",
        "DescribeTable",
        "GetItem",
        "PutItem",
        "Query",
        "Scan",
        "TransactGetItems",
        "UpdateItem",
    ]
    assert_read_alike(answers)
