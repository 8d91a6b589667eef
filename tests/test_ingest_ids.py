"""String ids (issue #28): user, item and SKU ids may be strings or integers in every contract
file. Integer ids stay the keys; string ids get small dense keys from the workspace's id map
(mmrec/id_map.py), which keeps every key across re-imports, appends, --replace and the
service's new shoppers (two processes assigning at once included); ids that are neither are
refused naming the file, column and rows."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.contract import DataContractError
from mmrec.id_map import IdMap, UnknownIdError, WorkspaceIds, id_map_path
from mmrec.io import read_json
from mmrec.settings import Settings
from tests.test_ingest import DAYS, N_ITEMS, event_rows, run, write_csv, write_items


def user(u: int) -> str:
    return hashlib.sha1(f"shopper-{u}".encode()).hexdigest()


def item(i: int) -> str:
    return f"B07X-{i:02d}"


def sku(s: int) -> str:
    return f"SKU-{s}"


def string_files(folder: Path, *, days=DAYS, seed: int = 0, users=None) -> dict[str, Path]:
    """The test_ingest files with sha1 user ids, SKU-like item ids, string SKU ids (a skus
    file, items' sku_ids lists and sku_click events)."""
    events = event_rows(days=days, seed=seed, gap=False)
    events["user_id"] = events.user_id.map(users or user)
    events["item_id"] = events.item_id.map(item)
    skus = pd.DataFrame(
        [{"user_id": user(1), "sku_id": sku(2), "event_type": "sku_click", "event_ts": days[0]}]
    )
    events = pd.concat([events, skus], ignore_index=True)
    write_items(folder, sku_ids=[f"{sku(i % 3)}|{sku((i + 1) % 3)}" for i in range(N_ITEMS)])
    catalog = pd.read_csv(folder / "items.csv")
    catalog["item_id"] = catalog.item_id.map(item)
    return {
        "events": write_csv(events, folder / "events.csv"),
        "items": write_csv(catalog, folder / "items.csv"),
        "skus": write_csv(
            pd.DataFrame({"sku_id": [sku(s) for s in range(3)], "category": "toys"}),
            folder / "skus.csv",
        ),
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(workspace=tmp_path / "ws")


def the_map(settings: Settings, entity: str) -> dict[str, int]:
    table = IdMap(id_map_path(settings)).table(entity)
    return dict(zip(table["id"].to_pylist(), table["key"].to_pylist(), strict=True))


def test_string_ids_get_dense_keys_and_the_raw_layout_holds_keys(
    settings: Settings, tmp_path: Path
) -> None:
    files = string_files(tmp_path / "in")
    report = run(settings, files)
    manifest = read_json(settings.raw_dir / "manifest.json")
    assert manifest["id_types"] == {"user": "string", "item": "string", "sku": "string"}
    users, items, skus = (the_map(settings, e) for e in ("user", "item", "sku"))
    assert sorted(items.values()) == list(range(N_ITEMS))  # dense: 0 .. n-1
    assert sorted(skus) == [sku(s) for s in range(3)] and sorted(skus.values()) == [0, 1, 2]
    assert report.ids["user"] == {"kind": "string", "new_keys": len(users)}
    raw_items = pd.read_parquet(settings.raw_dir / "items.parquet")
    assert raw_items.item_id.tolist() == sorted(items.values())
    catalog = pd.read_csv(files["items"]).set_index("item_id")
    third = raw_items.set_index("item_id").loc[items[item(3)]]
    assert third.title == catalog.title[item(3)]
    assert list(third.sku_ids) == [skus[sku(2)], skus[sku(0)]]  # the list's order kept
    events = pd.read_parquet(settings.raw_dir / "events")
    given = pd.read_csv(files["events"])
    assert sorted(events.user_id.unique()) == sorted(users[u] for u in given.user_id.unique())
    clicked = given[given.event_type == "sku_click"].iloc[0]
    sku_event = events[events.event_type == "sku_click"].iloc[0]
    assert (sku_event.user_id, sku_event.sku_id) == (users[clicked.user_id], skus[sku(2)])


def test_keys_survive_reimport_append_and_replace(settings: Settings, tmp_path: Path) -> None:
    files = string_files(tmp_path / "in")
    run(settings, files)
    before = {e: the_map(settings, e) for e in ("user", "item", "sku")}
    assert run(settings, files).unchanged
    # newer events with users never seen before (u + 100): appended, old keys kept
    later = string_files(tmp_path / "in2", days=("2025-03-04",), seed=3)
    newcomers = string_files(
        tmp_path / "in3", days=("2025-03-05",), seed=4, users=lambda u: user(u + 100)
    )
    report = run(settings, {**files, "events": later["events"]})
    assert report.events_added and report.ids["user"]["new_keys"] == 0
    report = run(settings, {**files, "events": newcomers["events"]})
    users = the_map(settings, "user")
    assert report.ids["user"]["new_keys"] == len(users) - len(before["user"])
    assert {u: users[u] for u in before["user"]} == before["user"]
    assert sorted(users.values()) == list(range(len(users)))  # still dense
    # --replace starts the raw data over; the map keeps every key
    run(settings, {**files, "events": newcomers["events"]}, replace=True)
    assert the_map(settings, "user") == users
    assert the_map(settings, "item") == before["item"]
    events = pd.read_parquet(settings.raw_dir / "events")
    assert set(events.user_id) <= {users[user(u + 100)] for u in range(1, 21)} | {users[user(1)]}


def test_a_new_shopper_keyed_by_the_service_keeps_the_key_at_the_next_import(
    settings: Settings, tmp_path: Path
) -> None:
    files = string_files(tmp_path / "in")
    run(settings, files)
    ids = WorkspaceIds.load(settings)
    newcomer = user(999)
    assert ids.user.key(newcomer, "user_id") is None  # unknown: not assigned by a read
    key = ids.user.key(newcomer, "user_id", assign=True)
    assert key == len(the_map(settings, "user")) - 1  # the next free key
    assert WorkspaceIds.load(settings).user.key(newcomer, "user_id") == key
    later = pd.read_csv(files["events"]).head(5).assign(user_id=newcomer, event_ts="2025-03-04")
    run(settings, {**files, "events": write_csv(later, tmp_path / "later.csv")})
    events = pd.read_parquet(settings.raw_dir / "events")
    assert (events[events.event_timestamp >= "2025-03-04"].user_id == key).all()


def _assign(path: str, prefix: str, start, keys) -> None:
    """Worker: give 200 ids keys one by one, half shared with the other worker."""
    from mmrec.id_map import EntityIds, IdMap

    ids = EntityIds("user", "string", IdMap(Path(path)))
    start.wait()
    for k in range(200):
        name = f"shared-{k}" if k % 2 else f"{prefix}-{k}"
        keys[name] = ids.key(name, "user_id", assign=True)


def test_two_processes_assigning_new_users_at_once_get_distinct_stable_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / "id_map.sqlite3"
    IdMap(path).add("user", ["existing"])
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(2)
        seen = [manager.dict(), manager.dict()]
        workers = [
            context.Process(target=_assign, args=(str(path), prefix, start, keys))
            for prefix, keys in zip(("a", "b"), seen, strict=True)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
            assert worker.exitcode == 0
        answers = [dict(keys) for keys in seen]
    table = IdMap(path).table("user")
    final = dict(zip(table["id"].to_pylist(), table["key"].to_pylist(), strict=True))
    assert len(final) == 1 + 100 + 100 + 100  # existing, a-*, b-*, shared-*
    assert sorted(final.values()) == list(range(len(final)))  # one key each, none twice
    for answer in answers:  # each process was told the key the map keeps
        assert answer == {name: final[name] for name in answer}
    assert answers[0].keys() & answers[1].keys() == {f"shared-{k}" for k in range(1, 200, 2)}


def test_string_ids_into_an_integer_workspace_are_refused(
    settings: Settings, tmp_path: Path
) -> None:
    events = event_rows(gap=False)
    items = write_items(tmp_path / "in")
    run(settings, {"events": write_csv(events, tmp_path / "in" / "events.csv"), "items": items})
    assert read_json(settings.raw_dir / "manifest.json")["id_types"]["user"] == "int"
    before = sorted(p.name for p in settings.data_dir.iterdir())
    events["user_id"] = events.user_id.astype(object)
    events.loc[4, "user_id"] = "ef5f11f77ba020cd36e1105a00ab868bbdbf7fe7"
    strings = write_csv(events, tmp_path / "in2" / "events.csv")
    with pytest.raises(DataContractError) as err:
        run(settings, {"events": strings, "items": items})
    message = str(err.value)
    assert "events.csv, column 'user_id'" in message and "row 5: 'ef5f11f7" in message
    assert "integers" in message and "--replace" in message and "new workspace" in message
    assert sorted(p.name for p in settings.data_dir.iterdir()) == before  # no map made
    run(settings, {"events": strings, "items": items}, replace=True)  # starting over works
    assert read_json(settings.raw_dir / "manifest.json")["id_types"]["user"] == "string"


def test_digits_in_a_string_workspace_are_strings(settings: Settings, tmp_path: Path) -> None:
    files = string_files(tmp_path / "in")
    run(settings, files)
    events = pd.read_csv(files["events"], dtype=str).head(3)
    events["user_id"] = ["00123", "123", "123"]
    run(settings, {**files, "events": write_csv(events, tmp_path / "digits.csv")})
    users = the_map(settings, "user")
    assert users["00123"] != users["123"]


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (pa.array([1.0, 2.0] * 50), "has type DOUBLE, which cannot hold ids"),
        (pa.array([True, False] * 50), "has type BOOLEAN, which cannot hold ids"),
        (pa.array(["u1", "  "] * 50), "blank ids"),
        (pa.array(["u1", "u\x00x"] * 50), "control characters"),
        (pa.array(["u1", "u" * 129] * 50), "128 characters"),
    ],
    ids=["float", "bool", "blank", "control", "too-long"],
)
def test_ids_that_are_neither_are_refused_naming_file_column_and_fix(
    settings: Settings, tmp_path: Path, values: pa.Array, words: str
) -> None:
    events = pa.Table.from_pandas(event_rows(days=DAYS[:1], gap=False).head(100))
    events = events.set_column(events.schema.get_field_index("user_id"), "user_id", values)
    pq.write_table(events, tmp_path / "events.parquet")
    files = {"events": tmp_path / "events.parquet", "items": write_items(tmp_path / "in")}
    with pytest.raises(DataContractError) as err:
        run(settings, files)
    message = str(err.value)
    assert "events.parquet, column 'user_id'" in message and words in message
    assert "Fix:" in message
    assert not settings.raw_dir.exists()


def test_an_unknown_string_item_is_dropped_and_named(settings: Settings, tmp_path: Path) -> None:
    files = string_files(tmp_path / "in")
    events = pd.read_csv(files["events"])
    events.loc[0, "item_id"] = "NOT-IN-CATALOG"
    report = run(settings, {**files, "events": write_csv(events, tmp_path / "ev.csv")})
    assert report.dropped["unknown_item"].examples == [
        "ev.csv row 1: item_id 'NOT-IN-CATALOG' is not in the items file"
    ]
    assert "NOT-IN-CATALOG" not in the_map(settings, "item")  # only the catalog gets keys


def test_the_service_side_parses_ids_by_the_workspace_kind(
    settings: Settings, tmp_path: Path
) -> None:
    run(settings, string_files(tmp_path / "in"))
    ids = WorkspaceIds.load(settings)
    assert ids.item.key(item(3), "item_id") == the_map(settings, "item")[item(3)]
    assert ids.item.externals([0, 1]) == [item(1), item(2)]  # keys follow the ids' order
    assert ids.user.key(123, "user_id") is None  # an integer is its digits here: unknown
    integer = Settings(workspace=tmp_path / "int")
    run(
        integer,
        {
            "events": write_csv(event_rows(), tmp_path / "e.csv"),
            "items": write_items(tmp_path / "i"),
        },
    )
    ints = WorkspaceIds.load(integer)
    assert ints.user.key("7", "user_id") == 7 and ints.item.external(5) == 5
    with pytest.raises(UnknownIdError, match="user_id: 'ef5f' is not an id of this workspace"):
        ints.user.key("ef5f", "user_id")
