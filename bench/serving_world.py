"""The 100k-item serving world: the bench world's whole catalog with a 1-in-N sample of its users.

Serving cost follows the catalog (index, item snapshot, candidates) and not the number of
training events, so the serving benchmark keeps all 104,000 items (media included) of the
bench world (`mmrec generate --scale bench`) and only the events of users whose id is
divisible by `--every` (default 10: 10,000 users, about 1.8M of the 17.7M events). The models
are then trained on that sample by `mmrec run`, like any other workspace.

    python -m bench.serving_world [--source bench/workspace] [--target bench/workspace-serving]

Re-running replaces the target's raw data and keeps its derived data (content cache, models):
`mmrec run` decides from the data what has to run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import duckdb

from mmrec.settings import REPO_ROOT

SHARED_FILES = ("items.parquet", "item_media.parquet", "item_labels.parquet", "skus.parquet")


def sample_world(source: Path, target: Path, every: int) -> dict:
    """Write target/data/raw (and truth) from source's; returns the new manifest."""
    raw, out = source / "data" / "raw", target / "data" / "raw"
    manifest = json.loads((raw / "manifest.json").read_text())
    if (target / "data" / "raw").exists():
        shutil.rmtree(out)
    (out / "events").mkdir(parents=True)
    for name in SHARED_FILES:  # hard links: the media file alone is 3.3 GB
        (out / name).hardlink_to(raw / name)
    if not (target / "feature_repo").exists():
        shutil.copytree(REPO_ROOT / "feature_repo", target / "feature_repo")
    db = duckdb.connect()
    keep = f"user_id % {every} = 0"
    db.execute(
        f"COPY (SELECT * FROM '{raw}/users.parquet' WHERE {keep} ORDER BY user_id) "
        f"TO '{out}/users.parquet' (FORMAT parquet)"
    )
    for day in sorted((raw / "events").iterdir()):
        (out / "events" / day.name).mkdir()
        db.execute(
            f"COPY (SELECT * FROM '{day}/events.parquet' WHERE {keep}) "
            f"TO '{out}/events/{day.name}/events.parquet' (FORMAT parquet)"
        )
    truth_in, truth_out = source / "data" / "truth", target / "data" / "truth"
    truth_out.mkdir(parents=True, exist_ok=True)
    shutil.copy(truth_in / "items_latent.parquet", truth_out / "items_latent.parquet")
    db.execute(
        f"COPY (SELECT * FROM '{truth_in}/users_latent.parquet' WHERE {keep}) "
        f"TO '{truth_out}/users_latent.parquet' (FORMAT parquet)"
    )
    by_type = dict(
        db.execute(
            f"SELECT event_type, count(*) FROM '{out}/events/*/events.parquet' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    n_users = db.execute(f"SELECT count(*) FROM '{out}/users.parquet'").fetchone()[0]
    manifest.update(
        scale=f"{manifest['scale']}-users-1-in-{every}",
        n_users=int(n_users),
        n_events=int(sum(by_type.values())),
        events_by_type={k: int(v) for k, v in by_type.items()},
    )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO_ROOT / "bench" / "workspace")
    parser.add_argument("--target", type=Path, default=REPO_ROOT / "bench" / "workspace-serving")
    parser.add_argument("--every", type=int, default=10, help="keep users with id % every == 0")
    args = parser.parse_args()
    if not (args.source / "data" / "raw" / "manifest.json").exists():
        raise SystemExit(
            f"no world in {args.source}: run `mmrec generate --scale bench -w {args.source}`"
        )
    manifest = sample_world(args.source, args.target, args.every)
    print(
        f"{args.target}: {manifest['n_items']} items, {manifest['n_users']} users, "
        f"{manifest['n_events']} events"
    )


if __name__ == "__main__":
    main()
