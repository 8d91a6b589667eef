"""`mmrec features ...`: the offline pipelines and the Feast feature store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mmrec.cli_common import (
    OfflineStore,
    OnlineStore,
    StageApp,
    Workspace,
    cli_settings,
    console,
)
from mmrec.errors import UserError
from mmrec.vocab import RANKING_SERVICE, RECALL_SERVICE

app = StageApp(help="Offline pipelines and the Feast feature store.")


@app.command("build")
def features_build(
    day: Annotated[
        list[str] | None,
        typer.Option(help="Day(s) YYYY-MM-DD whose months to rebuild; all when omitted."),
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Run the event-to-feature pipelines into the offline sources (idempotent; a day's
    month is rebuilt whole)."""
    from feature_pipelines.run import build_features

    written = build_features(cli_settings(workspace), day)
    for source, rows in written.items():
        console.print(f"{source:>20}: {rows} rows")


@app.command("apply")
def features_apply(
    workspace: Workspace = None,
    online_store: OnlineStore = None,
    offline_store: OfflineStore = None,
) -> None:
    """Register the feature repo's definitions (runs `feast apply` in feature_repo/)."""
    from mmrec.feast_store import apply_repo

    console.print(apply_repo(cli_settings(workspace, online_store, offline_store)) or "applied")


@app.command("materialize")
def features_materialize(
    end: Annotated[
        str | None, typer.Option(help="ISO time to materialize up to (default: the world's end).")
    ] = None,
    view: Annotated[
        list[str] | None, typer.Option(help="Feature view(s); all when omitted.")
    ] = None,
    workspace: Workspace = None,
    online_store: OnlineStore = None,
    offline_store: OfflineStore = None,
) -> None:
    """Load the latest feature values within each view's TTL into the online store, after
    folding events posted since the last build into the offline sources (so no value the
    service pushed is set back)."""
    from feature_pipelines.run import fold_event_log
    from mmrec.feast_store import materialize, open_store
    from mmrec.world_manifest import time_or_world_end

    settings = cli_settings(workspace, online_store, offline_store)
    until = time_or_world_end(settings, end)  # a bad --end fails before any work
    folded = fold_event_log(settings)
    if folded:
        console.print(f"offline sources brought up to date: {', '.join(folded)}")
    windows = materialize(open_store(settings), until, view)
    for name, start in windows.items():
        console.print(f"{name:>20}: materialized [{start:%Y-%m-%d %H:%M}, {until:%Y-%m-%d %H:%M})")


@app.command("show")
def features_show(
    user_id: Annotated[str, typer.Option(help="User to read, by the data's own id.")],
    item_id: Annotated[str, typer.Option(help="Item to read, by the data's own id.")],
    service: Annotated[
        str, typer.Option(help=f"Feature service: {RECALL_SERVICE} or {RANKING_SERVICE}.")
    ] = RANKING_SERVICE,
    workspace: Workspace = None,
    online_store: OnlineStore = None,
    offline_store: OfflineStore = None,
) -> None:
    """Read one (user, item) row of a feature service from the online store."""
    from feast.errors import FeatureServiceNotFoundException

    from mmrec.feast_store import open_store
    from mmrec.id_map import UnknownIdError, WorkspaceIds
    from mmrec.world_manifest import world_end

    settings = cli_settings(workspace, online_store, offline_store)
    ids = WorkspaceIds.load(settings)
    keys, own = {}, {}  # the platform's keys, the data's ids (shown)
    for name, entity, value in (("user_id", ids.user, user_id), ("item_id", ids.item, item_id)):
        keys[name], own[name] = (
            entity.key(value, f"--{name.replace('_', '-')}"),
            entity.parse(value, name),
        )
        if keys[name] is None:
            raise UnknownIdError(
                f"--{name.replace('_', '-')}: {value!r} is not in this workspace's data"
            )
    store = open_store(settings)
    try:
        feature_service = store.get_feature_service(service)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise UserError(
            f"unknown feature service {service!r}; the registry has {known} "
            "(`mmrec features apply` registers the feature repo's)"
        ) from None
    row = {
        "user_id": keys["user_id"],
        "item_id": keys["item_id"],
        "request_ts": int(world_end(settings).timestamp()),
    }
    values = store.get_online_features(features=feature_service, entity_rows=[row]).to_dict()
    values.update({name: [value] for name, value in own.items()})
    table = Table(title=f"online features: service={service} user={user_id} item={item_id}")
    table.add_column("feature")
    table.add_column("value", overflow="fold")
    for name, column in values.items():
        table.add_row(name, repr(column[0]))
    console.print(table)
