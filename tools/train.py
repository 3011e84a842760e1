"""The one fixed training recipe every candidate gets.

Every candidate is trained with the same :class:`Recipe` so that reports compare
architectures, not tuning effort: AdamW, linear warm-up then cosine decay, a seeded
class-balanced sampler, random flips done on uint8 batches in torch, per-channel
normalisation with the dataset mean/std, and bf16 autocast where the hardware has native
bf16 (see :func:`resolve_amp`).

The worker-side jobs that call it live in ``tools/jobs.py``; how batches are drawn,
augmented and normalised is ``tools/batches.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from evaluation.report import TrainingStats
from tools.adamw import optimiser
from tools.batches import (
    Normalizer,
    autocast,
    epoch_order,
    flip,
    lr_lambda,
    param_groups,
)

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

    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    warmup_frac: float = Field(default=0.05, ge=0, le=0.5,
                               description="Linear warm-up share of steps.")
    balanced_sampling: bool = True
    sampling: Literal["sqrt", "inverse"] = "sqrt"
    hflip: bool = True
    vflip: bool = True
    seed: int = 0
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool = True
    threads: int | None = Field(default=None, ge=1,
                                description="torch intra-op threads; None = default.")
    max_train_seconds: float | None = Field(
        default=None, gt=0, description="Stop training after this long and record stopped_early."
    )
    eval_batch_size: int = Field(default=256, ge=1)


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
        run = _Run(model, images, train_idx, train_labels, recipe, mean, std, device)
        return _train(run, on_epoch)
    finally:  # a process-wide setting: do not leak it into the caller
        torch.set_num_threads(saved_threads)


class _Run:
    """One training run: its data on the device, optimiser, schedule and loss checks.

    Set up in the order the recipe's seeds are drawn (global torch seed, the numpy
    generator of the sampler, the torch generator of the flips), so a seed gives the same
    run every time.
    """

    def __init__(self, model: torch.nn.Module, images: np.ndarray, train_idx: np.ndarray,
                 train_labels: np.ndarray, recipe: Recipe, mean: Any, std: Any,
                 device: str) -> None:
        train_idx = np.asarray(train_idx, dtype=np.int64)
        labels_np = np.asarray(train_labels, dtype=np.int64)
        if len(train_idx) != len(labels_np) or len(train_idx) < 2:
            raise ValueError(f"need >= 2 aligned train indices/labels, got {len(train_idx)}/"
                             f"{len(labels_np)}")
        torch.manual_seed(recipe.seed)  # dropout and anything else drawing from the global RNG
        self.rng = np.random.default_rng(recipe.seed)
        self.gen = torch.Generator().manual_seed(recipe.seed)
        self.amp = resolve_amp(recipe.amp, device)
        self.is_cuda = device.startswith("cuda")
        self.model, self.images, self.recipe, self.device = model, images, recipe, device
        # Rows in file order: sequential reads from the memory map; labels follow.
        sort = np.argsort(train_idx, kind="stable")
        self.train_idx, self.labels_np = train_idx[sort], labels_np[sort]
        n = len(train_idx)
        self.data: torch.Tensor | None = None
        if n * int(np.prod(images.shape[1:])) <= _CONTIGUOUS_MAX_BYTES:
            data = torch.from_numpy(np.ascontiguousarray(images[self.train_idx]))
            # On CUDA gather on the GPU: no host->device copy per step.
            self.data = data.to(device) if self.is_cuda else data
        self.labels = torch.from_numpy(self.labels_np).to(device)
        self.norm = Normalizer(mean, std, device, recipe.channels_last)
        model.to(device)
        if recipe.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        model.train()
        self.bs = min(recipe.batch_size, n)
        self.steps_per_epoch = max(1, n // self.bs)  # drop the ragged tail: BatchNorm fails on 1
        self.total = self.steps_per_epoch * recipe.epochs
        self.opt = optimiser(
            param_groups(model, recipe.weight_decay), recipe.lr,
            lr_lambda(self.total, max(1, round(recipe.warmup_frac * self.total))), device)
        # On CUDA reading the loss every step would serialise the GPU; check in chunks.
        self.check_every = 25 if self.is_cuda else 1
        self.losses: list[float] = []  # every step's loss, checked for finiteness
        self.window: list[torch.Tensor] = []  # losses not yet read back from the device
        self.step = 0
        self.t_start = self.t_warm = time.perf_counter()

    def check(self, epoch: int) -> None:
        """Read the pending losses back; raise :class:`Diverged` at the first non-finite."""
        if not self.window:
            return
        vals = torch.stack(self.window).cpu()
        self.window.clear()
        bad = (~torch.isfinite(vals)).nonzero()
        if len(bad):
            k = int(bad[0])
            bad_step = self.step - len(vals) + k + 1
            raise Diverged(
                f"training loss became {float(vals[k])} at epoch {epoch}, step {bad_step} "
                f"of {self.total} (lr {self.recipe.lr:g})", epoch=epoch, step=bad_step)
        self.losses.extend(vals.tolist())

    def batch(self, pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (uint8, flipped as the recipe says) and labels at subset positions ``pos``."""
        if self.data is not None:
            pos_t = torch.from_numpy(pos)
            xb = self.data.index_select(0, pos_t.to(self.data.device))
        else:
            pos = np.sort(pos)  # train_idx is sorted, so this reads rows in file order
            pos_t = torch.from_numpy(pos)
            xb = torch.from_numpy(self.images[self.train_idx[pos]])
        if self.recipe.hflip:
            xb = flip(xb, 3, self.gen)
        if self.recipe.vflip:
            xb = flip(xb, 2, self.gen)
        return xb, self.labels.index_select(0, pos_t.to(self.labels.device))

    def epoch(self, epoch: int) -> bool:
        """Run one epoch of optimiser steps; True when ``max_train_seconds`` cut it short."""
        order = epoch_order(self.labels_np, self.recipe, self.rng)
        limit = self.recipe.max_train_seconds
        for b in range(self.steps_per_epoch):
            xb, yb = self.batch(order[b * self.bs : (b + 1) * self.bs])
            with autocast(self.amp, self.device):
                logits = self.model(self.norm(xb))
            loss = F.cross_entropy(logits.float(), yb,
                                   label_smoothing=self.recipe.label_smoothing)
            self.step += 1
            self.window.append(loss.detach())
            if self.step % self.check_every == 0:
                self.check(epoch)  # before the step: never apply a non-finite update
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()  # and the learning-rate schedule
            if self.step == 1:  # first step = one-off kernel selection / allocation warm-up
                if self.is_cuda:
                    torch.cuda.synchronize()
                self.t_warm = time.perf_counter()
            if limit is not None and time.perf_counter() - self.t_start > limit:
                return True
        return False

    def stats(self, epochs_run: int, stopped: bool) -> TrainingStats:
        """Return the run's statistics (see :func:`train`)."""
        if self.is_cuda:
            torch.cuda.synchronize()
        t_end = time.perf_counter()
        elapsed = t_end - self.t_start
        step, bs, losses = self.step, self.bs, self.losses
        log_every = max(1, self.total // 20)
        # Steady-state throughput: steps after the first (warm-up) one, unless there is one.
        ips = (step - 1) * bs / (t_end - self.t_warm) if step > 1 and t_end > self.t_warm \
            else step * bs / max(elapsed, 1e-9)
        return TrainingStats(
            epochs=epochs_run, steps=step, images_per_s=ips, train_seconds=elapsed,
            final_loss=float(np.mean(losses[-self.steps_per_epoch:])),
            loss_curve=[float(np.mean(losses[i : i + log_every]))
                        for i in range(0, len(losses), log_every)],
            device=self.device, amp=self.amp, stopped_early=stopped)


def _train(run: _Run, on_epoch: Callable[[dict], None] | None) -> TrainingStats:
    epochs_run, stopped = 0, False
    for epoch in range(1, run.recipe.epochs + 1):
        epochs_run = epoch
        t_epoch, first = time.perf_counter(), run.step
        stopped = run.epoch(epoch)
        run.check(epoch)
        if on_epoch is not None:
            dt = time.perf_counter() - t_epoch
            on_epoch({"epoch": epoch, "epochs": run.recipe.epochs,
                      "loss": float(np.mean(run.losses[first:])),
                      "images_per_s": (run.step - first) * run.bs / max(dt, 1e-9),
                      "seconds": dt})
        if stopped:
            break
    return run.stats(epochs_run, stopped)


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
    norm = Normalizer(mean, std, device, recipe.channels_last)
    model.to(device).eval()
    out = np.empty(len(idx), dtype=np.int64)
    # Read the memmap in ascending row order (sequential I/O), scatter back afterwards.
    order = np.argsort(idx, kind="stable")
    for s in range(0, len(idx), recipe.eval_batch_size):
        sel = order[s : s + recipe.eval_batch_size]
        xb = torch.from_numpy(np.ascontiguousarray(images[idx[sel]]))
        with autocast(amp, device):
            logits = model(norm(xb))
        out[sel] = logits.float().argmax(1).cpu().numpy()
    return out
