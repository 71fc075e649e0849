"""How long a failed attempt waits before the next one (SPEC §3)."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int,
    *,
    kind: str = "linear",
    delay: float = 30.0,
    maximum: float = 3600.0,
    jitter: bool = False,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after attempt number ``attempt`` (1-based) failed.

    linear: ``delay`` every time. exponential: ``delay * 2**(attempt-1)`` capped by ``maximum``.
    Jitter spreads retries of jobs that failed together over ±25 % so they do not stampede
    a recovering dependency; the cap still holds afterwards.
    """
    if kind == "exponential":
        # Cap the exponent first: 2**10000 would overflow float arithmetic long before the cap.
        value = min(delay * (2 ** min(max(attempt - 1, 0), 60)), maximum)
    elif kind == "linear":
        value = delay
    else:
        raise ValueError(f"unknown backoff {kind!r}, expected linear or exponential")
    if jitter and value > 0:
        value *= (rng or random).uniform(0.75, 1.25)
        if kind == "exponential":
            value = min(value, maximum)
    return max(value, 0.0)
