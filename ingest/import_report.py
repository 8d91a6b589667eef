"""What an import reports: rows read, written and dropped (with examples), per entity its id
kind; also written to `raw/import_report.json`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ingest.contract import DataContractError


@dataclass
class Counted:
    """How many rows something happened to, and the first few of them."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """What an import read, wrote and dropped (also `raw/import_report.json`)."""

    rows_read: dict[str, int]  # input file -> data rows
    events_written: int  # events in the raw layout after the import
    events_added: int  # of which this import added
    already_present: int  # input events the raw layout already held
    days: int
    first_day: str
    last_day: str
    dropped: dict[str, Counted]  # reason -> rows (ingest.event_rows.DROP_REASONS)
    images_missing: Counted
    images_unreadable: Counted
    ignored_columns: dict[str, list[str]]  # input table -> columns outside the contract
    # entity -> its id kind ("int", "string"; null: none yet) and the keys this import added
    ids: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    unchanged: bool = False  # the same files were imported before: nothing was written

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> ImportReport:
        fields = dict(payload)
        fields["dropped"] = {k: Counted(**v) for k, v in payload["dropped"].items()}
        for name in ("images_missing", "images_unreadable"):
            fields[name] = Counted(**payload[name])
        return cls(**fields)


def check_strict(dropped: dict[str, Counted], strict: bool) -> None:
    if not strict or not any(c.count for c in dropped.values()):
        return
    parts = [
        f"{reason} {c.count} ({'; '.join(c.examples)})" for reason, c in dropped.items() if c.count
    ]
    raise DataContractError(
        f"strict import: rows would be dropped: {', '.join(parts)}. Fix: correct or remove "
        "those rows, or import without --strict to drop them"
    )


def summary(dropped: dict[str, Counted]) -> str:
    return ", ".join(f"{reason} {c.count}" for reason, c in dropped.items() if c.count) or "none"
