"""`mmrec data import` (ingest/): the data contract, the importer and the MovieLens adapter.

Each test writes its own small real-format files (CSV, PNG covers) into a temporary folder and
imports them into a temporary workspace.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from bench.import_bench import FORMATS, bench
from ingest.cli import app
from ingest.contract import CONTRACT, CONTRACT_DOC, RAW_SCHEMAS, DataContractError
from ingest.importer import WorkspaceHasDataError, import_data
from ingest.movielens import CLICK_RATING, load_movielens
from mmrec.errors import UserError
from mmrec.io import previous_folder, read_json, staging_folder, write_json
from mmrec.settings import REPO_ROOT, Settings
from mmrec.vocab import MATERIALS

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = ("2025-03-01", "2025-03-02", "2025-03-03")
GAP_DAY = "2015-03-01"  # ten years before: a log with a gap
N_ITEMS = 30


# ---------------------------------------------------------------------------------------------
# Fixture files


def _png(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_items(folder: Path, n: int = N_ITEMS, **columns) -> Path:
    """items.csv with every optional column; covers for items 1-5 (4 missing, 5 corrupt),
    two frames for items 1-2."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in (1, 2, 3):
        _png(folder / "img" / f"{i}.png", i)
    (folder / "img" / "5.png").write_bytes(b"\x89PNG not really")
    for k in (0, 1):
        _png(folder / "img" / f"f{k}.png", 10 + k)
    ids = np.arange(1, n + 1)
    items = pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"a fine thing number {i}" for i in ids],
            "material": [MATERIALS[i % 3] for i in ids],
            "category": [("books", "toys", "")[i % 3] for i in ids],
            "tags": ["fun|gift" if i % 3 else "music|books" for i in ids],
            "duration_s": [30.0 if i % 3 == 1 else None for i in ids],
            "image": [f"img/{i}.png" if i <= 5 else None for i in ids],
            "frames": ["img/f0.png|img/f1.png" if i <= 2 else None for i in ids],
            "publish_ts": ["2025-01-01T00:00:00Z" if i % 2 else None for i in ids],
        }
    )
    for name, values in columns.items():
        items[name] = values
    path = folder / "items.csv"
    items.to_csv(path, index=False)
    return path


def event_rows(days=DAYS, n_per_day: int = 100, seed: int = 0, gap: bool = True) -> pd.DataFrame:
    """Impressions, clicks and watches of 20 users over `days` (ISO text and unix seconds
    mixed), plus one impression on GAP_DAY."""
    rng = np.random.default_rng(seed)
    frames = []
    for day in days:
        start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
        seconds = start + np.sort(rng.integers(0, 86_000, n_per_day))
        frames.append(
            pd.DataFrame(
                {
                    "user_id": rng.integers(1, 21, n_per_day),
                    "item_id": rng.integers(1, N_ITEMS + 1, n_per_day),
                    "event_type": rng.choice(["impression", "click", "watch"], n_per_day),
                    "event_ts": [
                        str(s)
                        if k % 2
                        else datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S")
                        for k, s in enumerate(seconds)
                    ],
                    "source": rng.choice(["rec", "search"], n_per_day),
                    "position": rng.choice(["home", "inner", "detail"], n_per_day),
                    "session_id": rng.integers(1, 50, n_per_day),
                }
            )
        )
    events = pd.concat(frames, ignore_index=True)
    events["watch_seconds"] = np.where(events.event_type == "watch", 12.5, np.nan)
    if gap:
        first = pd.DataFrame(
            [{"user_id": 1, "item_id": 1, "event_type": "impression", "event_ts": GAP_DAY}]
        )
        events = pd.concat([first, events], ignore_index=True)
    return events.drop_duplicates(ignore_index=True)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "in"
    return {
        "events": write_csv(event_rows(), folder / "events.csv"),
        "items": write_items(folder),
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workspace=tmp_path / "ws")


def run(settings: Settings, files: dict[str, Path], **options):
    return import_data(settings, **files, now=NOW, **options)


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def event_files(settings: Settings) -> list[Path]:
    return sorted((settings.raw_dir / "events").glob("day=*/events.parquet"))


# ---------------------------------------------------------------------------------------------
# The layout


def test_import_writes_the_generators_layout(settings: Settings, files: dict[str, Path]) -> None:
    report = run(settings, files)
    raw = settings.raw_dir
    for name, schema in RAW_SCHEMAS.items():
        paths = event_files(settings) if name == "events" else [raw / name]
        for path in paths:
            written = pq.read_schema(path)
            assert [(f.name, f.type) for f in written] == [(f.name, f.type) for f in schema]
    events = pd.read_parquet(raw / "events")
    assert str(events.item_id.dtype) == "Int64"  # as pandas reads the generator's
    assert len(events) == report.events_written == len(event_rows())
    day = pd.read_parquet(event_files(settings)[-1])
    assert day.event_timestamp.is_monotonic_increasing
    assert (day.event_timestamp.dt.strftime("%Y-%m-%d") == DAYS[-1]).all()

    items = pd.read_parquet(raw / "items.parquet")
    assert items.item_id.tolist() == list(range(1, N_ITEMS + 1))
    assert items.category.tolist()[:3] == ["toys", "fun", "books"]  # "" -> the first tag
    assert items.material.tolist()[:3] == ["live", "shop", "video"]
    published = items.set_index("item_id").publish_ts
    assert published[1] == pd.Timestamp("2025-01-01", tz="UTC")  # given
    first_click = events[events.item_id == 2].event_timestamp.min()
    assert published[2] == first_click  # default: the item's first event
    labels = pd.read_parquet(raw / "item_labels.parquet").set_index("item_id")
    assert list(labels.category_tags[1]) == ["toys", "fun", "gift"]
    assert labels.quality_label.isna().all()
    media = pd.read_parquet(raw / "item_media.parquet").set_index("item_id")
    assert media.cover_png[1] == (files["items"].parent / "img" / "1.png").read_bytes()
    assert media.cover_png[[4, 5, 6]].isna().all()  # missing, corrupt, none given
    assert len(media.frame_pngs[1]) == 2 and len(media.frame_pngs[3]) == 0
    assert report.images_missing.count == report.images_unreadable.count == 1
    assert "img/4.png missing" in report.images_missing.examples[0]

    manifest = read_json(raw / "manifest.json")
    assert manifest["source"] == "import"
    assert manifest["days"] == [GAP_DAY, *DAYS]
    assert manifest["start"] == f"{GAP_DAY}T00:00:00+00:00"
    assert manifest["end"] == "2025-03-04T00:00:00+00:00"
    assert manifest["n_events"] == report.events_written
    assert manifest["n_items"] == N_ITEMS and manifest["n_skus"] == 0
    assert manifest["n_users"] == events.user_id.nunique()
    assert manifest["categories"] == ["books", "fun", "toys"]
    assert manifest["modalities"] == {"text": True, "image": True, "frames": True}
    assert manifest["has_skus"] is False
    assert manifest["materials"] == ["video", "live", "shop"]
    assert manifest["inputs"]["events"][0]["file"] == "events.csv"
    assert sum(manifest["events_by_type"].values()) == manifest["n_events"]
    assert read_json(raw / "import_report.json")["events_written"] == report.events_written
    assert pq.read_table(raw / "skus.parquet").num_rows == 0
    users = pd.read_parquet(raw / "users.parquet")
    assert (users.region == "unknown").all()
    assert users.set_index("user_id").registered_at[1] == pd.Timestamp(GAP_DAY, tz="UTC")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A generated tiny world (its own; read-only)."""
    from datagen.world import generate_world

    world = Settings(workspace=tmp_path_factory.mktemp("generated"))
    generate_world(world, "tiny", 1)
    return world


def test_contract_schemas_are_what_the_generator_writes(generated: Settings) -> None:
    for name, schema in RAW_SCHEMAS.items():
        path = event_files(generated)[0] if name == "events" else generated.raw_dir / name
        written = pq.read_schema(path)
        assert [(f.name, f.type) for f in written] == [(f.name, f.type) for f in schema]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_generated_world_round_trips_through_the_contract(
    generated: Settings, tmp_path: Path, fmt: str
) -> None:
    """The import benchmark at test size: a generated world exported as contract files
    imports to the same events (partitioned by UTC day) and catalog."""
    result = bench(generated, fmt, tmp_path)
    manifest = read_json(generated.raw_dir / "manifest.json")
    assert result["events_written"] == manifest["n_events"]
    assert not any(result["dropped"].values())
    imported = Settings(workspace=tmp_path / "workspace")

    def table(settings: Settings, name: str) -> pd.DataFrame:
        frame = pd.read_parquet(settings.raw_dir / name).drop(columns="day", errors="ignore")
        keys = [c for c in frame.columns if frame[c].map(np.ndim).max() == 0]
        return frame.sort_values(keys, ignore_index=True)

    for name in ("events", "items.parquet", "users.parquet", "skus.parquet"):
        pd.testing.assert_frame_equal(table(imported, name), table(generated, name))
    media = pd.read_parquet(imported.raw_dir / "item_media.parquet")
    if fmt == "parquet":  # the generator's planted unreadable covers are left out
        assert media.cover_png.isna().sum() == manifest["defects"]["unreadable_cover"]


def test_a_file_with_only_the_required_columns_imports(settings: Settings, tmp_path) -> None:
    events = write_csv(
        event_rows(gap=False)[["user_id", "item_id", "event_type", "event_ts"]],
        tmp_path / "in" / "events.csv",
    )
    items = write_csv(
        pd.DataFrame({"item_id": range(1, N_ITEMS + 1), "title": "t"}), tmp_path / "in" / "i.csv"
    )
    report = run(settings, {"events": events, "items": items})
    assert report.days == len(DAYS) and not any(c.count for c in report.dropped.values())
    day = pd.read_parquet(event_files(settings)[0])
    assert set(day.source) == {"rec"} and set(day.position) == {"home"}
    assert (day.session_id == -1).all() and set(day.material) == {"video"}
    manifest = read_json(settings.raw_dir / "manifest.json")
    assert manifest["modalities"] == {"text": True, "image": False, "frames": False}
    assert manifest["categories"] == ["unknown"]


def test_parquet_folders_with_lists_and_bytes_import(settings: Settings, tmp_path) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    events = event_rows(gap=False)
    events.iloc[:150].to_parquet(folder / "a.parquet")
    events.iloc[150:].to_parquet(folder / "b.parquet")
    _png(tmp_path / "cover.png", 0)
    cover = (tmp_path / "cover.png").read_bytes()
    items = pd.DataFrame(
        {
            "item_id": range(1, N_ITEMS + 1),
            "title": "t",
            "tags": [["x", "y"]] * N_ITEMS,
            "sku_ids": [[7, 8]] * N_ITEMS,
            "image": [cover] * N_ITEMS,
        }
    )
    items.to_parquet(tmp_path / "items.parquet")
    skus = write_csv(
        pd.DataFrame({"sku_id": [7, 8], "category": ["toys", "pets"], "price": [1.5, None]}),
        tmp_path / "skus.csv",
    )
    report = run(settings, {"events": folder, "items": tmp_path / "items.parquet", "skus": skus})
    assert report.rows_read == {
        "pq/a.parquet": 150,
        "pq/b.parquet": 150,
        "items.parquet": N_ITEMS,
        "skus.csv": 2,
    }
    written = pd.read_parquet(settings.raw_dir / "items.parquet")
    assert list(written.sku_ids[0]) == [7, 8] and written.category[0] == "x"
    media = pd.read_parquet(settings.raw_dir / "item_media.parquet")
    assert media.cover_png[0] == cover
    manifest = read_json(settings.raw_dir / "manifest.json")
    assert manifest["has_skus"] is True and manifest["n_skus"] == 2
    assert manifest["categories"] == ["x", "pets", "toys"]


# ---------------------------------------------------------------------------------------------
# Structural errors: nothing is written


def _bad_events(tmp_path: Path, change) -> dict[str, Path]:
    events = event_rows(gap=False)
    events = change(events)
    return {
        "events": write_csv(events, tmp_path / "in" / "events.csv"),
        "items": write_items(tmp_path / "in"),
    }


def _set(column: str, row: int, value):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return change


@pytest.mark.parametrize(
    ("change", "column", "words"),
    [
        (lambda f: f.drop(columns="event_ts"), "event_ts", "required column missing"),
        (lambda f: f.drop(columns="item_id"), "item_id or sku_id", "required column missing"),
        (_set("user_id", 6, "u\x077"), "user_id", "row 7: 'u\\x077'"),
        (_set("user_id", 6, "u" * 129), "user_id", "128 characters"),
        (_set("event_type", 3, "view"), "event_type", "row 4: 'view'"),
        (_set("source", 3, "ads"), "source", "use one of search, rec"),
        (_set("position", 3, "footer"), "position", "footer"),
        (_set("event_ts", 9, "yesterday"), "event_ts", "row 10: 'yesterday'"),
        (_set("event_ts", 9, "1740787200000"), "event_ts", "not milliseconds"),
        (_set("item_id", 2, None), "item_id", "content events"),
        (_set("watch_seconds", 2, "long"), "watch_seconds", "not a number"),
    ],
)
def test_bad_events_name_the_column_and_write_nothing(
    settings: Settings, tmp_path: Path, change, column: str, words: str
) -> None:
    files = _bad_events(tmp_path, change)
    with pytest.raises(DataContractError) as err:
        run(settings, files)
    message = str(err.value)
    assert f"column {column!r}" in message and words in message and "Fix:" in message
    assert "events.csv" in message
    assert not settings.data_dir.exists() or not any(settings.data_dir.iterdir())


@pytest.mark.parametrize(
    ("columns", "column", "words"),
    [
        ({"material": ["video"] * (N_ITEMS - 1) + ["podcast"]}, "material", "podcast"),
        ({"item_id": [1, *range(1, N_ITEMS)]}, "item_id", "duplicate ids"),
        ({"sku_ids": ["1|x\ty"] * N_ITEMS}, "sku_ids", "control characters"),
        ({"publish_ts": ["soon"] * N_ITEMS}, "publish_ts", "cannot be parsed"),
    ],
)
def test_bad_items_name_the_column(
    settings: Settings, tmp_path: Path, columns: dict, column: str, words: str
) -> None:
    files = {
        "events": write_csv(event_rows(), tmp_path / "in" / "events.csv"),
        "items": write_items(tmp_path / "in", **columns),
    }
    with pytest.raises(DataContractError, match=f"items.csv, column '{column}'.*{words}"):
        run(settings, files)


def test_items_without_title_and_empty_files_are_refused(
    settings: Settings, tmp_path: Path, files: dict[str, Path]
) -> None:
    no_title = write_csv(pd.DataFrame({"item_id": [1, 2]}), tmp_path / "no_title.csv")
    with pytest.raises(DataContractError, match="column 'title': required column missing"):
        run(settings, {**files, "items": no_title})
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataContractError, match=r"empty\.csv: the file is empty"):
        run(settings, {**files, "events": empty})
    header_only = tmp_path / "header.csv"
    header_only.write_text("user_id,item_id,event_type,event_ts\n")
    with pytest.raises(DataContractError, match=r"header\.csv has no data rows"):
        run(settings, {**files, "events": header_only})
    assert not settings.raw_dir.exists()


# ---------------------------------------------------------------------------------------------
# Dropped rows


def test_unusable_rows_are_dropped_counted_and_strict_refuses_them(
    settings: Settings, tmp_path: Path
) -> None:
    events = event_rows(gap=False)
    events["event_id"] = [f"e{k}" for k in range(len(events))]
    extra = pd.DataFrame(
        [
            {**events.iloc[0].to_dict(), "item_id": 999, "event_id": "x1"},  # unknown item
            {**events.iloc[0].to_dict(), "event_ts": "2030-01-01", "event_id": "x2"},  # future
            {**events.iloc[1].to_dict(), "event_id": "x3", "session_id": 99},  # same id below
            {**events.iloc[1].to_dict(), "event_id": "x3", "session_id": 98},
            {**events.iloc[2].to_dict(), "event_id": None},  # exact copy of row 3
            {**events.iloc[2].to_dict(), "event_id": None},
            {"user_id": 3, "sku_id": 42, "event_type": "sku_click", "event_ts": DAYS[0]},
        ]
    )
    events = pd.concat([events, extra], ignore_index=True)
    events.loc[2, "event_id"] = None
    skus = write_csv(pd.DataFrame({"sku_id": [1], "category": ["toys"]}), tmp_path / "skus.csv")
    files = {
        "events": write_csv(events, tmp_path / "in" / "events.csv"),
        "items": write_items(tmp_path / "in"),
        "skus": skus,
    }
    with pytest.raises(DataContractError, match=r"strict import.*unknown_item 1"):
        run(settings, files, strict=True)
    assert not settings.raw_dir.exists()

    report = run(settings, files)
    counts = {reason: c.count for reason, c in report.dropped.items()}
    assert counts == {"future": 1, "unknown_item": 1, "unknown_sku": 1, "duplicate": 3}
    n = len(event_rows(gap=False))
    assert report.dropped["unknown_item"].examples == [
        f"events.csv row {n + 1}: item_id 999 is not in the items file"
    ]
    duplicates = report.dropped["duplicate"].examples
    assert f"events.csv row {n + 4}: event_id x3 seen before" in duplicates
    assert f"events.csv row {n + 5}: same as events.csv row 3" in duplicates
    assert report.events_written == n + 1  # + one of the x3 rows
    assert "sku_id 42" in report.dropped["unknown_sku"].examples[0]
    assert report.ignored_columns == {}


# ---------------------------------------------------------------------------------------------
# Idempotent, appendable, atomic


def test_the_same_files_again_change_nothing(settings: Settings, files: dict[str, Path]) -> None:
    run(settings, files)
    before = hashes(settings.raw_dir)
    report = run(settings, files)
    assert report.unchanged and hashes(settings.raw_dir) == before
    assert not staging_folder(settings.raw_dir).exists()


def test_the_same_events_under_another_name_keep_every_file(
    settings: Settings, files: dict[str, Path], tmp_path: Path
) -> None:
    run(settings, files)
    before = hashes(settings.raw_dir)
    copy = write_csv(pd.read_csv(files["events"]), tmp_path / "copy" / "events_again.csv")
    report = run(settings, {**files, "events": copy})
    assert not report.unchanged and report.events_added == 0
    assert report.already_present == report.events_written == len(event_rows())
    after = hashes(settings.raw_dir)
    assert {k: v for k, v in after.items() if not k.endswith(".json")} == {
        k: v for k, v in before.items() if not k.endswith(".json")
    }


def test_a_rebuild_writes_the_same_bytes(files: dict[str, Path], tmp_path: Path) -> None:
    """Two workspaces, one import each: every data file is byte-identical."""
    a, b = Settings(workspace=tmp_path / "a"), Settings(workspace=tmp_path / "b")
    run(a, files)
    run(b, files)
    first, second = hashes(a.raw_dir), hashes(b.raw_dir)
    first.pop("import_report.json"), second.pop("import_report.json")
    assert first == second


def test_newer_events_append_a_day_and_keep_the_old(
    settings: Settings, files: dict[str, Path], tmp_path: Path
) -> None:
    run(settings, files)
    old = hashes(settings.raw_dir / "events")
    later = event_rows(days=(DAYS[-1], "2025-03-04"), seed=5, gap=False)
    overlap = event_rows(gap=False).iloc[-20:]  # already imported: not counted as drops
    newer = write_csv(pd.concat([overlap, later]), tmp_path / "in2" / "events.csv")
    report = run(settings, {"events": newer, "items": files["items"]})
    assert report.already_present == 20 and not report.dropped["duplicate"].count
    assert report.events_added == len(later)
    manifest = read_json(settings.raw_dir / "manifest.json")
    assert manifest["days"] == [GAP_DAY, *DAYS, "2025-03-04"]
    assert manifest["n_events"] == len(event_rows()) + len(later)
    assert manifest["inputs"]["events"][0]["file"] == "events.csv"
    new = hashes(settings.raw_dir / "events")
    unchanged = [f"day={d}/events.parquet" for d in (GAP_DAY, *DAYS[:-1])]
    assert {k: new[k] for k in unchanged} == {k: old[k] for k in unchanged}
    assert new[f"day={DAYS[-1]}/events.parquet"] != old[f"day={DAYS[-1]}/events.parquet"]
    all_events = pd.read_parquet(settings.raw_dir / "events")
    assert len(all_events) == manifest["n_events"]
    assert not all_events.duplicated().any()


def test_a_smaller_catalog_drops_the_old_events_of_removed_items(
    settings: Settings, files: dict[str, Path], tmp_path: Path
) -> None:
    run(settings, files)
    old = pd.read_parquet(settings.raw_dir / "events")
    items = write_items(tmp_path / "in2", n=N_ITEMS - 5)
    later = event_rows(days=("2025-03-04",), gap=False)
    later = write_csv(later[later.item_id <= N_ITEMS - 5], tmp_path / "in2" / "events.csv")
    report = run(settings, {"events": later, "items": items})
    removed = report.dropped["unknown_item"]
    assert removed.count == (old.item_id > N_ITEMS - 5).sum()
    assert removed.examples[0].startswith(f"events/day={DAYS[0]}/events.parquet row ")
    assert report.events_written == len(old) - removed.count + report.events_added
    with pytest.raises(DataContractError, match="unknown_item"):
        run(settings, {"events": later, "items": items}, strict=True)


def test_a_failed_import_leaves_the_workspace_unchanged(
    settings: Settings, files: dict[str, Path], tmp_path: Path
) -> None:
    run(settings, files)
    before = hashes(settings.data_dir)
    later = write_csv(event_rows(days=("2025-03-05",), gap=False), tmp_path / "b" / "ev.csv")
    bad_skus = write_csv(
        pd.DataFrame({"sku_id": ["s\x071"], "category": ["x"]}), tmp_path / "s.csv"
    )
    with pytest.raises(DataContractError, match="column 'sku_id'"):
        run(settings, {"events": later, "items": files["items"], "skus": bad_skus})
    assert hashes(settings.data_dir) == before


def test_an_interrupted_swap_is_undone(settings: Settings, files: dict[str, Path]) -> None:
    """Stopped between the two renames of a swap without the atomic exchange, with a
    half-built next version beside it: the next import restores the old raw folder first."""
    run(settings, files)
    before = hashes(settings.raw_dir)
    settings.raw_dir.rename(previous_folder(settings.raw_dir))
    (staging_folder(settings.raw_dir) / "events").mkdir(parents=True)
    report = run(settings, files)
    assert report.unchanged and hashes(settings.raw_dir) == before
    assert not previous_folder(settings.raw_dir).exists()
    assert not staging_folder(settings.raw_dir).exists()


def test_a_generated_world_is_replaced_only_on_request(
    settings: Settings, files: dict[str, Path]
) -> None:
    write_json({"scale": "tiny", "seed": 1}, settings.raw_dir / "manifest.json")
    with pytest.raises(WorkspaceHasDataError, match="--replace"):
        run(settings, files)
    run(settings, files, replace=True)
    assert read_json(settings.raw_dir / "manifest.json")["source"] == "import"


def test_a_ten_year_log_writes_only_the_days_with_events(
    settings: Settings, files: dict[str, Path]
) -> None:
    report = run(settings, files)
    assert report.days == 4 and (report.first_day, report.last_day) == (GAP_DAY, DAYS[-1])
    assert [p.parent.name for p in event_files(settings)] == [f"day={d}" for d in (GAP_DAY, *DAYS)]


# ---------------------------------------------------------------------------------------------
# MovieLens, CLI, docs


def test_movielens_imports_every_rating_and_its_clicks(settings: Settings) -> None:
    ratings = load_movielens().ratings
    clicks = int((ratings.rating >= CLICK_RATING).sum())
    report = import_data(settings, adapter="movielens-100k", now=NOW)
    assert report.events_written == 100_000 + clicks
    assert not any(c.count for c in report.dropped.values())
    manifest = read_json(settings.raw_dir / "manifest.json")
    assert manifest["events_by_type"] == {"click": clicks, "impression": 100_000}
    assert manifest["n_users"] == 943 and manifest["n_items"] == 1682
    assert manifest["inputs"]["adapter"] == "movielens-100k"
    items = pd.read_parquet(settings.raw_dir / "items.parquet").set_index("item_id")
    assert (
        items.title[1] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
        and items.category[1] == "Animation"
    )
    labels = pd.read_parquet(settings.raw_dir / "item_labels.parquet").set_index("item_id")
    assert list(labels.category_tags[1]) == ["Animation", "Children's", "Comedy"]
    assert import_data(settings, adapter="movielens-100k", now=NOW).unchanged


def test_cli_imports_and_rejects_bad_option_sets(
    settings: Settings, files: dict[str, Path]
) -> None:
    root = typer.Typer()  # mounted as the root `mmrec` mounts it
    root.add_typer(app, name="data")
    runner = CliRunner()
    ws = ["--workspace", str(settings.workspace)]
    command = ["data", "import"]
    both = runner.invoke(root, [*command, "--adapter", "movielens-100k", "--events", "e", *ws])
    assert both.exit_code == 2 and "--adapter" in both.output
    neither = runner.invoke(root, [*command, *ws])
    assert neither.exit_code == 2 and "--events" in neither.output
    args = [*command, "--events", str(files["events"]), "--items", str(files["items"]), *ws]
    result = runner.invoke(root, args)
    assert result.exit_code == 0, result.output
    assert "events written" in result.output
    assert json.loads((settings.raw_dir / "import_report.json").read_text())["days"] == 4


def test_the_contract_doc_names_every_column() -> None:
    doc = (REPO_ROOT / CONTRACT_DOC).read_text()
    for table, schema in CONTRACT.items():
        assert f"`{table}`" in doc
        for name in schema.names:
            assert f"`{name}`" in doc, f"{CONTRACT_DOC} does not document {table}.{name}"


def test_the_movielens_adapter_reads_the_bundled_files() -> None:
    from ingest.movielens import item_texts

    ml = load_movielens()
    assert len(ml.ratings) == 100_000 and ml.ratings.user_id.nunique() == 943
    assert len(ml.items) == ml.items.item_id.nunique() == 1682
    assert set(ml.ratings.rating) == {1, 2, 3, 4, 5}
    assert len(ml.genres) == 19 and "unknown" in ml.genres
    assert item_texts(ml.items)[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."


def test_missing_movielens_files_say_where_the_data_comes_from(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="recbole"):
        load_movielens(tmp_path)
