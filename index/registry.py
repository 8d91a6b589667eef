"""Which versioned collection an alias points at, kept in a tiny Milvus collection.

milvus-lite 2.5.1 answers UNIMPLEMENTED to create_alias/alter_alias, so the alias is a
pointer row instead: inserting one row flips every reader from the old complete
collection to the new complete one. Pointer rows are append-only (key
`alias:<alias>:<swap time>`, the newest wins, older ones deleted after the new one is in):
a Milvus upsert is a delete plus an insert, and a reader between the two would find no
pointer at all (tests/test_index_concurrency.py caught exactly that). It lives in Milvus itself, so a Milvus server or a
`LiteServer` URI shares it between processes with no extra store, and the same code runs
on every backend. Rows: `alias:<alias>:<swap ns>` -> active collection and its index spec;
`version:<alias>:<collection>` -> build time, row count and dimension, for pruning old versions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pymilvus import DataType, MilvusClient

from index.schema import IndexSpec

REGISTRY = "mmrec_index_registry"
_KEY_CHARS = 256
_STRONG = {"consistency_level": "Strong"}


@dataclass(frozen=True)
class VersionRecord:
    """One built collection: its name, build time (ns since epoch), rows and dimension."""

    collection: str
    built_at_ns: int
    rows: int
    dim: int
    spec: IndexSpec

    @property
    def build_id(self) -> str:
        """This build among all builds of its name (files stored beside it are named so)."""
        return f"{self.collection}_{self.built_at_ns}"


def _ensure(client: MilvusClient) -> None:
    if client.has_collection(REGISTRY):
        return
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=_KEY_CHARS)
    schema.add_field("target", DataType.VARCHAR, max_length=_KEY_CHARS)
    schema.add_field("spec", DataType.VARCHAR, max_length=1024)
    schema.add_field("built_at_ns", DataType.INT64)
    schema.add_field("swapped_at_ns", DataType.INT64)  # pointer rows: newest wins
    schema.add_field("rows", DataType.INT64)
    schema.add_field("dim", DataType.INT64)
    # Milvus requires a vector field in every collection; this one is never searched.
    schema.add_field("unused_vector", DataType.FLOAT_VECTOR, dim=2)
    params = client.prepare_index_params()
    params.add_index("unused_vector", index_type="FLAT", metric_type="L2")
    client.create_collection(REGISTRY, schema=schema, index_params=params, **_STRONG)


def _row(
    key: str,
    target: str,
    spec: IndexSpec,
    built_at_ns: int,
    rows: int,
    dim: int,
    swapped_at_ns: int = 0,
) -> dict:
    return {
        "key": key,
        "target": target,
        "spec": spec.to_json(),
        "built_at_ns": built_at_ns,
        "swapped_at_ns": swapped_at_ns,
        "rows": rows,
        "dim": dim,
        "unused_vector": [0.0, 0.0],
    }


def _record(row: dict) -> VersionRecord:
    return VersionRecord(
        row["target"], row["built_at_ns"], row["rows"], row["dim"], IndexSpec.from_json(row["spec"])
    )


_FIELDS = ["key", "target", "spec", "built_at_ns", "swapped_at_ns", "rows", "dim"]


def record_version(
    client: MilvusClient,
    alias: str,
    collection: str,
    rows: int,
    dim: int,
    spec: IndexSpec,
    built_at_ns: int | None = None,
) -> VersionRecord:
    """Note a finished build of `collection` for `alias` (not yet active); `built_at_ns`
    (default now) tells this build from another of the same name."""
    _ensure(client)
    now = built_at_ns or time.time_ns()
    row = _row(f"version:{alias}:{collection}", collection, spec, now, rows, dim)
    client.upsert(REGISTRY, [row])
    return VersionRecord(collection, now, rows, dim, spec)


def point(client: MilvusClient, alias: str, record: VersionRecord) -> None:
    """Atomically make `alias` resolve to `record.collection`: insert the newest pointer row,
    then delete the older ones (a reader always finds at least one row)."""
    _ensure(client)
    now = time.time_ns()
    key = f"alias:{alias}:{now:020d}"
    row = _row(
        key, record.collection, record.spec, record.built_at_ns, record.rows, record.dim, now
    )
    client.insert(REGISTRY, [row])
    client.delete(REGISTRY, filter=f'key like "alias:{alias}:%" and swapped_at_ns < {now}')


def resolve(client: MilvusClient, alias: str) -> VersionRecord | None:
    """The collection `alias` points at now, or None when it points nowhere."""
    if not client.has_collection(REGISTRY):
        return None
    rows = client.query(
        REGISTRY, filter=f'key like "alias:{alias}:%"', output_fields=_FIELDS, **_STRONG
    )
    return _record(max(rows, key=lambda r: r["swapped_at_ns"])) if rows else None


def versions(client: MilvusClient, alias: str) -> list[VersionRecord]:
    """Recorded builds for `alias`, newest first."""
    if not client.has_collection(REGISTRY):
        return []
    rows = client.query(
        REGISTRY, filter=f'key like "version:{alias}:%"', output_fields=_FIELDS, **_STRONG
    )
    return sorted((_record(r) for r in rows), key=lambda r: r.built_at_ns, reverse=True)


def forget_version(client: MilvusClient, alias: str, collection: str) -> None:
    """Remove the build record of a dropped collection."""
    if client.has_collection(REGISTRY):
        client.delete(REGISTRY, filter=f'key == "version:{alias}:{collection}"')
