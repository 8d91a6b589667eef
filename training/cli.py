"""`mmrec train ...`: training sets (and, as they land, model training)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmrec.cli_common import OfflineStore, StageApp, Workspace, cli_settings, console
from mmrec.errors import UserError
from mmrec.vocab import LATEST_RECALL_MODEL
from models.ranking_config import RankingConfig as Defaults  # the model switches' defaults

app = StageApp(help="Training sets and models.")


ValidDays = Annotated[
    int | None,
    typer.Option(help="Days before the test days held out for validation (default: by share)."),
]
TestDays = Annotated[
    int | None, typer.Option(help="Last days of the data held out for testing (default: by share).")
]
ValidShare = Annotated[
    float, typer.Option(help="Share of the events, before the test days, held out for validation.")
]
TestShare = Annotated[float, typer.Option(help="Share of the newest events held out for testing.")]


@app.command("build-sets")
def build_sets(
    chunk_rows: Annotated[
        int, typer.Option(help="Entity rows per Feast call (memory bound).")
    ] = 200_000,
    negative_ratio: Annotated[int, typer.Option(help="Recall negatives per positive.")] = 4,
    popularity_alpha: Annotated[
        float, typer.Option(help="0 = uniform negatives; 0.75 = popularity-corrected.")
    ] = 0.0,
    valid_days: ValidDays = None,
    test_days: TestDays = None,
    valid_share: ValidShare = 0.1,
    test_share: TestShare = 0.1,
    seed: Annotated[int, typer.Option(help="Negative-sampling seed.")] = 0,
    workspace: Workspace = None,
    offline_store: OfflineStore = None,
) -> None:
    """Build the ranking and recall training sets through Feast's feature services."""
    from training_sets.build import BuildConfig, build_ranking_set, build_recall_set
    from training_sets.splits import SplitSpec

    config = BuildConfig(
        chunk_rows=chunk_rows,
        split=SplitSpec(valid_days, test_days, valid_share, test_share),
        negative_ratio=negative_ratio,
        popularity_alpha=popularity_alpha,
        seed=seed,
    )
    settings = cli_settings(workspace, offline_store=offline_store)
    for name, build in (("ranking", build_ranking_set), ("recall", build_recall_set)):
        manifest = build(settings, config)
        console.print(f"{name}: split {manifest['split']}")
        console.print(f"{name}: rows {manifest['rows']} label rates {manifest['label_rates']}")


def _num(value: float | None) -> str:
    """A metric for the console: 3 decimals, n/a when undefined (one class in the slice)."""
    return "n/a" if value is None else f"{value:.3f}"


def _switches(
    multimodal: bool,
    dsn: bool,
    min_: bool,
    cdr: bool | None,
    timeliness: bool,
    history_category: bool,
    user_id: bool,
    popularity: bool,
    recall_vector: bool,
    dsn_in_min: bool,
    standardize: bool,
    bin_scalars: bool,
    candidate_id: bool,
    candidate_content: bool,
    slow_item_ids: bool,
) -> dict[str, bool]:
    """The model switches; CDR unset = on exactly when the data has a product domain."""
    switches = {
        "use_multimodal": multimodal,
        "use_dsn": dsn,
        "use_min": min_,
        "use_cdr": cdr,
        "use_timeliness": timeliness,
        "use_history_category": history_category,
        "use_user_id": user_id,
        "use_popularity": popularity,
        "use_recall_vector": recall_vector,
        "dsn_in_min": dsn_in_min,
        "standardize": standardize,
        "bin_scalars": bin_scalars,
        "candidate_id": candidate_id,
        "candidate_content": candidate_content,
        "slow_item_ids": slow_item_ids,
    }
    return {name: value for name, value in switches.items() if value is not None}


Epochs = Annotated[
    int, typer.Option(help="Passes over the training split, at most (see --patience).")
]
Patience = Annotated[
    int, typer.Option(help="Stop after this many epochs without a better validation score.")
]
BatchSize = Annotated[int, typer.Option(help="Impressions per optimisation step.")]
LearningRate = Annotated[float, typer.Option(help="Adam learning rate of the ranker.")]
MaxSeqLen = Annotated[int, typer.Option(help="Newest clicked items kept per user sequence.")]
SparseTaskWeight = Annotated[
    float,
    typer.Option(
        help="Each sparse task's weight in the loss (share, comment, cart, favorite); click and "
        "watch weigh 1."
    ),
]


@app.command("rank")
def rank(
    epochs: Epochs = 12,
    patience: Patience = 2,
    batch_size: BatchSize = 512,
    lr: LearningRate = 2e-3,
    max_seq_len: MaxSeqLen = 20,
    sparse_task_weight: SparseTaskWeight = 0.2,
    seed: Annotated[int, typer.Option(help="Init, shuffling and ID-dropout seed.")] = 0,
    multimodal: Annotated[
        bool, typer.Option(help="Text + visual embeddings (needs `mmrec content encode`).")
    ] = Defaults.use_multimodal,
    dsn: Annotated[bool, typer.Option(help="GMF's DSN residual (needs --multimodal).")] = (
        Defaults.use_dsn
    ),
    min_: Annotated[
        bool, typer.Option("--min/--no-min", help="GMF's modality interest (needs --multimodal).")
    ] = Defaults.use_min,
    cdr: Annotated[
        bool | None,
        typer.Option(
            help="Cross-domain (product) category interest (default: on when the data has SKUs)."
        ),
    ] = None,
    timeliness: Annotated[bool, typer.Option(help="Item age and windowed CTRs.")] = (
        Defaults.use_timeliness
    ),
    history_category: Annotated[
        bool, typer.Option(help="The click history's category shares (content-domain interest).")
    ] = Defaults.use_history_category,
    user_id: Annotated[
        bool,
        typer.Option(
            help="A user-ID embedding crossed with the item's ID and modalities (off: it "
            "overfits on the small world)."
        ),
    ] = Defaults.use_user_id,
    popularity: Annotated[
        bool,
        typer.Option(
            help="The user's taste for popular items: the candidate's impressions, the "
            "history's mean log impressions and their product."
        ),
    ] = Defaults.use_popularity,
    recall_vector: Annotated[
        bool,
        typer.Option(
            help="The recall item tower's vectors (the index's, of --recall-model) as an "
            "input: the candidate's and its match with the history's."
        ),
    ] = Defaults.use_recall_vector,
    recall_model: Annotated[
        str, typer.Option(help="The recall model whose vectors --recall-vector reads.")
    ] = LATEST_RECALL_MODEL,
    dsn_in_min: Annotated[
        bool,
        typer.Option(
            help="DSN's residual matched with the user's history inside MIN (with --dsn and "
            "--min); --no-dsn-in-min: a raw input block, as before issue #32."
        ),
    ] = Defaults.dsn_in_min,
    standardize: Annotated[
        bool,
        typer.Option(
            help="The scalar inputs (rates, shares, counts, age) scaled to mean 0 and std 1 "
            "over the train split."
        ),
    ] = Defaults.standardize,
    bin_scalars: Annotated[
        bool,
        typer.Option(
            help="Each scalar input as a piecewise-linear encoding over bins between its "
            f"train-split quantiles ({Defaults.scalar_bins} bins)."
        ),
    ] = Defaults.bin_scalars,
    candidate_id: Annotated[
        bool,
        typer.Option(
            help="The candidate's ID embedding as an MMoE input of its own (ID attention and "
            "MIN read it either way)."
        ),
    ] = Defaults.candidate_id,
    candidate_content: Annotated[
        bool,
        typer.Option(
            help="The candidate's content projections as MMoE inputs of their own (MIN reads "
            "them either way)."
        ),
    ] = Defaults.candidate_content,
    slow_item_ids: Annotated[
        bool,
        typer.Option(
            help=f"The item-ID table trained at {Defaults.item_id_lr_scale:g} times --lr (an "
            "Adam group of its own), so it does not memorize the train days' items before "
            "the other blocks learn."
        ),
    ] = Defaults.slow_item_ids,
    model_name: Annotated[
        str,
        typer.Option(
            help="BentoML store name to save under (e.g. ranking-no-gmf for a model served by a "
            "bento of its own, MMREC_RANK_MODEL=ranking-no-gmf:latest)."
        ),
    ] = "ranking",
    workspace: Workspace = None,
) -> None:
    """Train the MMoE ranker on the ranking set, evaluate it, save it to the BentoML store."""
    import torch

    from training.rank_train import TrainConfig, train_ranking

    config = TrainConfig(
        epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, max_seq_len=max_seq_len,
        sparse_task_weight=sparse_task_weight, seed=seed, model_name=model_name,
    )  # fmt: skip
    settings = cli_settings(workspace)
    torch.set_num_threads(settings.torch_threads)
    switches = _switches(
        multimodal, dsn, min_, cdr, timeliness, history_category, user_id, popularity,
        recall_vector, dsn_in_min, standardize, bin_scalars, candidate_id, candidate_content,
        slow_item_ids,
    )  # fmt: skip
    report = train_ranking(settings, config, switches, recall_model=recall_model)
    test = report["metrics"]["test"]
    console.print(
        f"saved {report['tag']} ({report['train']['samples_per_s']} samples/s); test "
        + ", ".join(
            f"{t} AUC {_num(test.get(f'{t}_all_auc'))} GAUC {_num(test.get(f'{t}_all_gauc'))}"
            for t in report["tasks"]
        )
    )
    console.print(
        f"cold items: click AUC {_num(test.get('click_cold_auc'))}; "
        f"metrics in {settings.artifacts_dir / model_name / 'metrics.json'}"
    )


@app.command("rank-ablation")
def rank_ablation(
    seeds: Annotated[
        int, typer.Option(help="Seeds per variant (--first-seed and the next N-1).")
    ] = 3,
    first_seed: Annotated[
        int,
        typer.Option(
            help="The first seed: split one ablation over processes (e.g. --seeds 1 "
            "--first-seed 2 on a copy of the workspace), then --merge their ablation.json."
        ),
    ] = 0,
    merge: Annotated[
        list[Path] | None,
        typer.Option(
            help="Instead of training: merge these ablation.json files (the same data and "
            "training settings, other seeds or variants) into one report under "
            "artifacts/ranking/.",
        ),
    ] = None,
    epochs: Epochs = 12,
    patience: Patience = 2,
    batch_size: BatchSize = 512,
    lr: LearningRate = 2e-3,
    max_seq_len: MaxSeqLen = 20,
    sparse_task_weight: SparseTaskWeight = 0.2,
    variants: Annotated[
        str,
        typer.Option(
            help="Comma-separated variants: the cumulative id_only,+multimodal,+dsn,+min,+cdr,"
            "+timeliness,+history_category,full (default), the leave-one-out full-dsn,"
            "full-min,full-history_category,full-popularity, full with any +x/-x of the "
            "blocks (full+recall_vector, full-dsn_in_min, full+user_id) and gbdt (LightGBM)."
        ),
    ] = "id_only,+multimodal,+dsn,+min,+cdr,+timeliness,+history_category,full",
    recall_model: Annotated[
        str, typer.Option(help="The recall model whose vectors the +recall_vector variants read.")
    ] = LATEST_RECALL_MODEL,
    workspace: Workspace = None,
) -> None:
    """What each ranking block buys: variants trained on the same split, over seeds."""
    import torch

    from training.rank_ablation import merge_ablations, run_ablation
    from training.rank_train import TrainConfig

    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if first_seed < 0:
        raise UserError(f"--first-seed must be >= 0, got {first_seed}")
    settings = cli_settings(workspace)
    if merge:
        summary = merge_ablations(settings, merge)
    else:
        config = TrainConfig(
            epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
            max_seq_len=max_seq_len, sparse_task_weight=sparse_task_weight,
        )  # fmt: skip
        torch.set_num_threads(settings.torch_threads)
        chosen = tuple(name.strip() for name in variants.split(",") if name.strip())
        chosen_seeds = tuple(range(first_seed, first_seed + seeds))
        summary = run_ablation(settings, config, chosen_seeds, chosen, recall_model=recall_model)
    width = max(map(len, summary["summary"]))
    for variant, stats in summary["summary"].items():
        console.print(
            f"{variant:>{width}}: click AUC {_num(stats['click_all_auc']['mean'])} "
            f"GAUC {_num(stats['click_all_gauc']['mean'])} "
            f"cold AUC {_num(stats['click_cold_auc']['mean'])}"
        )
    console.print(f"{summary['elapsed_seconds']} s; report in {settings.artifacts_dir / 'ranking'}")


@app.command("recall")
def recall(
    epochs: Epochs = 5,
    patience: Patience = 2,
    batch_size: Annotated[int, typer.Option(help="Rows of one channel per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 2e-3,
    max_seq_len: MaxSeqLen = 20,
    id_dropout: Annotated[
        float, typer.Option(help="Share of training rows whose item ID is hidden (cold start).")
    ] = 0.3,
    softmax_weight: Annotated[
        float, typer.Option(help="Weight of the in-batch softmax next to BCE; 0 = BCE only.")
    ] = 1.0,
    logq: Annotated[
        bool, typer.Option(help="logQ (popularity) correction of the in-batch softmax.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Init, shuffling and ID-dropout seed.")] = 0,
    seeds: Annotated[
        int,
        typer.Option(help="Also train with the next seeds and report mean ± std over all."),
    ] = 1,
    workspace: Workspace = None,
) -> None:
    """Train the two-tower recall model, evaluate it against baselines, save it to BentoML."""
    import torch

    from training.recall_train import TrainConfig, train_recall

    config = TrainConfig(
        epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, max_seq_len=max_seq_len,
        id_dropout=id_dropout, softmax_weight=softmax_weight, logq_correction=logq, seed=seed,
    )  # fmt: skip
    settings = cli_settings(workspace)
    torch.set_num_threads(settings.torch_threads)
    report = train_recall(settings, config, seeds=seeds)
    from training.recall_eval import markdown

    console.print(f"saved {report['tag']} ({report['item_tower']} item tower)")
    console.print(markdown(report["evaluation"], "Recall (test split)"), soft_wrap=True)
    console.print(f"report in {settings.artifacts_dir / 'recall'}")
