"""`mmrec content ...`: the content-understanding stage, mounted by the root as `content`."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

from mmrec.cli_common import StageApp, Workspace, cli_settings, console
from mmrec.errors import UserError

app = StageApp(help="Content understanding: encoders, tags, fused item embeddings.")


@app.callback()
def _content() -> None:
    """Content understanding: encoders, tags, fused item embeddings."""


@app.command("encode")
def encode(
    batch_size: Annotated[
        int, typer.Option(help="Items per encoding batch (one cache part each).")
    ] = 64,
    limit: Annotated[
        int | None, typer.Option(help="Only the first N items of the catalog.")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads for torch/ONNX Runtime (default MMREC_TORCH_THREADS)."),
    ] = None,
    image_backend: Annotated[
        str, typer.Option(help="onnxruntime (measured faster) or torch.")
    ] = "onnxruntime",
    text_backend: Annotated[
        str, typer.Option(help="torch (measured faster here) or onnxruntime.")
    ] = "torch",
    max_frames: Annotated[int, typer.Option(help="Frames sampled per video.")] = 8,
    retrain: Annotated[
        bool, typer.Option(help="Retrain the tag heads even if a trained copy exists.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    workspace: Workspace = None,
) -> None:
    """Encode items (text, image, video), train the tag heads, write item_embeddings/item_tags.

    Resumable: items already encoded with the same encoder version are not encoded again.
    Items with an empty title, an unreadable image or a video without frames are skipped and
    counted; the run goes on. What is encoded follows the manifest's data profile: without
    images, titles alone (no image encoder); without quality labels, no quality head.
    """
    from content.encode import quality_summary, run_encode
    from content.encoding import EncodeConfig

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = cli_settings(workspace)
    config = EncodeConfig(
        batch_size=batch_size,
        limit=limit,
        threads=threads,
        image_backend=image_backend,
        text_backend=text_backend,
        max_frames=max_frames,
        retrain=retrain,
        show_progress=progress,
    )
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    report = run_encode(settings, config)
    m = report.tag_metrics
    console.print(
        f"encoder {report.encoder_name} v{report.encoder_version}: {report.n_ok} items encoded "
        f"({report.n_encoded_now} now, {report.n_reused} reused), {report.n_skipped} skipped "
        f"{json.dumps(report.skipped_by_reason)}"
    )
    if m:
        console.print(
            f"tags v{report.tag_model_version}, held-out {m['n_test']} items: "
            f"category micro-F1 {m['category']['micro_f1']:.3f} "
            f"(most-frequent-tag baseline {m['category_baseline_most_frequent_tag']['micro_f1']:.3f}), "
            f"{quality_summary(m)}"
        )
    if report.ignored_category_tags:
        console.print(
            f"ignored {sum(report.ignored_category_tags.values())} category tags outside the "
            f"manifest's categories: {json.dumps(report.ignored_category_tags)}"
        )
    for name, path in report.outputs.items():
        console.print(f"{name:>16}: {path}")
