"""One typed settings object, read at the entry point and passed down.

A *workspace* is a folder holding `feature_repo/` and `data/`; the repository root is the
default one. Tests build their own workspace in a temporary folder with the same layout, so
the same code paths run against a tiny world without touching the demo's data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ONLINE_STORES = ("sqlite", "redis")


class SettingsError(ValueError):
    """A setting has a value that cannot work; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Where things live and which backends to use.

    Environment variables (all optional): MMREC_WORKSPACE (folder with feature_repo/ and
    data/), MMREC_ONLINE_STORE (sqlite|redis), MMREC_REDIS_URL (host:port for the redis
    profile), MMREC_TORCH_THREADS (threads per process for PyTorch work).
    """

    workspace: Path = REPO_ROOT
    online_store: str = "sqlite"
    redis_url: str = "localhost:6379"
    torch_threads: int = 2
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.online_store not in ONLINE_STORES:
            raise SettingsError(
                f"online store {self.online_store!r} is not supported; "
                f"use one of {', '.join(ONLINE_STORES)} (MMREC_ONLINE_STORE)"
            )
        if self.torch_threads < 1:
            raise SettingsError(f"torch threads must be >= 1, got {self.torch_threads}")

    @classmethod
    def from_env(cls, workspace: Path | None = None) -> Settings:
        """Settings from MMREC_* environment variables, with `workspace` taking precedence."""
        root = workspace or Path(os.environ.get("MMREC_WORKSPACE", REPO_ROOT))
        try:
            threads = int(os.environ.get("MMREC_TORCH_THREADS", "2"))
        except ValueError as err:
            raise SettingsError(f"MMREC_TORCH_THREADS must be an integer: {err}") from err
        return cls(
            workspace=Path(root).resolve(),
            online_store=os.environ.get("MMREC_ONLINE_STORE", "sqlite"),
            redis_url=os.environ.get("MMREC_REDIS_URL", "localhost:6379"),
            torch_threads=threads,
        )

    @property
    def data_dir(self) -> Path:
        return self.workspace / "data"

    @property
    def raw_dir(self) -> Path:
        """What the world generator writes: catalog, media, event logs."""
        return self.data_dir / "raw"

    def events_file(self, day: date) -> Path:
        """The raw event log of one world day (one Parquet file a day)."""
        return self.raw_dir / "events" / f"day={day:%Y-%m-%d}" / "events.parquet"

    @property
    def truth_dir(self) -> Path:
        """Latent ground truth, for evaluation only; no model or feature reads it."""
        return self.data_dir / "truth"

    @property
    def offline_dir(self) -> Path:
        """Timestamped offline sources that Feast's DuckDB offline store reads."""
        return self.data_dir / "offline"

    @property
    def feature_repo(self) -> Path:
        return self.workspace / "feature_repo"

    @property
    def artifacts_dir(self) -> Path:
        """Trained models, evaluation reports, index build records."""
        return self.data_dir / "artifacts"
