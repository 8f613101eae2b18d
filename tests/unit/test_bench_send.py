"""``ops.bench_send``'s simulated SES can throttle, and its figures are computed as documented."""

from __future__ import annotations

import pytest

from ops.bench_send import SendResult, SimulatedSes, summary_line

PARAMS = {"url": "https://email.ap-southeast-2.amazonaws.com/v2/email/outbound-emails"}


def result(quota: float, emails: int, seconds: float, throttles: int = 0) -> SendResult:
    return SendResult(
        quota=quota,
        notices=emails,
        emails=emails,
        throttles=throttles,
        sending_seconds=seconds,
        run_seconds=seconds + 1,
        cpu_seconds=emails * 0.005,
        dynamodb_requests=2 * emails,
        dynamodb_seconds=emails * 0.02,
    )


def test_the_simulated_ses_refuses_a_send_over_its_rate_within_one_second() -> None:
    # Given an account allowed 2 emails a second, answering at once
    ses = SimulatedSes(2, latency=0)

    # When three sends arrive together
    answers = [ses.send_email(PARAMS) for _ in range(3)]

    # Then two are accepted and the third is refused as SES refuses it
    accepted, refused = answers[:2], answers[2]
    assert all(a is not None and "MessageId" in a[1] for a in accepted)
    assert refused is not None
    assert refused[0].status_code == 400
    assert refused[1]["Error"] == {
        "Code": "Throttling",
        "Message": "Maximum sending rate exceeded.",
    }
    assert (len(ses.accepted), ses.throttles) == (2, 1)


def test_the_simulated_ses_reports_its_quota() -> None:
    _, body = SimulatedSes(14).get_account(PARAMS)

    assert body["SendQuota"] == {
        "Max24HourSend": 1_000_000.0,
        "MaxSendRate": 14,
        "SentLast24Hours": 0.0,
    }


def test_the_rate_is_that_of_the_sending_phase() -> None:
    measured = result(quota=50, emails=101, seconds=2.5)

    assert measured.rate == pytest.approx(40.0)
    assert measured.ratio == pytest.approx(0.8)
    assert measured.run_rate == pytest.approx(101 / 3.5)
    assert measured.cpu_ms_per_email == pytest.approx(5.0)
    assert measured.dynamodb_ms == pytest.approx(10.0)


def test_the_summary_line_has_the_worst_ratio_and_every_throttle() -> None:
    results = [result(14, 134, 10.0, throttles=1), result(200, 1801, 10.0, throttles=2)]

    assert summary_line(results) == "send 0.90 x quota, 3 throttles"


def test_a_run_that_sent_one_email_or_none_has_no_rate() -> None:
    assert result(14, 1, 0.0).rate == 0.0
    assert result(14, 0, 0.0).ratio == 0.0
