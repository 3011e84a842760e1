"""Hardware cost of a PyTorch model in-process: size, FLOPs, peak activations, latency.

Everything is measured at batch 1 in eval mode under ``torch.no_grad`` (inference on an
edge device). ONNX Runtime, when installed, gives the deployment-runtime latency.

For trusted models only (tests, baselines, notebooks): these functions run the model's
own Python, which can report anything it likes. Candidate evaluations never use them;
their numbers come from the exported ONNX graph in the trusted measure job
(``tools/measure.py`` with the counters of ``evaluation/onnx_cost.py``), which count FLOPs
with the same convention as :func:`count_flops`.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from evaluation.report import HardwareReport

__all__ = ["profile_model", "count_flops", "peak_activation_bytes"]

MB = 2**20  # sizes are reported in MiB (2**20 bytes), like torch.cuda's memory stats


class _LiveBytes(TorchDispatchMode):
    """Track the bytes of live tensor storages created during a forward pass.

    Every tensor an aten op returns is recorded by its storage (a C++ weak reference,
    so tracking never extends a lifetime). After each op the bytes of the storages still
    alive are summed and the maximum is kept. Weights and buffers are never created
    inside the mode, so they are not counted.

    This is an estimate of the allocator's view: scratch memory used *inside* a kernel
    (e.g. oneDNN workspaces, im2col buffers) is invisible to the dispatcher, and
    allocator rounding/caching is ignored. It does count every activation the Python or
    aten level keeps alive, including the input, outputs of in-place chains once, and
    views sharing a storage once.
    """

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude = exclude  # storage addresses of weights and buffers
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Drop storages freed meanwhile first: a new one may reuse a freed address.
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        for t in tree_leaves(out):
            if (
                isinstance(t, torch.Tensor)
                and t.device.type != "meta"
                and t.layout == torch.strided
            ):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live and key not in self.exclude:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def peak_activation_bytes(model: torch.nn.Module, example: torch.Tensor) -> int:
    """Peak bytes of live activations during one no-grad forward pass.

    On CUDA: ``torch.cuda.max_memory_allocated() - memory_allocated_before`` around the
    forward pass (weights are already resident, so only activations and workspaces
    count). On other devices: the dispatcher-level estimate of :class:`_LiveBytes`
    (peak over ops of the summed size of live storages returned by ops during the pass,
    weights and buffers excluded, input included; kernel-internal scratch memory is not
    seen).

    Args:
        model: The model, already on ``example``'s device and in eval mode.
        example: An input tensor (its shape is used; its values do not matter).

    Returns:
        Peak activation bytes.
    """
    shape, dtype, device = tuple(example.shape), example.dtype, example.device
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            x = torch.randn(shape, dtype=dtype, device=device)
            model(x)
            torch.cuda.synchronize(device)
            return max(0, torch.cuda.max_memory_allocated(device) - before)
        weights = {
            t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())
        }
        tracker = _LiveBytes(weights)
        with tracker:
            # The input is created inside the mode so that it counts as an activation.
            x = torch.randn(shape, dtype=dtype, device=device)
            model(x)
        return tracker.peak


def count_flops(model: torch.nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass, by ``torch.utils.flop_counter.FlopCounterMode``.

    The counter uses 2 FLOPs per multiply-accumulate for convolutions and matrix
    products (so ``MACs = FLOPs / 2``) and ignores element-wise ops, bias additions,
    normalisation and pooling, like most published FLOP figures.

    Args:
        model: The model.
        example: The input.

    Returns:
        Total FLOPs.
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    return int(counter.get_total_flops())


def _timed(step, warmup: int, iters: int, sync=None) -> np.ndarray:
    """Wall-clock milliseconds of ``iters`` calls of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    if sync:
        sync()
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        step()
        if sync:
            sync()
        times[i] = (time.perf_counter() - t0) * 1e3
    return times


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export with the TorchScript exporter, falling back to the dynamo exporter.

    The TorchScript path (``dynamo=False``) takes well under a second for a small CNN;
    the dynamo exporter takes several seconds but handles code TorchScript cannot trace.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices from the exporters
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17)
        except Exception:  # noqa: BLE001 - any exporter failure -> try the other one
            torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False)


def _onnx_latency(
    model: torch.nn.Module, shape: Sequence[int], threads: int, warmup: int, iters: int
) -> np.ndarray | None:
    """Batch-1 latency (ms) in ONNX Runtime on the CPU; ``None`` when unavailable or failing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    try:
        cpu_model = model if _device_of(model).type == "cpu" else copy.deepcopy(model).cpu()
        example = torch.randn(tuple(shape))
        with tempfile.TemporaryDirectory(prefix="flnas-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            _export_onnx(cpu_model, example, path)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: example.numpy()}
        return _timed(lambda: sess.run(None, feed), warmup, iters)
    except Exception:  # noqa: BLE001 - a failed export must not fail the profile
        return None


def _device_of(model: torch.nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def profile_model(
    model: torch.nn.Module,
    input_shape: Sequence[int] = (1, 3, 64, 64),
    *,
    threads: int = 1,
    warmup: int = 10,
    iters: int = 50,
    device: str = "cpu",
    onnx: bool = True,
) -> HardwareReport:
    """Measure a model's hardware cost at batch 1 (docs/metrics.md).

    * ``params``: trainable parameters, ``sum(p.numel() for p if p.requires_grad)``.
    * ``size_mb``: bytes of all parameters and buffers / 2**20.
    * ``flops``: :func:`count_flops` (FlopCounterMode); ``macs = flops // 2``.
    * ``peak_activation_mb``: :func:`peak_activation_bytes` / 2**20 (CUDA: measured by
      the allocator; CPU: a dispatcher-level estimate, see there).
    * ``latency_ms_median`` / ``latency_ms_p90``: median and 90th percentile of ``iters``
      timed forward passes after ``warmup`` untimed ones, eval mode, no grad, with
      ``torch.set_num_threads(threads)`` (restored afterwards); on CUDA each pass ends with
      ``torch.cuda.synchronize``.
    * ``onnx_latency_ms_*``: the same in ONNX Runtime (CPU, ``threads`` intra-op threads,
      sequential execution) when ``onnx`` is true and onnxruntime is importable; ``None``
      when unavailable or when export fails.

    The model is put in eval mode on ``device`` for the measurement; its original device
    and train/eval mode are restored before returning.

    Args:
        model: The model to profile.
        input_shape: Input shape, batch first (batch 1 for the latency figures).
        threads: CPU threads for PyTorch and ONNX Runtime.
        warmup: Untimed passes before timing.
        iters: Timed passes.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        onnx: Also time ONNX Runtime.

    Returns:
        The hardware report.

    Raises:
        ValueError: On invalid arguments or an unavailable device.
    """
    if threads < 1 or iters < 1 or warmup < 0:
        raise ValueError(
            f"need threads >= 1, iters >= 1, warmup >= 0 (got {threads}, {iters}, {warmup})"
        )
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    shape = tuple(int(s) for s in input_shape)

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(
        t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())
    )

    original_device, was_training = _device_of(model), model.training
    saved_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        model.to(dev).eval()
        example = torch.randn(shape, device=dev)
        flops = count_flops(model, example)
        peak = peak_activation_bytes(model, example)
        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
        with torch.no_grad():
            times = _timed(lambda: model(example), warmup, iters, sync)
        onnx_times = _onnx_latency(model, shape, threads, warmup, iters) if onnx else None
    finally:
        torch.set_num_threads(saved_threads)
        model.to(original_device).train(was_training)

    def stats(t: np.ndarray | None) -> tuple[float | None, float | None]:
        if t is None:
            return None, None
        return float(np.median(t)), float(np.percentile(t, 90))

    med, p90 = stats(times)
    onnx_med, onnx_p90 = stats(onnx_times)
    return HardwareReport(
        params=int(params),
        size_mb=size / MB,
        flops=flops,
        macs=flops // 2,
        peak_activation_mb=peak / MB,
        latency_ms_median=med,
        latency_ms_p90=p90,
        latency_device=_device_name(dev),
        threads=threads,
        input_shape=list(shape),
        onnx_latency_ms_median=onnx_med,
        onnx_latency_ms_p90=onnx_p90,
    )
