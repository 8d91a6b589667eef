"""Content encoders: items/s for text, image and video encoding on N CPU threads, peak RSS,
and faster execution options measured against the PyTorch fp32 reference.

Every configuration runs in its own subprocess (clean thread settings, its own peak RSS).
Inputs are the generator's own pixels (datagen.media) and vocabulary titles, from PNG bytes
to embeddings (decode + preprocess + model), as the encode stage does them.

An option is kept only if it is faster than the reference AND its embeddings agree with the
reference's (cosine >= 0.99 for every item). The verdict is printed and written to
bench/results/content_encoders.{json,md}.

    python -m bench.content_encoders_bench                 # defaults: 2 threads
    python -m bench.content_encoders_bench --threads 2 --n-images 256 --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
COSINE_FLOOR = 0.99
MIN_SPEEDUP = 1.1

# (modality, option): the first option of each modality is the reference.
CONFIGS = {
    "text": ["torch-fp32", "torch-int8-dynamic", "onnxruntime-fp32"],
    "image": ["torch-fp32", "onnxruntime-fp32"],
    "video": ["torch-fp32", "onnxruntime-fp32"],
}


# ---- inputs -----------------------------------------------------------------------------


def titles(n: int, seed: int = 0) -> list[str]:
    from mmrec.vocab import CATEGORY_NOUNS

    rng = np.random.default_rng(seed)
    nouns = [noun for group in CATEGORY_NOUNS.values() for noun in group]
    adjectives = ["cheap", "basic", "popular", "classic", "premium", "top rated", "elegant"]
    templates = ["Honest review of the {a} {n}", "Unboxing my new {a} {n}", "Deal alert: {a} {n} on sale today",
                 "How to choose a {a} {n}: a tutorial", "Big {n} haul with {a} picks"]  # fmt: skip
    return [
        templates[rng.integers(len(templates))].format(
            a=adjectives[rng.integers(len(adjectives))], n=nouns[rng.integers(len(nouns))]
        )
        for _ in range(n)
    ]


def media(
    n_images: int, n_videos: int, n_frames: int = 4, seed: int = 0
) -> tuple[list[bytes], list[list[bytes]]]:
    """PNG covers and video frames from the generator's renderer (64x64, as in the world)."""
    from datagen.media import render_media
    from mmrec.vocab import N_CATEGORIES

    rng = np.random.default_rng(seed)
    n = n_images + n_videos
    category = rng.integers(0, N_CATEGORIES, n)
    quality = rng.beta(2, 2, n)
    is_video = np.arange(n) >= n_images
    covers, frames = render_media(category, quality, is_video, n_frames, 64, rng)
    return covers[:n_images], frames[n_images:]


# ---- one configuration, in a worker process ----------------------------------------------


def _worker(modality: str, option: str, args: argparse.Namespace, out: Path) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from content.image_encoder import ImageEncoder, decode_image
    from content.text_encoder import TextEncoder
    from content.video import encode_videos

    backend = option.split("-")[0]
    cache = Path(args.cache)
    t0 = time.perf_counter()
    if modality == "text":
        enc = TextEncoder(
            "onnxruntime" if backend == "onnxruntime" else "torch",
            threads=args.threads,
            cache_dir=cache,
        )
        if option == "torch-int8-dynamic":
            enc.module = torch.ao.quantization.quantize_dynamic(
                enc.module, {torch.nn.Linear}, dtype=torch.qint8
            )
        work = titles(args.n_text)

        def run() -> np.ndarray:
            return enc.encode(work, batch_size=64)

        n_items = len(work)
    else:
        enc = ImageEncoder(
            backend, threads=args.threads, micro_batch=args.micro_batch, cache_dir=cache
        )
        covers, frames = media(args.n_images, args.n_videos)
        if modality == "image":

            def run() -> np.ndarray:
                return enc.encode([decode_image(b) for b in covers])

            n_items = len(covers)
        else:

            def run() -> np.ndarray:
                return encode_videos(enc, [[decode_image(b) for b in clip] for clip in frames])

            n_items = len(frames)
    load_s = time.perf_counter() - t0
    emb = run()  # warm-up (and the embeddings compared across options)
    walls, cpus = [], []
    for _ in range(args.reps):
        w, c = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    np.save(out, emb)
    wall = statistics.median(walls)
    return {
        "modality": modality,
        "option": option,
        "items": n_items,
        "items_per_s": round(n_items / wall, 2),
        "items_per_s_best": round(n_items / min(walls), 2),
        "cpu_s_per_item": round(statistics.median(cpus) / n_items, 5),
        "load_s": round(load_s, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": args.threads,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _spawn(modality: str, option: str, args: argparse.Namespace, workdir: Path) -> dict:
    out = workdir / f"{modality}-{option}.npy"
    cmd = [
        sys.executable,
        "-m",
        "bench.content_encoders_bench",
        "--worker",
        f"{modality}:{option}",
        "--emb-out",
        str(out),
    ]
    for key in ("threads", "n_text", "n_images", "n_videos", "reps", "micro_batch", "cache"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{modality}:{option} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["emb_path"] = str(out)
    return row


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-text", type=int, default=1024)
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--n-videos", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "mmrec-bench-onnx"))
    parser.add_argument("--only", default="", help="comma-separated modalities (text,image,video)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--emb-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        modality, option = args.worker.split(":")
        print(json.dumps(_worker(modality, option, args, Path(args.emb_out))))
        return

    wanted = [m for m in CONFIGS if not args.only or m in args.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for modality in wanted:
            ref = None
            for option in CONFIGS[modality]:
                row = _spawn(modality, option, args, Path(tmp))
                emb = np.load(row.pop("emb_path"))
                if ref is None:
                    ref, ref_rate = emb, row["items_per_s"]
                    row.update(cos_min=1.0, cos_mean=1.0, speedup=1.0, verdict="reference")
                else:
                    cos = _cosines(emb, ref)
                    row.update(
                        cos_min=round(float(cos.min()), 5), cos_mean=round(float(cos.mean()), 5)
                    )
                    row["speedup"] = round(row["items_per_s"] / ref_rate, 2)
                    agrees, faster = row["cos_min"] >= COSINE_FLOOR, row["speedup"] >= MIN_SPEEDUP
                    row["verdict"] = (
                        "keep"
                        if agrees and faster
                        else ("reject: embeddings disagree" if not agrees else "reject: not faster")
                    )
                rows.append(row)
                print(
                    f"{modality:>6} {option:<20} {row['items_per_s']:>9.1f} items/s  x{row['speedup']:<5} "
                    f"cos_min {row['cos_min']:.4f}  rss {row['peak_rss_mib']:>7.1f} MiB  "
                    f"load {row['load_s']:>5.1f}s  [{row['verdict']}]",
                    flush=True,
                )
    meta = {
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "n_text": args.n_text,
        "n_images": args.n_images,
        "n_videos": args.n_videos,
        "frames_per_video": 4,
        "reps": args.reps,
        "cosine_floor": COSINE_FLOOR,
        "min_speedup": MIN_SPEEDUP,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "content_encoders.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        f"# Content encoders on {args.threads} CPU threads",
        "",
        "| modality | option | items/s | speedup | cos min | peak RSS MiB | load s | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['modality']} | {r['option']} | {r['items_per_s']} | {r['speedup']} | {r['cos_min']} | "
            f"{r['peak_rss_mib']} | {r['load_s']} | {r['verdict']} |"
        )
    (RESULTS / "content_encoders.md").write_text("\n".join(lines) + "\n")
    print(f"results: {RESULTS / 'content_encoders.json'}")


if __name__ == "__main__":
    main()
