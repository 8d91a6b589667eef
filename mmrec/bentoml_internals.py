"""The parts of BentoML (1.4) that mmrec uses beyond its documented API, in one place: a
BentoML upgrade that moves or renames them breaks this file and tests/test_training_export.py,
not the stages that use them.

- A model store at a folder of our choosing. BentoML opens another store than its default only
  through BENTOML_HOME (read once per process; nothing here writes the environment) or its
  internal `ModelStore` class, which its public `bentoml.models.create` / `get` accept as the
  private `_model_store` argument. A workspace keeps its own store (models/store.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_store(folder: Path) -> Any:
    """A BentoML model store over `folder` (its `models/` folder, as BENTOML_HOME's)."""
    from bentoml._internal.models import ModelStore

    return ModelStore(folder)


def create_model(store: Any, name: str, **options: Any) -> Any:
    """`bentoml.models.create(name, **options)` in `store` (a context manager)."""
    import bentoml

    return bentoml.models.create(name, _model_store=store, **options)


def get_model(store: Any, tag: str) -> Any:
    """`bentoml.models.get(tag)` from `store` (bentoml.exceptions.NotFound when absent)."""
    import bentoml

    return bentoml.models.get(tag, _model_store=store)
