"""When the notifier tries a delivery again: backoff with full jitter, Retry-After, giving up."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from streams.common.settings import NotifySettings
from streams.notify.retry import (
    Answer,
    Delivered,
    GiveUp,
    RetryIn,
    backoff,
    next_step,
    retry_after_seconds,
)

NOW = 1_780_000_000.0
SETTINGS = NotifySettings(max_attempts=5, backoff_base=0.5, backoff_cap=10.0)


def highest(low: float, high: float) -> float:
    return high


def lowest(low: float, high: float) -> float:
    return low


def test_backoff_doubles_up_to_the_cap_and_draws_from_zero() -> None:
    ceilings = [backoff(retry, 0.5, 10.0, highest) for retry in range(1, 8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff(3, 0.5, 10.0, lowest) == 0.0
    assert backoff(10_000, 0.5, 10.0, highest) == 10.0  # no overflow after many retries


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),  # a date past is "now"
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        (None, None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # delay-seconds is a whole number
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def step(answer: Answer, attempts: int = 1, remaining: float = 3600.0) -> object:
    return next_step(answer, attempts, remaining, SETTINGS, NOW, highest)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert step(Answer(status)) == Delivered()


@pytest.mark.parametrize("status", [300, 301, 400, 401, 403, 404, 410, 413, 422])
def test_other_answers_below_500_are_not_retried(status: int) -> None:
    result = step(Answer(status, "nope"))
    assert result == GiveUp(f"HTTP {status}: nope (not retried)")


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, None])
def test_timeouts_throttling_server_errors_and_no_answer_are_retried_by_backoff(
    status: int | None,
) -> None:
    assert step(Answer(status, "refused"), attempts=1) == RetryIn(0.5)
    assert step(Answer(status, "refused"), attempts=3) == RetryIn(2.0)


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_wait_as_long_as_retry_after_says(status: int) -> None:
    assert step(Answer(status, retry_after="42")) == RetryIn(42.0)
    dated = formatdate(NOW + 90, usegmt=True)
    assert step(Answer(status, retry_after=dated)) == RetryIn(90.0)
    assert step(Answer(status, retry_after="whenever")) == RetryIn(0.5)


def test_retry_after_on_other_errors_is_not_taken() -> None:
    assert step(Answer(500, retry_after="42")) == RetryIn(0.5)


def test_the_last_attempt_gives_up_with_the_receivers_answer() -> None:
    assert step(Answer(500, "db down"), attempts=5) == GiveUp("HTTP 500: db down after 5 attempts")
    assert step(Answer(None, "connection refused"), attempts=5) == GiveUp(
        "connection refused after 5 attempts"
    )


def test_a_retry_that_would_start_past_the_max_age_gives_up_now() -> None:
    assert step(Answer(503, retry_after="600"), remaining=599.0) == GiveUp(
        "HTTP 503 after 1 attempts (max age reached)"
    )
    assert step(Answer(503, retry_after="600"), remaining=601.0) == RetryIn(600.0)
