"""The trusted measure job: every scored number of a candidate, from its ONNX graph alone.

``run_job("tools.measure:measure_job", payload, read_only=[images.npy, model.onnx])``
runs this in a fresh sandboxed worker that never loads candidate code. It reads the
graph the evaluate job exported (untrusted bytes, treated as data), validates it, and
computes, all from the graph and ONNX Runtime:

* parameters, size, FLOPs and peak activation memory at batch 1, statically from the
  graph (``evaluation/onnx_cost.py``); FLOPs must grow linearly with the batch size;
* the predictions the parent scores: ONNX Runtime on the evaluation images, normalised
  and batched exactly as ``tools.train.predict`` does;
* a batch check: the logits of a few images the parent picked at random, run one at a
  time, must equal their logits inside the evaluation batches;
* batch-1 latency in ONNX Runtime on real evaluation images.

So a candidate cannot report one model and be scored on another: the FLOPs, parameters
and latency come from the same graph that produced the scored predictions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

# Imported when the worker resolves this handler, before its audit hook is armed.
import onnxruntime as ort

from evaluation.onnx_cost import GraphCost, graph_cost
from evaluation.onnx_cost import count_flops as graph_flops
from evaluation.onnx_graph import GraphError, load_graph, static_shapes, validate_graph
from evaluation.report import HardwareReport

MB = 2**20
#: The worker skips importing torch for this module's jobs: they never run candidate code.
TORCH_FREE = True
MEASURED_BY = "onnxruntime on the exported graph (no candidate code)"
# Batch-1 vs batch-N logits of the same image: float reassociation in different kernels
# moves logits by ~1e-6 here; a model that treats the batch differently moves them by O(1).
BATCH_RTOL, BATCH_ATOL = 1e-3, 1e-3


def _failure(stage: str, reason: str) -> dict:
    return {"failure": {"stage": stage, "reason": reason[:2000]}}


def session(model_bytes: bytes, threads: int) -> ort.InferenceSession:
    """Return a CPU ONNX Runtime session for a serialised graph.

    ``threads`` intra-op threads, one inter-op thread, sequential execution and every
    graph optimisation (what a deployment would run).
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def normalise(rows: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """uint8 ``(N, 3, S, S)`` -> float32, bit for bit as ``tools.batches.Normalizer``.

    ``x * (1 / (255 * std)) - mean / std`` with every intermediate rounded to float32 in
    the same order as the training recipe's normaliser (numpy, so this job needs no torch).
    """
    std32 = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    mean32 = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    scale = np.float32(1.0) / (np.float32(255.0) * std32)
    shift = mean32 / std32
    x = np.asarray(rows).astype(np.float32)
    x *= scale
    x -= shift
    return x


class _Runner:
    """Normalise uint8 rows exactly as ``tools.train.predict`` does and run the graph."""

    def __init__(self, sess: ort.InferenceSession, mean: Any, std: Any, num_classes: int):
        self.sess = sess
        self.name = sess.get_inputs()[0].name
        self.mean, self.std = mean, std
        self.num_classes = num_classes

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        return normalise(rows, self.mean, self.std)

    def logits(self, x: np.ndarray) -> np.ndarray:
        out = self.sess.run(None, {self.name: x})
        if len(out) != 1 or not isinstance(out[0], np.ndarray):
            raise GraphError(f"the graph returned {len(out)} outputs; expected one")
        y = out[0]
        if y.shape != (len(x), self.num_classes):
            raise GraphError(f"the graph returned logits of shape {y.shape} for a batch of "
                             f"{len(x)}; expected ({len(x)}, {self.num_classes})")
        return y.astype(np.float32, copy=False)


def _latency(runner: _Runner, xs: list[np.ndarray], warmup: int, iters: int) -> np.ndarray:
    """Milliseconds of ``iters`` batch-1 runs after ``warmup``, cycling through ``xs``."""
    for i in range(warmup):
        runner.sess.run(None, {runner.name: xs[i % len(xs)]})
    times = np.empty(iters)
    for i in range(iters):
        x = xs[i % len(xs)]
        t0 = time.perf_counter()
        runner.sess.run(None, {runner.name: x})
        times[i] = (time.perf_counter() - t0) * 1e3
    return times


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _runtime_peak_mb(blob: bytes, threads: int, rows: np.ndarray, payload: dict
                     ) -> float | None:
    """Resident memory ONNX Runtime adds to load ``blob`` and run it once at batch 1.

    The process's high-water mark is reset to its current resident size (writing 5 to
    ``/proc/self/clear_refs``, Linux >= 4.0), a fresh session runs one image, and the
    new high-water mark minus the resident size before is the answer: weights as the
    runtime holds them, activations, kernel scratch and allocator slack.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    before = _status_kb("VmRSS")
    runner = _Runner(session(blob, threads), payload["mean"], payload["std"],
                     int(payload["num_classes"]))
    runner.logits(runner.inputs(rows))
    after = _status_kb("VmHWM")
    del runner
    if before is None or after is None:
        return None
    return max(0, after - before) / 1024


def measure_job(payload: dict, workdir: Path | str) -> dict:
    """Validate and measure an exported graph; predict the evaluation images with it.

    Args:
        payload: ``onnx_path``, ``images_path`` (both mapped read-only),
            ``eval_indices``, ``mean``, ``std``, ``eval_batch_size``, ``num_classes``,
            ``image_size``, ``check_positions`` (positions into ``eval_indices`` for the
            batch check, chosen by the parent); optional ``threads`` (1: prediction
            session), ``profile_threads`` (1: latency session), ``warmup`` (10) and
            ``iters`` (50).
        workdir: The job's private folder (unused).

    Returns:
        ``{"predictions", "hardware" (HardwareReport fields), "batch_check", "timings"}``,
        or ``{"failure": {"stage", "reason"}}`` with stage "export" (the graph is not
        acceptable or ONNX Runtime cannot run it) or "invalid" (batch check, cost not
        linear in the batch size).
    """
    t = {"job_start": time.time()}
    size, n_cls = int(payload["image_size"]), int(payload["num_classes"])
    threads = max(1, int(payload.get("threads", 1)))
    profile_threads = max(1, int(payload.get("profile_threads", 1)))
    warmup, iters = int(payload.get("warmup", 10)), max(1, int(payload.get("iters", 50)))
    images, idx, check = _inputs(payload, size)
    costed = _graph_cost(payload["onnx_path"], size, n_cls, t)
    if isinstance(costed, dict):
        return costed
    blob, cost = costed
    try:
        runtime_peak = _runtime_peak_mb(blob, profile_threads, images[idx[:1]], payload)
        runner = _Runner(session(blob, threads), payload["mean"], payload["std"], n_cls)
        t["session"] = time.time()
        bs = max(1, int(payload["eval_batch_size"]))
        logits = _predict(runner, images, idx, bs, n_cls)
        t["predicted"] = time.time()
        singles = [runner.inputs(images[idx[p : p + 1]]) for p in check]
        max_diff, bad = _batch_check(runner, check, singles, logits)
        if bad is not None:
            return _failure("invalid", "the model's output for an image depends on the batch "
                            f"size: evaluation image {bad[0]} gives logits differing by "
                            f"{bad[1]:.3g} at batch 1 and inside a batch of {bs}; every image "
                            "must be computed independently of the batch")
        t["batch_checked"] = time.time()
        lat_runner = runner if profile_threads == threads else _Runner(
            session(blob, profile_threads), payload["mean"], payload["std"], n_cls)
        xs = singles or [runner.inputs(images[idx[:1]])]
        times = _latency(lat_runner, xs, warmup, iters)
        t["timed"] = time.time()
    except GraphError as e:
        return _failure("export", f"the exported ONNX graph is inconsistent: {e}")
    except MemoryError as e:
        return _failure("memory", f"out of memory in ONNX Runtime: {e}")
    except Exception as e:  # noqa: BLE001 - ORT's own errors (invalid graph, failed kernel)
        return _failure("export", "ONNX Runtime cannot run the exported graph: "
                        f"{type(e).__name__}: {str(e)[:600]}")
    return {"predictions": logits.argmax(1).astype(np.int64).tolist(),
            "hardware": _hardware(cost, times, profile_threads, size, runtime_peak).model_dump(),
            "batch_check": {"n": len(check), "max_abs_diff": max_diff, "rtol": BATCH_RTOL,
                            "atol": BATCH_ATOL},
            "timings": t}


def _inputs(payload: dict, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map the images read-only; the evaluation rows and the batch-check positions."""
    images = np.load(payload["images_path"], mmap_mode="r")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise ValueError(f"images must be (N,3,{size},{size}) uint8, got {images.shape}")
    idx = np.asarray(payload["eval_indices"], dtype=np.int64)
    check = np.asarray(payload.get("check_positions", []), dtype=np.int64)
    if len(idx) == 0 or (len(check) and (check.min() < 0 or check.max() >= len(idx))):
        raise ValueError("eval_indices empty or check_positions out of range")
    return images, idx, check


def _graph_cost(onnx_path: str, size: int, n_cls: int, t: dict[str, float]
                ) -> tuple[bytes, GraphCost] | dict:
    """Load, validate and cost the graph at batch 1 (FLOPs checked linear in the batch).

    Returns:
        ``(the validated graph's bytes, its cost)``, or a failure dict.
    """
    try:
        model = load_graph(onnx_path)
        validate_graph(model, size, n_cls)
        t["validated"] = time.time()
        cost = graph_cost(model, 1)
        flops2 = graph_flops(model, static_shapes(model, 2))
        t["costed"] = time.time()
    except GraphError as e:
        return _failure("export", f"the exported ONNX graph cannot be measured: {e}")
    if flops2 != 2 * cost.flops:
        return _failure("invalid", f"the graph's FLOPs do not grow with the batch size "
                        f"(batch 1: {cost.flops:,}, batch 2: {flops2:,}); every image must "
                        "take the same computation whatever the batch size")
    return model.SerializeToString(), cost  # the very graph that was validated and costed


def _predict(runner: _Runner, images: np.ndarray, idx: np.ndarray, bs: int,
             n_cls: int) -> np.ndarray:
    """Logits of rows ``idx`` in batches as ``tools.train.predict`` forms them.

    Rows in ascending order, in chunks of the evaluation batch size, results scattered back.
    """
    order = np.argsort(idx, kind="stable")
    logits = np.empty((len(idx), n_cls), dtype=np.float32)
    for s in range(0, len(idx), bs):
        sel = order[s : s + bs]
        logits[sel] = runner.logits(runner.inputs(images[idx[sel]]))
    return logits


def _batch_check(runner: _Runner, check: np.ndarray, singles: list[np.ndarray],
                 logits: np.ndarray) -> tuple[float, tuple[int, float] | None]:
    """Compare batch-1 logits of the checked images with their logits inside a batch.

    Returns:
        The largest finite difference and the worst mismatch ``(position, difference)``
        (NaN counts as worst), or None when every image matches.
    """
    max_diff, bad = 0.0, None
    for p, x in zip(check, singles, strict=True):
        one = runner.logits(x)[0]
        diff = float(np.max(np.abs(one - logits[p])))  # NaN when either side is
        if not np.allclose(one, logits[p], rtol=BATCH_RTOL, atol=BATCH_ATOL,
                           equal_nan=True) and (bad is None or not diff <= bad[1]):
            bad = (int(p), diff)
        if np.isfinite(diff):
            max_diff = max(max_diff, diff)
    return max_diff, bad


def _hardware(cost: GraphCost, times: np.ndarray, profile_threads: int, size: int,
              runtime_peak: float | None) -> HardwareReport:
    """Build the hardware report from the graph's cost and the batch-1 latencies."""
    med, p90 = float(np.median(times)), float(np.percentile(times, 90))
    return HardwareReport(
        params=cost.params, size_mb=cost.size_bytes / MB, flops=cost.flops,
        macs=cost.flops // 2, peak_activation_mb=cost.peak_activation_bytes / MB,
        latency_ms_median=med, latency_ms_p90=p90,
        latency_device=f"cpu (onnxruntime {ort.__version__}, {profile_threads} thread"
                       + ("s)" if profile_threads > 1 else ")"),
        threads=profile_threads, input_shape=[1, 3, size, size],
        onnx_latency_ms_median=med, onnx_latency_ms_p90=p90,
        measured_by=MEASURED_BY, graph_ops=cost.ops, runtime_peak_mb=runtime_peak,
    )


def check_job(payload: dict, workdir: Path | str) -> dict:
    """Validate a graph and run it once on a zero image (a delivered file's smoke test).

    Args:
        payload: ``onnx_path`` (mapped read-only), ``image_size``, ``num_classes``.
        workdir: The job's private folder (unused).

    Returns:
        ``{"check": "ok"}`` or ``{"check": <what is wrong>}``.
    """
    size, n_cls = int(payload["image_size"]), int(payload["num_classes"])
    try:
        model = load_graph(payload["onnx_path"])
        validate_graph(model, size, n_cls)
        sess = session(model.SerializeToString(), 1)
        y = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, size, size),
                                                                 np.float32)})[0]
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return {"check": f"{type(e).__name__}: {str(e)[:400]}"}
    ok = tuple(y.shape) == (1, n_cls)
    return {"check": "ok" if ok else f"unexpected output shape {tuple(y.shape)}"}
