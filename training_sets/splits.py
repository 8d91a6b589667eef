"""Time split by world day: train / valid / test, and the cold-item flag."""

from __future__ import annotations

from dataclasses import dataclass

from mmrec.errors import UserError


@dataclass(frozen=True)
class DaySplit:
    """Which world days (ISO dates) go to which split; the last days are the test days."""

    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    @classmethod
    def from_days(cls, days: list[str], valid_days: int = 1, test_days: int = 2) -> DaySplit:
        if valid_days < 0 or test_days < 1:
            raise UserError(
                f"need test_days >= 1 and valid_days >= 0, got {test_days}, {valid_days}"
            )
        if len(days) < valid_days + test_days + 1:
            raise UserError(
                f"{len(days)} world days cannot hold 1 train + {valid_days} valid + {test_days} test days"
            )
        n_train = len(days) - valid_days - test_days
        return cls(
            tuple(days[:n_train]),
            tuple(days[n_train : n_train + valid_days]),
            tuple(days[n_train + valid_days :]),
        )

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
