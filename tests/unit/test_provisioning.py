"""Provisioning the stage's tables and indexes, and binding the models to them."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import boto3
from pynamodb.models import Model

from chalicelib import models
from chalicelib.config import Settings
from ops.provisioning import provision
from tests.support import BASE_ENV, REGION

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import GlobalSecondaryIndexTypeDef, TableDescriptionTypeDef

EXPECTED_TABLES: dict[str, dict[str, list[tuple[str, str]]]] = {
    "test-applications": {
        "stage-stage_last_updated-index": [("stage", "HASH"), ("stage_last_updated", "RANGE")]
    },
    "test-notes": {
        "pending_check-remind_date-index": [("pending_check", "HASH"), ("remind_date", "RANGE")]
    },
    "test-repayments": {
        "pending_check-next_notice_on-index": [
            ("pending_check", "HASH"),
            ("next_notice_on", "RANGE"),
        ]
    },
    "test-staff": {},
    "test-borrowers": {},
    "test-notifications": {
        "item_id-index": [("item_id", "HASH"), ("created_at", "RANGE")],
        "recipient_email-index": [("recipient_email", "HASH"), ("created_at", "RANGE")],
        "failed_status-failed_at-index": [("failed_status", "HASH"), ("failed_at", "RANGE")],
        "send_token-index": [("send_token", "HASH")],
        "due_check-due_on-index": [("due_check", "HASH"), ("due_on", "RANGE")],
        "business_date-created_at-index": [("business_date", "HASH"), ("created_at", "RANGE")],
    },
}
# Indexes that project only the keys (the rest project every attribute).
KEYS_ONLY_INDEXES = {"send_token-index", "due_check-due_on-index"}


def _describe(table: str) -> TableDescriptionTypeDef:
    return boto3.client("dynamodb", region_name=REGION).describe_table(TableName=table)["Table"]


def test_provision_creates_all_six_tables_with_their_indexes(aws: None, settings: Settings) -> None:
    # Given an empty account
    assert boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"] == []

    # When the tables are provisioned
    report = provision(settings)

    # Then every table exists with the key schema and indexes the checks query
    assert sorted(report) == sorted((name, "created") for name in EXPECTED_TABLES)
    for name, indexes in EXPECTED_TABLES.items():
        table = _describe(name)
        assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        found = {
            gsi["IndexName"]: [(k["AttributeName"], k["KeyType"]) for k in gsi["KeySchema"]]
            for gsi in table.get("GlobalSecondaryIndexes", [])
        }
        assert found == indexes, name
        for gsi in table.get("GlobalSecondaryIndexes", []):
            expected = "KEYS_ONLY" if gsi["IndexName"] in KEYS_ONLY_INDEXES else "ALL"
            assert gsi["Projection"]["ProjectionType"] == expected


def test_provision_is_idempotent(aws: None, settings: Settings) -> None:
    provision(settings)
    models.Staff(id="bdm-1", name="Brooke Davis", email="brooke@example.com").save()

    second = provision(settings)

    assert sorted(second) == sorted((name, "exists") for name in EXPECTED_TABLES)
    assert models.Staff.get("bdm-1").name == "Brooke Davis"


def test_provision_creates_only_the_missing_tables(aws: None, settings: Settings) -> None:
    provision(settings)
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName="test-notes")

    report = dict(provision(settings))

    assert report["test-notes"] == "created"
    assert [name for name, outcome in report.items() if outcome == "exists"] == [
        name for name in EXPECTED_TABLES if name != "test-notes"
    ]
    assert "pending_check-remind_date-index" in {
        gsi["IndexName"] for gsi in _describe("test-notes")["GlobalSecondaryIndexes"]
    }


def test_bind_points_the_models_at_the_stage_tables(aws: None) -> None:
    settings = Settings.from_env({**BASE_ENV, "AWS_REGION": REGION})

    models.bind(settings)

    assert models.Application.Meta.table_name == "u-applications"
    assert models.Notification.Meta.table_name == "u-notifications"
    repayments: type[Model] = models.Repayment  # its Meta as PynamoDB declares it, with region
    assert repayments.Meta.region == REGION


def test_provision_adds_the_business_date_index_to_a_ledger_made_before_it(
    aws: None, settings: Settings
) -> None:
    # Given a ledger made with every index but the report's, holding one notice
    older = cast(
        "list[GlobalSecondaryIndexTypeDef]",
        [
            {
                "IndexName": index["index_name"],
                "KeySchema": sorted(index["key_schema"], key=lambda k: k["KeyType"] != "HASH"),
                "Projection": index["projection"],
            }
            for index in models.Notification._get_schema()["global_secondary_indexes"]
            if index["index_name"] != "business_date-created_at-index"
        ],
    )
    keys = {k["AttributeName"] for index in older for k in index["KeySchema"]} | {"id"}
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName="test-notifications",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in sorted(keys)],
        GlobalSecondaryIndexes=older,
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(
        TableName="test-notifications",
        Item={"id": {"S": "n-1"}, "business_date": {"S": "2026-11-23"}},
    )

    # When provision runs again
    report = provision(settings, poll_seconds=0.05)

    # Then the index is added, the notice kept, and the other tables created
    assert ("test-notifications", "index business_date-created_at-index added") in report
    assert ("test-notes", "created") in report
    indexes = {i["IndexName"] for i in _describe("test-notifications")["GlobalSecondaryIndexes"]}
    assert "business_date-created_at-index" in indexes
    item = dynamodb.get_item(TableName="test-notifications", Key={"id": {"S": "n-1"}})
    assert item["Item"]["business_date"] == {"S": "2026-11-23"}
