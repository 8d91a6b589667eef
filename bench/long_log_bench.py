"""`mmrec features build` on a long sparse log: 21 years, ~151k events on 3,840 distinct days.

The log (`datagen.long_log`: 671 users, 9,066 text-only titles, users in bursts years apart)
is written once as contract files, imported, and its offline features built, by this checkout
and, with `--baseline CHECKOUT`, by another checkout of the project (e.g. a `git worktree` of an
older commit) in the same run, each in its own process, `--repeats` times each. Reports the
median seconds of the import and of the features build, the offline files written, and the
ratio baseline / this checkout.

    python -m bench.long_log_bench [--baseline ../wt-before] [--repeats 3]

Writes bench/results/long-log.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from datagen.long_log import write_long_log
from mmrec.settings import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"

# Run inside the checkout under test (its modules first on sys.path): import + build, timed.
_ONE_RUN = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {checkout!r})
from feature_pipelines.run import build_features
from ingest.importer import import_data
from mmrec.settings import Settings
settings = Settings(workspace=Path({workspace!r}))
started = time.perf_counter()
import_data(settings, Path({events!r}), Path({items!r}))
imported = time.perf_counter()
build_features(settings)
built = time.perf_counter()
files = sum(1 for _ in settings.offline_dir.rglob("*.parquet"))
print(json.dumps({{"import_s": imported - started, "features_build_s": built - imported,
                  "offline_files": files}}))
"""


def run_checkout(checkout: Path, events: Path, items: Path, root: Path) -> dict[str, Any]:
    """One import + features build by `checkout`'s code in a fresh workspace under `root`."""
    workspace = Path(tempfile.mkdtemp(prefix="ws-", dir=root))
    code = _ONE_RUN.format(
        checkout=str(checkout), workspace=str(workspace), events=str(events), items=str(items)
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"{checkout} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "import_s_median": round(statistics.median(r["import_s"] for r in runs), 2),
        "features_build_s_median": round(statistics.median(r["features_build_s"] for r in runs), 2),
        "features_build_s_runs": [round(r["features_build_s"], 2) for r in runs],
        "offline_files": runs[-1]["offline_files"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="Another checkout to measure beside this.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    checkouts = {"this": REPO_ROOT}
    if args.baseline is not None:
        if not (args.baseline / "feature_pipelines" / "run.py").is_file():
            parser.error(f"--baseline {args.baseline} is not a checkout of this project")
        checkouts = {"baseline": args.baseline.resolve(), **checkouts}
    with tempfile.TemporaryDirectory(prefix="mmrec-long-log-") as tmp:
        root = Path(tmp)
        events, items = write_long_log(root / "contract", seed=args.seed)
        n_events = sum(1 for _ in events.open()) - 1
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in checkouts}
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            for name, checkout in checkouts.items():
                runs[name].append(run_checkout(checkout, events, items, root))
    report: dict[str, Any] = {"events": n_events, "repeats": args.repeats}
    report |= {name: summarise(r) for name, r in runs.items()}
    if "baseline" in report:
        report["baseline_over_this"] = round(
            report["baseline"]["features_build_s_median"]
            / report["this"]["features_build_s_median"],
            2,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "long-log.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
