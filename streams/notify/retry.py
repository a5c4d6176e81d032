"""When to try a delivery again, decided without I/O: exponential backoff with full jitter, the
receiver's Retry-After, and when to give up."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from dataclasses import dataclass

from streams.common.settings import NotifySettings

RETRIED_STATUSES = frozenset({408, 429})
"""Client errors worth another attempt (besides every 5xx): a timeout, and too many requests."""
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the receiver's status (None: no answer, `detail` says why), an
    excerpt of its body, and its Retry-After header."""

    status: int | None
    detail: str = ""
    retry_after: str | None = None


@dataclass(frozen=True)
class Delivered:
    """The receiver took it (2xx)."""


@dataclass(frozen=True)
class RetryIn:
    """Try again in `delay` seconds."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    """No more attempts: dead-letter it with `reason`."""

    reason: str


Step = Delivered | RetryIn | GiveUp


def backoff(retry: int, base: float, cap: float, draw: Callable[[float, float], float]) -> float:
    """Seconds before the `retry`-th retry (1, 2, ...): full jitter, a draw from 0 to
    min(cap, base * 2^(retry-1)). `draw(a, b)` is uniform on [a, b] (`random.uniform`)."""
    ceiling = cap if retry > 64 else min(cap, base * 2 ** (retry - 1))
    return draw(0.0, ceiling)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header in seconds from `now` (epoch seconds): delay-seconds or an
    HTTP date (one in the past is 0); None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT, whether or not it says so
        return None
    return max(0.0, when.timestamp() - now)


def describe(answer: Answer) -> str:
    """The answer in a few words, for logs and dead letters."""
    if answer.status is None:
        return answer.detail or "no answer"
    return f"HTTP {answer.status}" + (f": {answer.detail}" if answer.detail else "")


def next_step(
    answer: Answer,
    attempts: int,
    remaining: float,
    settings: NotifySettings,
    now: float,
    draw: Callable[[float, float], float],
) -> Step:
    """What follows an attempt that got `answer`, after `attempts` attempts in all, with
    `remaining` seconds of the delivery's max age left. 2xx is delivered; no answer, 408, 429
    and 5xx are tried again (after the receiver's Retry-After on 429 and 503, else by
    backoff) until max_attempts, or until the next attempt would start past the max age;
    anything else is given up at once."""
    status = answer.status
    if status is not None and 200 <= status < 300:
        return Delivered()
    if status is not None and status < 500 and status not in RETRIED_STATUSES:
        return GiveUp(f"{describe(answer)} (not retried)")
    if attempts >= settings.max_attempts:
        return GiveUp(f"{describe(answer)} after {attempts} attempts")
    delay = None
    if status in RETRY_AFTER_STATUSES:
        delay = retry_after_seconds(answer.retry_after, now)
    if delay is None:
        delay = backoff(attempts, settings.backoff_base, settings.backoff_cap, draw)
    if delay > remaining:
        return GiveUp(f"{describe(answer)} after {attempts} attempts (max age reached)")
    return RetryIn(delay)
