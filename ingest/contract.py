"""The raw-data contract of `mmrec data import`, as pyarrow schemas (docs/data-contract.md).

Input tables (`CONTRACT`): each field is a column with the type it has once parsed; its
metadata says whether the column is required, its default and its vocabulary, and a
non-nullable field rejects empty values. An id column (`entity` in its metadata: user, item
or sku) is read as text: ids may be integers or strings, and the import decides per entity
which, and maps string ids to integer keys (`ingest/ids.py`, `mmrec/id_map.py`). Inputs come as CSV or Parquet, so the parser
(`ingest/readers.py`) also accepts text for numbers and times, and `|`-joined text for lists.

Output tables (`RAW_SCHEMAS`): exactly what the world generator (`datagen/world.py`) writes
under `Settings.raw_dir` and every later stage reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from mmrec.errors import UserError
from mmrec.event_log import RAW_EVENTS
from mmrec.id_map import ID_CHARS
from mmrec.vocab import EVENT_TYPES, MATERIALS, POSITIONS, PRODUCT_BEHAVIOURS, SOURCES

CONTRACT_DOC = "docs/data-contract.md"
TIMESTAMP = pa.timestamp("us", tz="UTC")
MAX_EXAMPLES = 5
LIST_SEPARATOR = "|"
# Event types about a SKU (the product domain); every other type is about a content item.
SKU_EVENT_TYPES = PRODUCT_BEHAVIOURS
# Limits on what an input may hold (imported data is hostile until checked; issue #20).
TITLE_CHARS = 1_000  # a title; MiniLM reads 256 tokens of it anyway
LABEL_CHARS = 200  # a category, a tag, a region, an event id
LIST_ITEMS = 100  # tags, SKU ids or frames of one item
MEDIA_BYTES = 20 * 2**20  # one cover or frame file (a 4K PNG is ~10 MB)
# Pixels of one cover or frame, checked from the header before anything is decoded (a
# decompression bomb is a small file that decodes to gigabytes); 4096 x 4096.
MEDIA_PIXELS = 4096 * 4096


class DataContractError(UserError):
    """An input file breaks the contract; the message names the file, the column, the first
    offending rows and the fix."""


def _column(
    name: str,
    type_: pa.DataType,
    *,
    required: bool = False,
    nullable: bool = True,
    default: str | None = None,
    vocabulary: Sequence[str] = (),
    max_chars: int | None = None,
    max_items: int | None = None,
    entity: str | None = None,
) -> pa.Field:
    """A contract column; `nullable=False` means every row needs a value; `max_chars` bounds
    a text (each element of a list of texts), `max_items` a list; `entity` makes it an id
    column (text, or a list of texts, of at most ID_CHARS each)."""
    metadata = {"required": "true" if required else "false"}
    if entity is not None:
        metadata["entity"] = entity
        max_chars = ID_CHARS
    if default is not None:
        metadata["default"] = default
    if vocabulary:
        metadata["vocabulary"] = LIST_SEPARATOR.join(vocabulary)
    if max_chars is not None:
        metadata["max_chars"] = str(max_chars)
    if max_items is not None:
        metadata["max_items"] = str(max_items)
    return pa.field(name, type_, nullable=nullable, metadata=metadata)


EVENTS = pa.schema(
    [
        _column("user_id", pa.string(), required=True, nullable=False, entity="user"),
        # item_id or sku_id: at least one of the two columns (ONE_OF); content events need an
        # item_id, sku_* events a sku_id
        _column("item_id", pa.string(), entity="item"),
        _column("sku_id", pa.string(), entity="sku"),
        _column("event_type", pa.string(), required=True, nullable=False, vocabulary=EVENT_TYPES),
        _column("event_ts", TIMESTAMP, required=True, nullable=False),
        _column("source", pa.string(), default="rec", vocabulary=SOURCES),
        _column("position", pa.string(), default="home", vocabulary=POSITIONS),
        _column("session_id", pa.int64(), default="-1"),
        _column("watch_seconds", pa.float64()),
        # deduplication key when present (POST /events takes 128 characters too)
        _column("event_id", pa.string(), max_chars=128),
    ]
)
ITEMS = pa.schema(
    [
        _column("item_id", pa.string(), required=True, nullable=False, entity="item"),
        _column("title", pa.string(), required=True, default="", max_chars=TITLE_CHARS),
        _column("material", pa.string(), default="video", vocabulary=MATERIALS),
        _column("publish_ts", TIMESTAMP, default="the item's first event"),
        _column(
            "category",
            pa.string(),
            default="the first tag, else 'unknown'",
            max_chars=LABEL_CHARS,
        ),
        _column(
            "tags", pa.list_(pa.string()), default="[]", max_chars=LABEL_CHARS, max_items=LIST_ITEMS
        ),
        _column("duration_s", pa.float64(), default="0"),
        _column("sku_ids", pa.list_(pa.string()), default="[]", max_items=LIST_ITEMS, entity="sku"),
        # a path inside the items file's folder (relative to it), or bytes
        _column("image", pa.binary()),
        _column("frames", pa.list_(pa.binary()), default="[]", max_items=LIST_ITEMS),
    ]
)
SKUS = pa.schema(
    [
        _column("sku_id", pa.string(), required=True, nullable=False, entity="sku"),
        _column("category", pa.string(), required=True, nullable=False, max_chars=LABEL_CHARS),
        _column("price", pa.float64(), default="0"),
    ]
)
USERS = pa.schema(
    [
        _column("user_id", pa.string(), required=True, nullable=False, entity="user"),
        _column("region", pa.string(), default="unknown", max_chars=LABEL_CHARS),
        _column("registered_at", TIMESTAMP, default="the user's first event"),
    ]
)
CONTRACT: dict[str, pa.Schema] = {"events": EVENTS, "items": ITEMS, "skus": SKUS, "users": USERS}
REQUIRED_TABLES = ("events", "items")
# Per table: columns of which at least one must be present.
ONE_OF: dict[str, tuple[str, ...]] = {"events": ("item_id", "sku_id")}


def is_required(field: pa.Field) -> bool:
    return field.metadata[b"required"] == b"true"


def vocabulary(field: pa.Field) -> tuple[str, ...]:
    """The allowed values of a column; () when any value goes."""
    value = (field.metadata or {}).get(b"vocabulary")
    return tuple(value.decode().split(LIST_SEPARATOR)) if value else ()


def limit(field: pa.Field, key: str) -> int | None:
    """The column's `max_chars` or `max_items`; None when unbounded."""
    value = (field.metadata or {}).get(key.encode())
    return int(value) if value is not None else None


def entity(field: pa.Field) -> str | None:
    """The entity whose ids the column holds (user, item, sku); None for other columns."""
    value = (field.metadata or {}).get(b"entity")
    return value.decode() if value is not None else None


def default(field: pa.Field) -> str | None:
    value = (field.metadata or {}).get(b"default")
    return value.decode() if value is not None else None


# ---------------------------------------------------------------------------------------------
# What the import writes: the generator's raw layout

RAW_USERS = pa.schema(
    [("user_id", pa.int64()), ("region", pa.string()), ("registered_at", TIMESTAMP)]
)
RAW_SKUS = pa.schema([("sku_id", pa.int64()), ("category", pa.string()), ("price", pa.float64())])
RAW_ITEMS = pa.schema(
    [
        ("item_id", pa.int64()),
        ("material", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("sku_ids", pa.list_(pa.int64())),
        ("publish_ts", TIMESTAMP),
        ("duration_s", pa.float64()),
    ]
)
RAW_ITEM_LABELS = pa.schema(
    [
        ("item_id", pa.int64()),
        ("category_tags", pa.list_(pa.string())),
        ("quality_label", pa.string()),
    ]
)
RAW_ITEM_MEDIA = pa.schema(
    [("item_id", pa.int64()), ("cover_png", pa.binary()), ("frame_pngs", pa.list_(pa.binary()))]
)
# File name under raw/ -> schema; "events" is every raw/events/day=YYYY-MM-DD/events.parquet.
RAW_SCHEMAS: dict[str, pa.Schema] = {
    "users.parquet": RAW_USERS,
    "skus.parquet": RAW_SKUS,
    "items.parquet": RAW_ITEMS,
    "item_labels.parquet": RAW_ITEM_LABELS,
    "item_media.parquet": RAW_ITEM_MEDIA,
    "events": RAW_EVENTS,  # in the core: the served-event log writes the same rows
}


def contract_error(
    where: str, column: str | None, problem: str, examples: Sequence[str], total: int, fix: str
) -> DataContractError:
    """'<where>, column <c>: <problem> (<total> rows; first: <examples>). Fix: <fix>.'"""
    column_part = f", column {column!r}" if column else ""
    shown = "; ".join(examples[:MAX_EXAMPLES])
    count = f"{total} row{'s' if total != 1 else ''}"
    rows = f" ({count}; first: {shown})" if examples else ""
    return DataContractError(f"{where}{column_part}: {problem}{rows}. Fix: {fix}.")
