"""Time split by data day: train / valid / test, and the cold-item flag.

By default the split follows the data, not the calendar: the test days are the newest days
holding at least `test_share` of the events, the valid days the ones before them holding at
least `valid_share`, so a 14-day dense world and a 21-year sparse log both get test and valid
sets of the stated share. `--test-days` / `--valid-days` fix a number of days instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mmrec.errors import UserError


@dataclass(frozen=True)
class SplitSpec:
    """How to split: a share of the events (default) or a number of days, per split."""

    valid_days: int | None = None  # None: by valid_share
    test_days: int | None = None  # None: by test_share
    valid_share: float = 0.1
    test_share: float = 0.1

    def __post_init__(self) -> None:
        if self.test_days is not None and self.test_days < 1:
            raise UserError(f"--test-days must be >= 1, got {self.test_days}")
        if self.valid_days is not None and self.valid_days < 0:
            raise UserError(f"--valid-days must be >= 0, got {self.valid_days}")
        if not 0 < self.test_share < 1:
            raise UserError(f"--test-share must be in (0, 1), got {self.test_share}")
        if not 0 <= self.valid_share < 1:
            raise UserError(f"--valid-share must be in [0, 1), got {self.valid_share}")
        if self.test_share + self.valid_share >= 1:
            raise UserError(
                f"--test-share + --valid-share must leave events to train on, got "
                f"{self.test_share} + {self.valid_share}"
            )

    def split(self, day_events: Sequence[tuple[str, int]]) -> DaySplit:
        """The split of the data's days, given each day's event count (days in order)."""
        days = [day for day, _ in day_events]
        counts = [n for _, n in day_events]
        end = len(days)
        test_start = _suffix_start(counts, end, self.test_days, self.test_share, "test")
        valid_start = _suffix_start(counts, test_start, self.valid_days, self.valid_share, "valid")
        if valid_start < 1:
            raise UserError(
                f"{len(days)} data days cannot hold a train day + {self.describe()}: "
                "import more days or ask for fewer (--test-days/--valid-days, or smaller shares)"
            )
        return DaySplit(
            tuple(days[:valid_start]), tuple(days[valid_start:test_start]), tuple(days[test_start:])
        )

    def describe(self) -> str:
        valid = (
            f"{self.valid_days} valid days"
            if self.valid_days is not None
            else (f"{self.valid_share:.0%} of events valid")
        )
        test = (
            f"{self.test_days} test days"
            if self.test_days is not None
            else (f"{self.test_share:.0%} of events test")
        )
        return f"{valid} + {test}"


def _suffix_start(
    counts: Sequence[int], end: int, days: int | None, share: float, name: str
) -> int:
    """Where the split ending at day index `end` starts: `days` days back, or back until it
    holds at least `share` of all events (at least one day when the share is above 0)."""
    if days is not None:
        return end - days
    wanted, held, start = share * sum(counts), 0, end
    while start > 0 and (held < wanted or (share > 0 and start == end)):
        start -= 1
        held += counts[start]
    return start


@dataclass(frozen=True)
class DaySplit:
    """Which data days (ISO dates) go to which split; the last days are the test days."""

    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    @classmethod
    def from_days(cls, days: list[str], valid_days: int = 1, test_days: int = 2) -> DaySplit:
        """The last `test_days` days test, the `valid_days` before them valid."""
        return SplitSpec(valid_days, test_days).split([(day, 1) for day in days])

    def summary(self, day_events: dict[str, int]) -> str:
        """'train 2026-10-01 .. 2026-10-10 (10 days, 71.2% of events), valid ..., test ...'."""
        total = sum(day_events.values()) or 1
        parts = []
        for name, days in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            if not days:
                parts.append(f"{name}: none")
                continue
            share = sum(day_events.get(d, 0) for d in days) / total
            parts.append(
                f"{name} {days[0]} .. {days[-1]} ({len(days)} days, {share:.1%} of events)"
            )
        return ", ".join(parts)

    def sql_case(self, column: str = "event_timestamp") -> str:
        """A SQL CASE naming the split of a timestamp column (UTC days)."""
        valid = (
            f"WHEN strftime({column}, '%Y-%m-%d') IN ({_quoted(self.valid)}) THEN 'valid' "
            if self.valid
            else ""
        )
        return f"CASE WHEN strftime({column}, '%Y-%m-%d') IN ({_quoted(self.test)}) THEN 'test' {valid}ELSE 'train' END"


def _quoted(days: tuple[str, ...]) -> str:
    return ", ".join(f"'{d}'" for d in days)
