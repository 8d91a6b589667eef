"""One typed settings object, read at the entry point and passed down.

A *workspace* is a folder holding `feature_repo/` and `data/`; the repository root is the
default one. Tests build their own workspace in a temporary folder with the same layout, so
the same code paths run against a tiny world without touching the demo's data.

`Settings` is a pydantic-settings model: each field is one environment variable (MMREC_ and the
field's name in capitals, BENTOML_HOME for `bentoml_home`), parsed and checked by pydantic;
docs/configuration.md's table is generated from the fields (mmrec/settings_reference.py). Only
`Settings.from_env` reads the environment; `Settings(...)` takes its values from the call.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mmrec.errors import UserError
from mmrec.vocab import LATEST_RANKING_MODEL, LATEST_RECALL_MODEL

REPO_ROOT = Path(__file__).resolve().parent.parent
ONLINE_STORES = ("sqlite", "redis")
OFFLINE_STORES = ("duckdb", "spark")
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 1,000 events with every field at its longest are 400 kB
ENV_PREFIX = "MMREC_"
DEFAULT_SNAPSHOT_REFRESH_S = 600.0  # how old the serving item snapshot may get (the one default)


class SettingsError(UserError):
    """A setting has a value that cannot work; the message says which and how to fix it."""


JsonObject = Annotated[dict[str, Any], NoDecode]  # parsed by `_json_object`, not by the source


class Settings(BaseSettings):
    """Where things live, which backends to use and what the service loads.

    Built once at an entry point (`Settings.from_env`: the CLI, the service, a benchmark) and
    passed down; no other module reads or writes the environment. Every field is optional.
    Secrets (`repr=False`: MMREC_API_TOKEN, MMREC_MILVUS_TOKEN, MMREC_REDIS_URL) come from the
    variable or from the file its `<NAME>_FILE` variable names, and are left out of `repr`
    and of error messages, so a logged or printed Settings never shows them.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # an empty variable is an unset one
        frozen=True,
        populate_by_name=True,
        extra="forbid",
    )

    workspace: Path = Field(REPO_ROOT, description="Folder with `feature_repo/` and `data/`.")
    online_store: str = Field(
        "sqlite", description=f"Feast online store: {' or '.join(ONLINE_STORES)}."
    )
    offline_store: str = Field(
        "duckdb",
        description=f"Feast offline store, the engine of point-in-time joins and "
        f"materialization: {' or '.join(OFFLINE_STORES)}.",
    )
    # toPandas() gathers a joined chunk in the driver: the tiny world's sets need 512m-700m under
    # feature_store.spark*.yaml's batch and broadcast settings (docs/scaling-out.md)
    spark_driver_memory: str = Field(
        "1g", description="JVM size of the Spark driver, which holds a joined chunk (e.g. 4g)."
    )
    redis_url: str = Field(
        "localhost:6379",
        repr=False,  # may carry a password
        description="The redis profile's Feast connection string, "
        "`host:port[,password=...,ssl=true]`.",
    )
    torch_threads: int = Field(2, ge=1, description="Threads per process for PyTorch work.")
    bentoml_home: Path | None = Field(
        None,
        validation_alias="BENTOML_HOME",
        description="The BentoML model store (unset: `<workspace>/data/bentoml`).",
    )
    milvus_uri: str | None = Field(
        None,
        description="A milvus-lite `.db` file or `http://host:port` "
        "(unset: `<workspace>/data/index/milvus.db`).",
    )
    milvus_token: str = Field(
        "", repr=False, description='Milvus credentials, "user:password" or an API key.'
    )
    recall_model: str = Field(
        LATEST_RECALL_MODEL, description="Recall model tag the service loads."
    )
    rank_model: str = Field(
        LATEST_RANKING_MODEL, description="Ranking model tag the service loads."
    )
    serving_clock: str = Field(
        "world", description="The service's clock: world (the data's end) or wall."
    )
    serving_workers: int = Field(1, ge=1, description="Service worker processes.")
    candidates: int = Field(500, description="Items ranked per request (1..5000).")
    snapshot_refresh_s: float = Field(
        DEFAULT_SNAPSHOT_REFRESH_S,
        description="Seconds the service's item-feature snapshot may age before a reload.",
    )
    channel_quotas: JsonObject = Field(
        default_factory=dict,
        description='Candidates per recall channel, a JSON object such as `{"u2v": 300}`.',
    )
    mix_quotas: JsonObject = Field(
        default_factory=dict,
        description="Material caps per scene for the mixed ranking, a JSON object such as "
        '`{"home": {"video": 0.9}}`.',
    )
    api_token: str = Field(
        "",
        repr=False,
        description="Bearer token `POST /events` needs (empty: the service takes none).",
    )
    api_token_reads: bool = Field(
        False, description="1: reads (`/recommend`, the feed) need the token too."
    )
    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES, ge=1, description="Largest request body the service reads."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a request body may take to arrive."
    )
    # Values a caller attaches (tests: the model tags of a trained world); never from the
    # environment.
    extra: dict[str, str] = Field(default_factory=dict, exclude=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise SettingsError(_explain(err)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`Settings(...)` takes the call's values only; `from_env` adds the environment."""
        return (init_settings,)

    @classmethod
    def from_env(
        cls, workspace: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from the environment (`environ`, default os.environ); `workspace` wins
        over MMREC_WORKSPACE."""
        env = os.environ if environ is None else environ
        values = {**_Environment(cls, env)(), **_SecretFiles(cls, env)()}
        values.pop("extra", None)
        if workspace is not None:
            values["workspace"] = workspace
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """These settings with `changes`, checked as at construction."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**values, **changes})

    @field_validator("workspace", "bentoml_home")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return None if path is None else path.resolve()

    @field_validator("online_store", "offline_store")
    @classmethod
    def _store(cls, value: str, info: ValidationInfo) -> str:
        kind = info.field_name.removesuffix("_store")  # online | offline
        supported = ONLINE_STORES if kind == "online" else OFFLINE_STORES
        if value not in supported:
            raise ValueError(
                f"{kind} store {value!r} is not supported; "
                f"use one of {', '.join(supported)} ({env_var(info.field_name)})"
            )
        return value

    @field_validator("spark_driver_memory")
    @classmethod
    def _jvm_size(cls, value: str) -> str:
        if not re.fullmatch(r"[1-9][0-9]*[kmgt]", value):
            raise ValueError(
                f"MMREC_SPARK_DRIVER_MEMORY must be a JVM size such as 1g or 4096m, got {value!r}"
            )
        return value

    @field_validator("channel_quotas", "mix_quotas", mode="before")
    @classmethod
    def _json_object(cls, value: Any, info: ValidationInfo) -> Any:
        """A JSON object from the variable's text (a dict given to the call passes)."""
        if not isinstance(value, str):
            return value
        name = env_var(info.field_name)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} must be a JSON object: {err}") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"{name} must be a JSON object, got {type(parsed).__name__}")
        return parsed

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


SECRETS = tuple(name for name, field in Settings.model_fields.items() if not field.repr)
FROM_ENVIRONMENT = tuple(name for name in Settings.model_fields if name != "extra")


def env_var(name: str) -> str:
    """The environment variable of Settings field `name`."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"{ENV_PREFIX}{name.upper()}"


class _Environment(EnvSettingsSource):
    """pydantic-settings' reader of environment variables, over a given mapping (`from_env`'s
    `environ`: os.environ by default) rather than always os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        # what EnvSettingsSource itself holds for os.environ: names folded to lower case
        # (Settings is not case-sensitive), empty values left out (env_ignore_empty)
        self.env_vars = {name.lower(): value for name, value in environ.items() if value}


class _SecretFiles(PydanticBaseSettingsSource):
    """Each secret from the file its `<NAME>_FILE` variable names (stripped of surrounding
    whitespace). Messages name the variable and the file, never the value."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_var(field_name)
        path = self.environ.get(f"{name}_FILE", "")
        if not path or field_name not in SECRETS:
            return None, field_name, False
        if self.environ.get(name):
            raise SettingsError(f"set {name} or {name}_FILE, not both")
        try:
            return Path(path).read_text().strip(), field_name, False
        except (OSError, UnicodeDecodeError) as err:
            raise SettingsError(
                f"{name}_FILE names {path}, which cannot be read ({type(err).__name__}): "
                "point it at a readable text file holding the secret"
            ) from None

    def __call__(self) -> dict[str, Any]:
        values = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


# What a value that failed pydantic's own checks must be, by pydantic's error type.
_MUST_BE = {
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "int_type": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "1 or 0",
    "bool_type": "1 or 0",
}


def _explain(error: ValidationError) -> str:
    """One line per failed setting naming its variable and what to give instead; the value
    only when it is not a secret."""
    lines = []
    for e in error.errors(include_url=False):
        field = str(e["loc"][0]) if e["loc"] else ""
        if e["type"] == "value_error":  # ours: the message names the variable
            lines.append(str(e["ctx"]["error"]))
            continue
        name = env_var(field) if field in Settings.model_fields else field
        ctx = e.get("ctx", {})
        must = _MUST_BE.get(e["type"]) or (
            f">= {ctx['ge']}" if "ge" in ctx else f"> {ctx['gt']}" if "gt" in ctx else None
        )
        text = f"{name} must be {must}" if must else f"{name}: {e['msg']}"
        lines.append(text if field in SECRETS else f"{text}, got {e['input']!r}")
    return "; ".join(lines)
