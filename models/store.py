"""Saving trained models to, and loading them from, the BentoML model store.

A model is saved as its state dict plus its config (a dataclass, as JSON) and metadata that
ties it to the data it was trained on: the feature service, the content encoder versions and
the evaluation metrics. The store is `Settings.model_store_dir`: BENTOML_HOME when set, else
`<workspace>/data/bentoml`, so a workspace carries its own models. It is opened explicitly
(mmrec/bentoml_internals.py) rather than through BENTOML_HOME, so nothing here has to change
the process's environment.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmrec import bentoml_internals
from mmrec.arrays import find_sorted
from mmrec.errors import UserError
from mmrec.settings import Settings
from mmrec.vocab import CATEGORIES

WEIGHTS_FILE = "state_dict.pt"
CONFIG_FILE = "config.json"
ARRAYS_FILE = "arrays.npz"
# The array naming the item ids a model's ID table learned; others are served as unknown/cold.
KNOWN_ITEMS = "known_item_ids"
KNOWN_USERS = "known_user_ids"  # the users a ranker's user-ID table learned


def model_store(settings: Settings):
    """The workspace's BentoML model store (created on first use)."""
    models = settings.model_store_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    return bentoml_internals.model_store(models)


def save_model(
    settings: Settings,
    name: str,
    model: torch.nn.Module,
    config: Any,
    metadata: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> str:
    """Save weights + config (+ named numpy `arrays`, e.g. the item ids the ID table knows)
    under a new version of `name`; returns the tag ("name:version")."""

    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a dataclass, got {type(config).__name__}")
    json.dumps(metadata)  # metadata must be plain JSON: fail here, not inside BentoML
    with bentoml_internals.create_model(
        model_store(settings), name, metadata=metadata, labels={"stage": "trained"}
    ) as stored:
        torch.save(model.state_dict(), stored.path_of(WEIGHTS_FILE))
        Path(stored.path_of(CONFIG_FILE)).write_text(
            json.dumps(dataclasses.asdict(config), default=list)
        )
        if arrays:
            np.savez(stored.path_of(ARRAYS_FILE), **arrays)
    return str(stored.tag)


def stored_model(settings: Settings, ref: Any):
    """The stored BentoML model of `ref`: a tag ("name:latest" too) in the workspace's store,
    or a stored model itself (what a service's `bentoml.models.BentoModel` attribute resolves
    to inside a bento)."""

    if hasattr(ref, "path_of"):
        return ref
    return bentoml_internals.get_model(model_store(settings), ref)


def load_model(
    settings: Settings, ref: Any, model_cls: type[torch.nn.Module], config_cls: type
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a saved model in eval mode; returns (model, metadata). `ref`: see stored_model."""
    stored = stored_model(settings, ref)
    config = config_from_stored(
        config_cls, json.loads(Path(stored.path_of(CONFIG_FILE)).read_text())
    )
    model = model_cls(config)
    # mmap + assign: the parameters are the file's pages, shared by every process that loads
    # the model (each serving worker held its own copy: 64 MB at the 104k-item world)
    weights = torch.load(stored.path_of(WEIGHTS_FILE), weights_only=True, mmap=True)
    model.load_state_dict(weights, assign=True)
    return model.eval(), dict(stored.info.metadata)


def config_from_stored(config_cls: type, fields: dict[str, Any]) -> Any:
    """A config dataclass from its stored JSON fields: through the class's `upgrade_stored`
    when it has one (a config of an older format takes that format's defaults), with JSON's
    lists turned back into the tuples of tuple-typed fields."""
    upgrade = getattr(config_cls, "upgrade_stored", None)
    if upgrade is not None:
        fields = upgrade(fields)
    types = {f.name: f.type for f in dataclasses.fields(config_cls)}
    return config_cls(
        **{
            k: tuple(v) if isinstance(v, list) and "tuple" in str(types.get(k)) else v
            for k, v in fields.items()
        }
    )


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model from the store with what indexing and serving need to use it right."""

    tag: str
    model: torch.nn.Module
    metadata: dict[str, Any]
    known_item_ids: np.ndarray | None  # sorted; None when saved without them
    known_user_ids: np.ndarray | None = None  # sorted; None when saved without them

    def knows(self, item_ids: np.ndarray) -> np.ndarray:
        """Which of `item_ids` the model's ID table learned (none, when saved without them)."""
        known = self.known_item_ids
        return find_sorted(np.empty(0, np.int64) if known is None else known, item_ids)[1]

    @property
    def version(self) -> str:
        """The model's store version (an index collection built from it carries it)."""
        return self.tag.split(":", 1)[1]

    @property
    def categories(self) -> tuple[str, ...]:
        """The data's category list the model was trained with (the order of its category
        vectors); models trained before the data profile existed used the synthetic world's."""
        return tuple(self.metadata.get("categories", CATEGORIES))

    @property
    def feature_service(self) -> str:
        """The Feast feature service the model was trained with, and so is served with."""
        name = self.metadata.get("feature_service")
        if not name:
            raise UserError(
                f"{self.tag} does not record its feature service: retrain it "
                "(`mmrec train rank` / `mmrec train recall`)"
            )
        return str(name)


def load_stored(
    settings: Settings, ref: Any, model_cls: type[torch.nn.Module], config_cls: type, train: str
) -> LoadedModel:
    """Model `ref` (a tag in the workspace's store, or a stored model) with the item ids its
    ID table learned. A tag the store lacks is a UserError that names `train`, the command
    that makes it."""
    import bentoml

    if isinstance(ref, str):
        try:
            bentoml.Tag.from_taglike(ref)
        except ValueError as err:  # BentoML's answer to a malformed tag
            raise UserError(f"model {ref!r}: {err}") from None
    try:
        stored = stored_model(settings, ref)
    except bentoml.exceptions.NotFound:
        raise UserError(
            f"no model {ref!r} in the BentoML store at {settings.model_store_dir}: run `{train}`"
        ) from None
    model, metadata = load_model(settings, stored, model_cls, config_cls)
    arrays = load_arrays(settings, stored)
    known_items, known_users = (
        None if arrays.get(name) is None else np.unique(arrays[name].astype(np.int64))
        for name in (KNOWN_ITEMS, KNOWN_USERS)
    )
    return LoadedModel(str(stored.tag), model, metadata, known_items, known_users)


def load_arrays(settings: Settings, ref: Any) -> dict[str, np.ndarray]:
    """The named arrays saved with a model ({} when it has none). `ref`: see stored_model."""
    path = Path(stored_model(settings, ref).path_of(ARRAYS_FILE))
    if not path.exists():
        return {}
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}
