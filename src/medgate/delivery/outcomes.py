"""The retry rule the result senders share: a pass's outcome counts and the back-off delay.

The PACS sender (``delivery.pacs``) and the site delivery loop (``delivery.site_delivery``) tell
the same failures apart the same way: a destination that was not reached is retried after a
delay that doubles with each try up to a cap, one that refused is retried a bounded number of
times and then dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def doubling_delay(base: float, cap: float, attempts: int) -> float:
    """Delay after ``attempts`` failed tries (1-based): base * 2^(n-1), capped at ``cap``."""
    return float(min(base * 2 ** max(attempts - 1, 0), cap))


@dataclass
class PassOutcomes:
    """What one pass did with the messages it could not deliver (``errors``: the reasons)."""

    retried: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)

    def count_retry(self, reason: str) -> None:
        self.retried += 1
        self.errors.append(reason)

    def count_dead(self, reason: str) -> None:
        self.dead += 1
        self.errors.append(reason)
