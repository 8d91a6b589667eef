"""Saving trained models to, and loading them from, the BentoML model store.

A model is saved as its state dict plus its config (a dataclass, as JSON) and metadata that
ties it to the data it was trained on: the feature service, the content encoder versions and
the evaluation metrics. The store lives in `BENTOML_HOME`, which `use_workspace_store` points at
`<workspace>/data/bentoml` unless the caller set it, so a workspace carries its own models.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from mmrec.settings import Settings

WEIGHTS_FILE = "state_dict.pt"
CONFIG_FILE = "config.json"


def use_workspace_store(settings: Settings) -> Path:
    """Point BentoML's store at the workspace (unless BENTOML_HOME is set) before it is used."""
    home = Path(os.environ.setdefault("BENTOML_HOME", str(settings.data_dir / "bentoml")))
    home.mkdir(parents=True, exist_ok=True)
    return home


def save_model(name: str, model: torch.nn.Module, config: Any, metadata: dict[str, Any]) -> str:
    """Save weights + config under a new version of `name`; returns the tag ("name:version")."""
    import bentoml

    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a dataclass, got {type(config).__name__}")
    json.dumps(metadata)  # metadata must be plain JSON: fail here, not inside BentoML
    with bentoml.models.create(name, metadata=metadata, labels={"stage": "trained"}) as stored:
        torch.save(model.state_dict(), stored.path_of(WEIGHTS_FILE))
        Path(stored.path_of(CONFIG_FILE)).write_text(
            json.dumps(dataclasses.asdict(config), default=list)
        )
    return str(stored.tag)


def load_model(
    tag: str, model_cls: type[torch.nn.Module], config_cls: type
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a saved model in eval mode; returns (model, metadata). `tag` may be "name:latest"."""
    import bentoml

    stored = bentoml.models.get(tag)
    fields = json.loads(Path(stored.path_of(CONFIG_FILE)).read_text())
    types = {f.name: f.type for f in dataclasses.fields(config_cls)}
    # JSON turns tuples into lists: give tuple-typed fields their tuples back
    config = config_cls(
        **{
            k: tuple(v) if isinstance(v, list) and "tuple" in str(types.get(k)) else v
            for k, v in fields.items()
        }
    )
    model = model_cls(config)
    model.load_state_dict(torch.load(stored.path_of(WEIGHTS_FILE), weights_only=True))
    return model.eval(), dict(stored.info.metadata)
