"""The one fixed training recipe every candidate gets.

Every candidate is trained with the same :class:`Recipe` so that reports compare
architectures, not tuning effort: AdamW, linear warm-up then cosine decay, a seeded
class-balanced sampler, random flips done on uint8 batches in torch, per-channel
normalisation with the dataset mean/std, and bf16 autocast where the hardware has native
bf16 (see :func:`resolve_amp`).

The worker-side jobs that call it live in ``tools/jobs.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from evaluation.report import TrainingStats

WEIGHTS_FILE = "weights.pt"

# Copy the training subset into one contiguous tensor when it is at most this big: one
# sequential read instead of scattered page faults from the memory map in epoch 1, and
# `index_select` on a tensor is the cheapest gather measured here (25 us vs ~45 us for a
# sorted fancy index into the memmap, per 64-image batch at 64x64; both are < 0.2 % of a
# training step). Bigger subsets are gathered from the memmap per batch instead.
_CONTIGUOUS_MAX_BYTES = 2 << 30


class Recipe(BaseModel):
    """The fixed training recipe (identical for every candidate).

    ``balanced_sampling`` draws each epoch ``len(train)`` samples with replacement, with
    per-sample weight ``n_c ** -p`` for a sample of class ``c`` (``n_c`` = class count):
    ``sampling="sqrt"`` is ``p = 1/2`` (class ``c`` gets a share proportional to
    ``sqrt(n_c)``, a compromise that oversamples rare classes without repeating each of
    them dozens of times per epoch), ``"inverse"`` is ``p = 1`` (every class equally
    likely: the share of class ``c`` is ``1/C``). Without it, each epoch is a seeded
    permutation.
    """

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    warmup_frac: float = Field(0.05, ge=0, le=0.5, description="Linear warm-up share of steps.")
    balanced_sampling: bool = True
    sampling: Literal["sqrt", "inverse"] = "sqrt"
    hflip: bool = True
    vflip: bool = True
    seed: int = 0
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool = True
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = default.")
    max_train_seconds: float | None = Field(
        None, gt=0, description="Stop training after this long and record stopped_early."
    )
    eval_batch_size: int = Field(256, ge=1)


class Diverged(RuntimeError):
    """Training produced a non-finite loss.

    Attributes:
        reason: Human-readable description (value, epoch, step).
        epoch: 1-based epoch where it happened.
        step: 1-based global optimiser step where it happened.
    """

    def __init__(self, reason: str, *, epoch: int, step: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.epoch = epoch
        self.step = step


def resolve_amp(amp: str, device: str) -> str:
    """Decide the autocast mode of a run.

    ``"auto"`` means bf16 on CUDA when the GPU supports it, and bf16 on CPU when oneDNN
    has native bf16 (AVX512-BF16 / AMX): ~1.8x faster training here with balanced
    accuracy on the synthetic set within noise of fp32 (see the train helper report).
    Everywhere else fp32.

    Args:
        amp: Recipe value ("auto", "bf16", "off").
        device: "cpu" or a CUDA device string.

    Returns:
        "bf16" or "off".
    """
    if amp != "auto":
        return amp
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "off"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "off"
    except (AttributeError, RuntimeError):
        return "off"


def _autocast(amp: str, device: str) -> torch.autocast:
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp == "bf16")


def sample_weights(labels: np.ndarray, sampling: str = "sqrt") -> np.ndarray:
    """Per-sample draw probabilities of the class-balanced sampler.

    ``w_i = n_{y_i} ** -p`` normalised to sum 1, with ``p = 0.5`` for "sqrt" and
    ``p = 1`` for "inverse" (see :class:`Recipe`).

    Args:
        labels: Integer class label per training sample.
        sampling: "sqrt" or "inverse".

    Returns:
        Probabilities aligned with ``labels``.
    """
    power = {"sqrt": 0.5, "inverse": 1.0}[sampling]
    counts = np.bincount(labels)
    w = counts[labels].astype(np.float64) ** -power
    return w / w.sum()


def epoch_order(
    labels: np.ndarray, recipe: Recipe, rng: np.random.Generator
) -> np.ndarray:
    """Positions (into the training subset) drawn for one epoch.

    Args:
        labels: Training labels.
        recipe: The recipe (balanced_sampling, sampling).
        rng: The run's seeded generator.

    Returns:
        ``len(labels)`` positions: a weighted draw with replacement when balanced, else
        a permutation.
    """
    n = len(labels)
    if recipe.balanced_sampling:
        return rng.choice(n, size=n, replace=True, p=sample_weights(labels, recipe.sampling))
    return rng.permutation(n)


class _Normalizer:
    """uint8 (N,3,H,W) -> normalised float, with optional seeded flips on the uint8."""

    def __init__(self, mean: Any, std: Any, device: str, channels_last: bool) -> None:
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        # (x/255 - mean) / std == x * scale - shift
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = mean_t / std_t
        self.device = device
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().mul_(self.scale).sub_(self.shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _flip(x: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(dim), x)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # No decay on biases and norm scales (1-D tensors): decaying them only hurts.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def train(
    model: torch.nn.Module,
    images: np.ndarray,
    train_idx: np.ndarray,
    train_labels: np.ndarray,
    recipe: Recipe,
    mean: Any,
    std: Any,
    device: str = "cpu",
    *,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainingStats:
    """Train ``model`` in place with the fixed recipe.

    Loss: cross-entropy with ``recipe.label_smoothing``. Schedule: learning rate
    ``lr * (s+1)/W`` for the first ``W = warmup_frac * T`` steps, then
    ``lr * (1 + cos(pi * (s-W)/(T-W))) / 2`` (``T`` = total steps).

    Args:
        model: The candidate, freshly built (its init should be seeded by the caller).
        images: (N,3,S,S) uint8 array, usually the read-only memory map of the cache.
        train_idx: Rows of ``images`` to train on.
        train_labels: Labels aligned with ``train_idx``.
        recipe: The recipe.
        mean: Per-channel mean on the 0..1 scale.
        std: Per-channel std on the 0..1 scale.
        device: "cpu" or "cuda[:i]".
        on_epoch: Called after each epoch with {"epoch", "epochs", "loss", "images_per_s",
            "seconds"}.

    Returns:
        The run's statistics (``stopped_early`` when ``max_train_seconds`` cut it).
        ``images_per_s`` is the steady state: the steps after the first, which carries
        one-off kernel selection and allocation; ``train_seconds`` covers all steps.

    Raises:
        Diverged: The loss became NaN or infinite.
        ValueError: Inconsistent inputs.
    """
    saved_threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        return _train(model, images, train_idx, train_labels, recipe, mean, std, device,
                      on_epoch)
    finally:  # a process-wide setting: do not leak it into the caller
        torch.set_num_threads(saved_threads)


def _train(
    model: torch.nn.Module,
    images: np.ndarray,
    train_idx: np.ndarray,
    train_labels: np.ndarray,
    recipe: Recipe,
    mean: Any,
    std: Any,
    device: str,
    on_epoch: Callable[[dict], None] | None,
) -> TrainingStats:
    train_idx = np.asarray(train_idx, dtype=np.int64)
    labels_np = np.asarray(train_labels, dtype=np.int64)
    if len(train_idx) != len(labels_np) or len(train_idx) < 2:
        raise ValueError(f"need >= 2 aligned train indices/labels, got {len(train_idx)}/"
                         f"{len(labels_np)}")
    torch.manual_seed(recipe.seed)  # dropout and anything else drawing from the global RNG
    rng = np.random.default_rng(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    amp = resolve_amp(recipe.amp, device)
    is_cuda = device.startswith("cuda")

    # Rows in file order: sequential reads from the memory map; labels follow.
    sort = np.argsort(train_idx, kind="stable")
    train_idx, labels_np = train_idx[sort], labels_np[sort]
    n = len(train_idx)
    if n * int(np.prod(images.shape[1:])) <= _CONTIGUOUS_MAX_BYTES:
        data: torch.Tensor | None = torch.from_numpy(np.ascontiguousarray(images[train_idx]))
        if is_cuda:
            data = data.to(device)  # gather on the GPU: no host->device copy per step
    else:
        data = None
    labels = torch.from_numpy(labels_np).to(device)
    norm = _Normalizer(mean, std, device, recipe.channels_last)

    model.to(device)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr)
    bs = min(recipe.batch_size, n)
    steps_per_epoch = max(1, n // bs)  # drop the ragged tail: BatchNorm fails on batch 1
    total = steps_per_epoch * recipe.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, max(1, round(recipe.warmup_frac * total)))
    )
    log_every = max(1, total // 20)
    # On CUDA reading the loss every step would serialise the GPU; check in chunks.
    check_every = 25 if is_cuda else 1

    losses: list[float] = []  # every step's loss, checked for finiteness
    window: list[torch.Tensor] = []  # losses not yet read back from the device
    step, epochs_run, stopped = 0, 0, False

    def check(epoch: int) -> None:
        if not window:
            return
        vals = torch.stack(window).cpu()
        window.clear()
        bad = (~torch.isfinite(vals)).nonzero()
        if len(bad):
            k = int(bad[0])
            bad_step = step - len(vals) + k + 1
            raise Diverged(
                f"training loss became {float(vals[k])} at epoch {epoch}, step {bad_step} "
                f"of {total} (lr {recipe.lr:g})",
                epoch=epoch,
                step=bad_step,
            )
        losses.extend(vals.tolist())

    t_start = t_warm = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        epochs_run = epoch
        order = epoch_order(labels_np, recipe, rng)
        t_epoch, first = time.perf_counter(), step
        for b in range(steps_per_epoch):
            pos = order[b * bs : (b + 1) * bs]
            if data is not None:
                pos_t = torch.from_numpy(pos)
                xb = data.index_select(0, pos_t.to(data.device))
            else:
                pos = np.sort(pos)  # train_idx is sorted, so this reads rows in file order
                pos_t = torch.from_numpy(pos)
                xb = torch.from_numpy(images[train_idx[pos]])
            if recipe.hflip:
                xb = _flip(xb, 3, gen)
            if recipe.vflip:
                xb = _flip(xb, 2, gen)
            yb = labels.index_select(0, pos_t.to(labels.device))
            with _autocast(amp, device):
                logits = model(norm(xb))
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=recipe.label_smoothing)
            step += 1
            window.append(loss.detach())
            if step % check_every == 0:
                check(epoch)  # before the step: never apply a non-finite update
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step == 1:  # first step = one-off kernel selection / allocation warm-up
                if is_cuda:
                    torch.cuda.synchronize()
                t_warm = time.perf_counter()
            limit = recipe.max_train_seconds
            if limit is not None and time.perf_counter() - t_start > limit:
                stopped = True
                break
        check(epoch)
        if on_epoch is not None:
            dt = time.perf_counter() - t_epoch
            on_epoch({"epoch": epoch, "epochs": recipe.epochs,
                      "loss": float(np.mean(losses[first:])),
                      "images_per_s": (step - first) * bs / max(dt, 1e-9), "seconds": dt})
        if stopped:
            break
    if is_cuda:
        torch.cuda.synchronize()
    t_end = time.perf_counter()
    elapsed = t_end - t_start
    # Steady-state throughput: steps after the first (warm-up) one, unless there is only one.
    ips = (step - 1) * bs / (t_end - t_warm) if step > 1 and t_end > t_warm else step * bs / (
        max(elapsed, 1e-9))
    return TrainingStats(
        epochs=epochs_run,
        steps=step,
        images_per_s=ips,
        train_seconds=elapsed,
        final_loss=float(np.mean(losses[-steps_per_epoch:])),
        loss_curve=[float(np.mean(losses[i : i + log_every]))
                    for i in range(0, len(losses), log_every)],
        device=device,
        amp=amp,
        stopped_early=stopped,
    )


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    images: np.ndarray,
    idx: np.ndarray,
    mean: Any,
    std: Any,
    device: str = "cpu",
    recipe: Recipe | None = None,
) -> np.ndarray:
    """Predicted class (argmax of the logits) for rows ``idx``, in eval mode.

    Args:
        model: Trained model.
        images: (N,3,S,S) uint8 array.
        idx: Rows to predict, in the order of the result.
        mean: Per-channel mean (0..1 scale).
        std: Per-channel std (0..1 scale).
        device: "cpu" or "cuda[:i]".
        recipe: Supplies eval_batch_size, amp and channels_last (default Recipe()).

    Returns:
        int64 array of predicted labels aligned with ``idx``.
    """
    recipe = recipe or Recipe()
    idx = np.asarray(idx, dtype=np.int64)
    amp = resolve_amp(recipe.amp, device)
    norm = _Normalizer(mean, std, device, recipe.channels_last)
    model.to(device).eval()
    out = np.empty(len(idx), dtype=np.int64)
    # Read the memmap in ascending row order (sequential I/O), scatter back afterwards.
    order = np.argsort(idx, kind="stable")
    for s in range(0, len(idx), recipe.eval_batch_size):
        sel = order[s : s + recipe.eval_batch_size]
        xb = torch.from_numpy(np.ascontiguousarray(images[idx[sel]]))
        with _autocast(amp, device):
            logits = model(norm(xb))
        out[sel] = logits.float().argmax(1).cpu().numpy()
    return out
