"""Benchmark of the evaluation path, measured side by side in one run.

``python -m tools.bench [--n 2000] [--image-size 64] [--epochs 1] [--repeat 2] [--json]``
prints:

* **cache reuse**: the dataset prepared twice; the first decodes every image, the second
  must decode none (decodes are counted in-process) and leave images.npy untouched;
* **worker start**: from the parent's ``run_job`` call to the worker having imported
  torch and the job code and memory-mapped the images (target <= 3 s);
* **throughput**: training images/s inside the sandboxed worker vs a bare PyTorch loop
  in this process on the same model, the same cached uint8 tensors and the same levers
  (allocator tuning, channels_last, autocast mode, AdamW); target: worker >= 0.9x bare.
  Bare and worker runs alternate (bare, worker, bare, ...) and the best of each side is
  compared; both skip their first (warm-up) step. Worker start is the best of the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

START_TARGET_S = 3.0
THROUGHPUT_TARGET = 0.9


def _prepare_counted(data_dir: Path, size: int, cache_root: Path) -> tuple[Any, float, int]:
    """Prepare in-process (one decoder) while counting image decodes."""
    import tasks.cache as cache
    import tasks.decode as decode

    calls = [0]
    original = decode.decode_image

    def counting(path: Path | str, size: int) -> np.ndarray:
        calls[0] += 1
        return original(path, size)

    decode.decode_image = counting
    try:
        t = time.perf_counter()
        data = cache.prepare_isic(data_dir, image_size=size, cache_root=cache_root,
                                  progress=False, workers=1)
        return data, time.perf_counter() - t, calls[0]
    finally:
        decode.decode_image = original


def bare_loop(model: Any, images: np.ndarray, idx: np.ndarray, labels: np.ndarray,
              recipe: Any, mean: Any, std: Any, steps: int) -> float:
    """Train ``steps`` plain steps and return images/s: the floor any wrapper is held to.

    The same levers as the recipe (channels_last, autocast mode, AdamW, normalisation
    from uint8) and the same contiguous uint8 tensor, without sampler, flips, schedule or
    divergence checks.
    """
    import torch
    import torch.nn.functional as F

    from tools.adamw import optimiser
    from tools.batches import Normalizer, autocast, param_groups
    from tools.train import resolve_amp

    amp = resolve_amp(recipe.amp, "cpu")
    data = torch.from_numpy(np.ascontiguousarray(images[np.sort(idx)]))
    y_all = torch.from_numpy(np.asarray(labels)[np.argsort(idx)])
    norm = Normalizer(mean, std, "cpu", recipe.channels_last)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    # The recipe's optimiser on CPU, without its schedule.
    opt = optimiser(param_groups(model, recipe.weight_decay), recipe.lr, lambda _: 1.0, "cpu")
    gen = torch.Generator().manual_seed(0)
    bs = min(recipe.batch_size, len(idx))

    def one_step() -> None:
        pos = torch.randint(0, len(idx), (bs,), generator=gen)
        with autocast(amp, "cpu"):
            logits = model(norm(data.index_select(0, pos)))
        loss = F.cross_entropy(logits.float(), y_all.index_select(0, pos))
        opt.zero_grad()
        loss.backward()
        opt.step()

    one_step()  # warm-up, untimed: the recipe's images_per_s also skips its first step
    t = time.perf_counter()
    for _ in range(steps - 1):
        one_step()
    return (steps - 1) * bs / (time.perf_counter() - t)


def _cache_reuse(root: Path, n: int, image_size: int) -> tuple[Any, dict[str, Any]]:
    """Prepare the synthetic set twice, counting decodes; the data and the cache figures."""
    from tasks.synthetic import generate

    data_dir = root / "synthetic" / f"bench_n{n}_s{image_size}"
    if not data_dir.exists():
        generate(data_dir, n=n, size=image_size, seed=0, progress=False)
    data, t1, d1 = _prepare_counted(data_dir, image_size, root / "cache")
    images_npy = data.cache_dir / "images.npy"
    mtime = images_npy.stat().st_mtime_ns
    data2, t2, d2 = _prepare_counted(data_dir, image_size, root / "cache")
    return data, {"first_s": t1, "first_decodes": d1, "second_s": t2, "second_decodes": d2,
                  "same_fingerprint": data.fingerprint == data2.fingerprint,
                  "images_untouched": images_npy.stat().st_mtime_ns == mtime}


def _worker_vs_bare(data: Any, epochs: int, repeat: int) -> tuple[dict, dict]:
    """Alternate bare-loop and sandboxed-worker trainings; the worker and throughput figures."""
    import torch

    from tasks.models import build_from_source, template_source
    from tools.payloads import build_payload, default_limits, label_files
    from tools.sandbox import run_job
    from tools.train import Recipe, resolve_amp

    code = template_source()
    recipe = Recipe(epochs=epochs)
    payload, train_idx, _ = build_payload(code, data, recipe, "val", "cpu")
    labels = np.asarray(payload["train_labels"])
    images_npy = data.cache_dir / "images.npy"
    images = np.load(images_npy, mmap_mode="r")
    steps = epochs * max(1, len(train_idx) // min(recipe.batch_size, len(train_idx)))

    def bare() -> float:
        torch.manual_seed(0)
        return bare_loop(build_from_source(code, len(data.class_names)), images, train_idx,
                         labels, recipe, data.mean, data.std, steps)

    bare_runs, workers = [bare()], []
    for _ in range(repeat):  # bare, worker, bare, worker, bare: drift hits both sides
        t_call = time.time()
        result = run_job("evaluate", payload, limits=default_limits(recipe, len(train_idx)),
                         read_only=[str(images_npy)], deny_read=label_files(data))
        wall = time.time() - t_call
        res = result.result
        if not result.ok or res is None or "failure" in res:
            raise RuntimeError(f"worker evaluation failed: {result.error or res}")
        workers.append({"start_s": res["timings"]["data_mapped"] - t_call,
                        "img_s": float(res["training"]["images_per_s"]),
                        "job_wall_s": wall, "amp": res["training"]["amp"],
                        "isolation": list(result.isolation)})
        bare_runs.append(bare())
    best = max(w["img_s"] for w in workers)
    worker = {"start_s": min(w["start_s"] for w in workers),
              "start_s_runs": [w["start_s"] for w in workers],
              "job_wall_s": min(w["job_wall_s"] for w in workers),
              "amp": workers[0]["amp"], "isolation": workers[0]["isolation"]}
    throughput = {"steps": steps, "worker_img_s": best,
                  "worker_img_s_runs": [w["img_s"] for w in workers],
                  "bare_img_s": max(bare_runs), "bare_img_s_runs": bare_runs,
                  "ratio": best / max(bare_runs), "amp": resolve_amp(recipe.amp, "cpu")}
    return worker, throughput


def run_bench(n: int, image_size: int, epochs: int, cache_dir: Path | None,
              repeat: int = 2) -> dict[str, Any]:
    """Run every measurement and return them as a dict (see the module docstring)."""
    from tools.confine import tune_malloc

    tune_malloc()  # the worker does the same: same allocator for both sides
    import torch

    out: dict[str, Any] = {"n": n, "image_size": image_size, "epochs": epochs, "repeat": repeat,
                           "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="flnas-bench-") as tmp:
        data, out["cache"] = _cache_reuse(cache_dir or Path(tmp), n, image_size)
        out["worker"], out["throughput"] = _worker_vs_bare(data, epochs, repeat)
    cache = out["cache"]
    out["pass"] = {
        "worker_start": out["worker"]["start_s"] <= START_TARGET_S,
        "throughput": out["throughput"]["ratio"] >= THROUGHPUT_TARGET,
        "cache_reuse": cache["first_decodes"] > 0 and cache["second_decodes"] == 0
        and cache["images_untouched"],
    }
    return out


def _print(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c, w, tp, ok = out["cache"], out["worker"], out["throughput"], out["pass"]
    mark = {True: "[green]yes[/]", False: "[red]NO[/]"}
    t = Table(title=f"Evaluation bench: n={out['n']}, {out['image_size']} px, "
                    f"{out['epochs']} epoch(s), {out['threads']} threads, amp {tp['amp']}")
    for col in ("measure", "value", "reference", "ratio", "target", "met"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    t.add_row("worker start (spawn+imports+map)", f"{w['start_s']:.2f} s",
              "runs " + ", ".join(f"{x:.2f}" for x in w["start_s_runs"]), "",
              f"<= {START_TARGET_S:g} s", mark[ok["worker_start"]])
    t.add_row("training img/s, worker vs bare loop (best of runs)",
              f"{tp['worker_img_s']:.0f} (" + ", ".join(f"{x:.0f}" for x in
                                                     tp["worker_img_s_runs"]) + ")",
              f"{tp['bare_img_s']:.0f} (" + ", ".join(f"{x:.0f}" for x in
                                                    tp["bare_img_s_runs"]) + ")",
              f"{tp['ratio']:.2f}x", f">= {THROUGHPUT_TARGET:g}x", mark[ok["throughput"]])
    t.add_row("prepare #2 vs #1 (cache reuse)",
              f"{c['second_s']:.2f} s, {c['second_decodes']} decodes",
              f"{c['first_s']:.2f} s, {c['first_decodes']} decodes",
              f"{c['second_s'] / max(c['first_s'], 1e-9):.3f}x", "0 decodes",
              mark[ok["cache_reuse"]])
    Console().print(t)
    Console().print(f"worker job wall {w['job_wall_s']:.1f} s (train, predict, export); "
                    f"isolation: {', '.join(w['isolation']) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit code 0 when every target is met, 1 otherwise."""
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="synthetic images (default 2000)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeat", type=int, default=2,
                   help="worker runs, interleaved with bare-loop runs (default 2)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="keep data and cache here (default: a fresh temporary folder)")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = p.parse_args(argv)
    if args.n < 50 or args.image_size < 32 or args.epochs < 1 or args.repeat < 1:
        p.error("need --n >= 50, --image-size >= 32, --epochs >= 1, --repeat >= 1")
    out = run_bench(args.n, args.image_size, args.epochs, args.cache_dir, args.repeat)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(out)
    return 0 if all(out["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
