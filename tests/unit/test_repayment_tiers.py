"""The repayment notice tiers: one table, windows that never overlap, subjects that say the days."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from chalicelib import ledger, registry
from chalicelib.checks.repayment_reminders import (
    TIERS,
    Audience,
    EscalationRow,
    digest_subject,
    next_notice_on,
    tier_for,
)
from chalicelib.config import Thresholds

CUSTOM = Thresholds(upcoming_days=5, overdue_days=2, urgent_days=6, escalation_days=12)


@pytest.mark.parametrize("t", [Thresholds(), CUSTOM], ids=["defaults", "custom"])
def test_at_most_one_tier_is_due_on_any_day(t: Thresholds) -> None:
    for days in range(-30, 31):
        due = [tier.name for tier in TIERS if days in tier.window(t)]
        assert len(due) <= 1, (days, due)


def test_the_default_windows_are_the_documented_days() -> None:
    t = Thresholds()

    windows = {tier.name: (tier.window(t)[0], tier.window(t)[-1]) for tier in TIERS}

    assert windows == {
        "upcoming": (-7, 0),
        "overdue_3_day": (3, 6),
        "overdue_7_day": (7, 9),
        "overdue_10_day": (10, 17),
    }
    assert [tier_for(d, t) for d in (1, 2, 18)] == [None, None, None]


def test_only_the_escalation_goes_to_the_bdm_and_subjects_state_the_real_days_and_loan() -> None:
    assert [tier.audience for tier in TIERS] == [Audience.BORROWERS] * 3 + [Audience.BDM]
    # The configured thresholds no longer appear: the subject says how late it really is.
    assert [tier.subject_for("APP-7", "16/11/2026", 8) for tier in TIERS] == [
        "Upcoming Repayment Reminder: APP-7 due 16/11/2026",
        "OVERDUE Repayment Notice: APP-7, 8 days overdue",
        "URGENT: 8 Days OVERDUE Repayment: APP-7",
        "ESCALATION: 8 Days Overdue Repayment: APP-7",
    ]
    assert TIERS[1].subject_for("APP-7", "22/11/2026", 1) == (
        "OVERDUE Repayment Notice: APP-7, 1 day overdue"
    )


def test_tiers_run_mildest_first_each_with_its_own_flag() -> None:
    assert [tier.flag for tier in TIERS] == [
        "reminder_sent",
        "overdue_3_day_sent",
        "overdue_7_day_sent",
        "overdue_10_day_sent",
    ]
    t = Thresholds()
    assert [tier.window(t)[0] for tier in TIERS] == sorted(tier.window(t)[0] for tier in TIERS)


def test_a_kind_builds_its_ledger_key_from_its_free_parts_in_order() -> None:
    # Given the 3-day overdue kind, whose tier part is fixed
    kind = registry.kind("repayment_overdue_3_day")

    # When a key is built from the free parts, then from too few or too many
    key = kind.key("rep#1", "2026-11-30", "bor-1")

    # Then the fixed tier sits in its place, each part escaped, and a wrong count is refused
    assert key == ledger.notice_key(
        "repayment_reminders", "rep#1", "2026-11-30", "overdue_3_day", "bor-1"
    )
    assert key == "repayment_reminders#rep%231#2026-11-30#overdue_3_day#bor-1"
    for wrong in (("rep-1", "2026-11-30"), ("rep-1", "2026-11-30", "bor-1", "x")):
        with pytest.raises(TypeError) as raised:
            kind.key(*wrong)
        assert str(raised.value) == (
            "repayment_overdue_3_day keys take repayment_id, due_date, recipient_id"
        )


def test_an_escalation_digest_subject_names_one_loan_or_counts_several() -> None:
    one = EscalationRow("APP-7", "Ben Lee", "$1.00", "13/11/2026", 10)
    same_day = EscalationRow("APP-8", "Mia Chen", "$2.00", "13/11/2026", 10)
    later = EscalationRow("APP-9", "Zoë", "$3.00", "06/11/2026", 17)

    assert digest_subject([one]) == "ESCALATION: 10 Days Overdue Repayment: APP-7"
    assert digest_subject([one, same_day]) == "ESCALATION: 2 Overdue Repayments, 10 Days"
    assert digest_subject([later, one, same_day]) == (
        "ESCALATION: 3 Overdue Repayments, 10 to 17 Days"
    )


def test_the_next_notice_day_counts_a_windows_last_day_and_nothing_after_it() -> None:
    # Given a repayment due on 30/11, whose 3-day overdue window ends on 6/12 (day 6)
    t = Thresholds()
    due = date(2026, 11, 30)
    overdue = [TIERS[1]]

    # When its next notice day is asked from that last day, and from the day after
    on_last_day = next_notice_on(due, overdue, due + timedelta(days=6), t)
    after_it = next_notice_on(due, overdue, due + timedelta(days=7), t)

    # Then the last day itself is still a notice day; after it, none will be
    assert on_last_day == date(2026, 12, 6)
    assert after_it is None
