"""One typed settings object, read at the entry point and passed down.

A *workspace* is a folder holding `feature_repo/` and `data/`; the repository root is the
default one. Tests build their own workspace in a temporary folder with the same layout, so
the same code paths run against a tiny world without touching the demo's data.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from mmrec.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
ONLINE_STORES = ("sqlite", "redis")
OFFLINE_STORES = ("duckdb", "spark")
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 1,000 events with every field at its longest are 400 kB
DEFAULT_SNAPSHOT_REFRESH_S = 600.0  # how old the serving item snapshot may get (the one default)


class SettingsError(UserError):
    """A setting has a value that cannot work; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Where things live, which backends to use and what the service loads.

    Built once at an entry point (`Settings.from_env`: the CLI, the service, a benchmark) and
    passed down; no other module reads or writes the environment. Variables (all optional):

    - MMREC_WORKSPACE: folder with feature_repo/ and data/ (default: the repository);
    - MMREC_ONLINE_STORE (sqlite|redis), MMREC_REDIS_URL (the redis profile's Feast
      connection string, host:port[,password=...,ssl=true]);
    - MMREC_OFFLINE_STORE (duckdb|spark): the engine of point-in-time joins and materialization;
      MMREC_SPARK_DRIVER_MEMORY (JVM size, e.g. 1g): the Spark driver, which holds a joined chunk;
    - MMREC_TORCH_THREADS: threads per process for PyTorch work;
    - BENTOML_HOME: the BentoML store (default: <workspace>/data/bentoml);
    - MMREC_MILVUS_URI (a milvus-lite .db file or http://host:port; default
      <workspace>/data/index/milvus.db), MMREC_MILVUS_TOKEN ("user:password" or an API key);
    - serving (serving/config.py): MMREC_RECALL_MODEL / MMREC_RANK_MODEL (model tags),
      MMREC_SERVING_CLOCK (world|wall), MMREC_SERVING_WORKERS, MMREC_CANDIDATES,
      MMREC_SNAPSHOT_REFRESH_S, MMREC_CHANNEL_QUOTAS and MMREC_MIX_QUOTAS (JSON objects);
    - the service's front door (serving/guard.py): MMREC_API_TOKEN (writes need it as a bearer
      token; MMREC_API_TOKEN_READS=1: reads too), MMREC_MAX_BODY_BYTES (default 1 MiB),
      MMREC_BODY_TIMEOUT_S (seconds a request body may take to arrive, default 10).

    Secrets (MMREC_API_TOKEN, MMREC_MILVUS_TOKEN, MMREC_REDIS_URL) come from the variable or
    from the file its `<NAME>_FILE` variable names, and are left out of `repr`, so a logged
    or printed Settings never shows them.
    """

    workspace: Path = REPO_ROOT
    online_store: str = "sqlite"
    offline_store: str = "duckdb"
    # toPandas() gathers a joined chunk in the driver: 1g holds the tiny world's training sets,
    # not 14k ranking rows of 1,664 embedding floats each (Java heap OOM, bench/spark_offline_bench.py)
    spark_driver_memory: str = "1g"
    redis_url: str = field(default="localhost:6379", repr=False)  # may carry a password
    torch_threads: int = 2
    bentoml_home: Path | None = None  # None: the workspace's own store
    milvus_uri: str | None = None  # None: the workspace's milvus-lite file
    milvus_token: str = field(default="", repr=False)
    recall_model: str = "recall:latest"
    rank_model: str = "ranking:latest"
    serving_clock: str = "world"
    serving_workers: int = 1
    candidates: int = 500
    snapshot_refresh_s: float = DEFAULT_SNAPSHOT_REFRESH_S
    channel_quotas: dict[str, Any] = field(default_factory=dict)
    mix_quotas: dict[str, Any] = field(default_factory=dict)
    api_token: str = field(default="", repr=False)  # "": the service takes no token
    api_token_reads: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = 10.0
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.online_store not in ONLINE_STORES:
            raise SettingsError(
                f"online store {self.online_store!r} is not supported; "
                f"use one of {', '.join(ONLINE_STORES)} (MMREC_ONLINE_STORE)"
            )
        if self.offline_store not in OFFLINE_STORES:
            raise SettingsError(
                f"offline store {self.offline_store!r} is not supported; "
                f"use one of {', '.join(OFFLINE_STORES)} (MMREC_OFFLINE_STORE)"
            )
        if not re.fullmatch(r"[1-9][0-9]*[kmgt]", self.spark_driver_memory):
            raise SettingsError(
                f"MMREC_SPARK_DRIVER_MEMORY must be a JVM size such as 1g or 4096m, "
                f"got {self.spark_driver_memory!r}"
            )
        if self.torch_threads < 1:
            raise SettingsError(f"torch threads must be >= 1, got {self.torch_threads}")
        if self.serving_workers < 1:
            raise SettingsError(f"MMREC_SERVING_WORKERS must be >= 1, got {self.serving_workers}")
        if self.max_body_bytes < 1:
            raise SettingsError(f"MMREC_MAX_BODY_BYTES must be >= 1, got {self.max_body_bytes}")
        if not self.body_timeout_s > 0:
            raise SettingsError(f"MMREC_BODY_TIMEOUT_S must be > 0, got {self.body_timeout_s}")

    @classmethod
    def from_env(
        cls, workspace: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from the environment (`environ`, default os.environ); `workspace` wins
        over MMREC_WORKSPACE."""
        env = os.environ if environ is None else environ
        root = workspace or Path(env.get("MMREC_WORKSPACE", REPO_ROOT))
        home = env.get("BENTOML_HOME")
        return cls(
            workspace=Path(root).resolve(),
            online_store=env.get("MMREC_ONLINE_STORE", "sqlite"),
            offline_store=env.get("MMREC_OFFLINE_STORE", "duckdb"),
            spark_driver_memory=env.get("MMREC_SPARK_DRIVER_MEMORY", "1g"),
            redis_url=_secret(env, "MMREC_REDIS_URL") or "localhost:6379",
            torch_threads=_number(env, "MMREC_TORCH_THREADS", 2, int),
            bentoml_home=Path(home).resolve() if home else None,
            milvus_uri=env.get("MMREC_MILVUS_URI") or None,
            milvus_token=_secret(env, "MMREC_MILVUS_TOKEN"),
            recall_model=env.get("MMREC_RECALL_MODEL", "recall:latest"),
            rank_model=env.get("MMREC_RANK_MODEL", "ranking:latest"),
            serving_clock=env.get("MMREC_SERVING_CLOCK", "world"),
            serving_workers=_number(env, "MMREC_SERVING_WORKERS", 1, int),
            candidates=_number(env, "MMREC_CANDIDATES", 500, int),
            snapshot_refresh_s=_number(
                env, "MMREC_SNAPSHOT_REFRESH_S", DEFAULT_SNAPSHOT_REFRESH_S, float
            ),
            channel_quotas=_json_object(env, "MMREC_CHANNEL_QUOTAS"),
            mix_quotas=_json_object(env, "MMREC_MIX_QUOTAS"),
            api_token=_secret(env, "MMREC_API_TOKEN"),
            api_token_reads=_flag(env, "MMREC_API_TOKEN_READS"),
            max_body_bytes=_number(env, "MMREC_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int),
            body_timeout_s=_number(env, "MMREC_BODY_TIMEOUT_S", 10.0, float),
        )

    def environment(self) -> dict[str, str]:
        """The variables that give a child process (`feast`, `bentoml build/serve`) these
        settings: the inverse of `from_env` for the places a child must find."""
        return {
            "MMREC_WORKSPACE": str(self.workspace),
            "MMREC_ONLINE_STORE": self.online_store,
            "MMREC_OFFLINE_STORE": self.offline_store,
            "MMREC_SPARK_DRIVER_MEMORY": self.spark_driver_memory,
            "MMREC_REDIS_URL": self.redis_url,
            "MMREC_TORCH_THREADS": str(self.torch_threads),
            "BENTOML_HOME": str(self.model_store_dir),
            "MMREC_MILVUS_URI": self.index_uri,
        }

    @property
    def model_store_dir(self) -> Path:
        """The BentoML model store: BENTOML_HOME, else the workspace's `data/bentoml`."""
        return self.bentoml_home or self.data_dir / "bentoml"

    @property
    def index_uri(self) -> str:
        """MMREC_MILVUS_URI, else the workspace's milvus-lite file `data/index/milvus.db`."""
        return self.milvus_uri or str(self.data_dir / "index" / "milvus.db")

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

    def training_set_dir(self, name: str) -> Path:
        """A training set built with feature service `name` (training_sets/build.py)."""
        return self.data_dir / "training" / name

    @property
    def feature_repo(self) -> Path:
        return self.workspace / "feature_repo"

    @property
    def artifacts_dir(self) -> Path:
        """Trained models, evaluation reports, index build records."""
        return self.data_dir / "artifacts"


def _number(env: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    """Variable `name` as `kind` (int or float), `default` when unset or empty."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what}, got {text!r}") from None


def _secret(env: Mapping[str, str], name: str) -> str:
    """Variable `name`, else the stripped content of the file `<name>_FILE` names ("" when
    neither is set). Messages name the variable and the file, never the value."""
    value, path = env.get(name, ""), env.get(f"{name}_FILE", "")
    if value and path:
        raise SettingsError(f"set {name} or {name}_FILE, not both")
    if not path:
        return value
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(
            f"{name}_FILE names {path}, which cannot be read ({type(err).__name__}): "
            "point it at a readable text file holding the secret"
        ) from None


def _flag(env: Mapping[str, str], name: str) -> bool:
    """Variable `name` as a yes/no: 1/true/yes or 0/false/no/empty."""
    text = env.get(name, "").strip().lower()
    if text in ("", "0", "false", "no"):
        return False
    if text in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{name} must be 1 or 0, got {text!r}")


def _json_object(env: Mapping[str, str], name: str) -> dict:
    """A JSON object from variable `name` ({} when unset)."""
    text = env.get(name, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SettingsError(f"{name} must be a JSON object: {err}") from err
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value
