"""Typed results shared by the tools, the graph and the agents.

Every number an agent or a user sees about a candidate travels in one
:class:`EvaluationReport`. No process that runs candidate code builds this object or
any number in it: the worker trains and exports an ONNX graph, a separate measure job
that runs no candidate code predicts with that graph and measures its cost, and the
parent computes accuracy and fairness from labels neither process saw (docs/security.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FailureStage = Literal["gate", "train", "diverged", "export", "timeout", "memory", "crash",
                       "invalid"]


class Budgets(BaseModel):
    """Device budgets; ``None`` means unconstrained. Priority order is the field order."""

    max_latency_ms: float | None = Field(default=None, description="Batch-1 median latency (ms).")
    max_memory_mb: float | None = Field(
        default=None, description="Peak activation memory at batch 1 plus weights (MB)."
    )
    max_params: int | None = Field(default=None, description="Trainable parameters.")
    max_flops: int | None = Field(default=None, description="FLOPs of one batch-1 forward pass.")


class GroupMetric(BaseModel):
    """Accuracy of one demographic group."""

    group: str
    count: int
    accuracy: float
    balanced_accuracy: float | None = None
    gap_interval: tuple[float, float] | None = Field(
        default=None, description="95 % bootstrap interval of (overall accuracy - this group's "
                          "accuracy); one that includes 0 is not a measurable lag.")
    expected_accuracy: float | None = Field(
        default=None, description="The accuracy this group would have if the model recalled "
                                  "every class as well as over all groups: its class mix "
                                  "times the overall per-class recall (docs/metrics.md#class-mix).")


class AttributeFairness(BaseModel):
    """Fairness of one sensitive attribute (sex, age, or their intersection).

    Samples whose attribute is missing are excluded here only (``n_missing``).
    """

    attribute: str
    groups: list[GroupMetric]
    n_missing: int = 0
    worst_group: str
    worst_group_accuracy: float
    # Every gap is None when undefined (fewer than two groups; for the rate gaps, no class
    # in the class set, see evaluation.rates). Never 0.0, which would read "fair".
    unfairness: float | None = Field(description="mean_g |acc_g - acc_overall|")
    max_gap: float | None = Field(description="max_g acc_g - min_g acc_g")
    max_gap_interval: tuple[float, float] | None = Field(
        default=None, description="95 % bootstrap interval of max_gap (resampling within groups).")
    class_mix_gap: float | None = Field(
        default=None, description="max_g - min_g of the groups' expected_accuracy: the gap their "
                                  "class mix alone gives (docs/metrics.md#class-mix)")
    within_class_gap: float | None = Field(
        default=None, description="max_g - min_g of (acc_g - expected_accuracy_g): the gap left "
                                  "once each group's class mix is accounted for")
    eopp0: float | None = Field(description="TNR gap, one-vs-rest, averaged over the class set")
    eopp1: float | None = Field(description="TPR gap, one-vs-rest, averaged over the class set")
    eodd: float | None = Field(description="(TPR gap + FPR gap) / 2, averaged over the class set")
    demographic_parity_difference: float | None
    equalized_odds_difference: float | None
    rate_classes: list[int] | None = Field(
        default=None,
        description="The class set the rate gaps average over (see evaluation.rates).")
    intervals: dict[str, tuple[float, float]] | None = Field(
        default=None, description="Bootstrap intervals per metric name, when requested."
    )


#: How close to chance balanced accuracy counts as a collapsed training.
COLLAPSE_TOL = 0.01


class ClassificationMetrics(BaseModel):
    """Overall classification quality on one split."""

    n: int
    accuracy: float
    balanced_accuracy: float = Field(description="Mean per-class recall (ISIC metric).")
    per_class_recall: dict[str, float]
    confusion: list[list[int]]

    @property
    def collapsed(self) -> bool:
        """Tell whether the model learned nothing: chance balanced accuracy or one class.

        Chance is 1 over the classes present in the split (within
        :data:`COLLAPSE_TOL`); a model that predicts one class for every image has exactly
        that. Such a run says nothing about its architecture (docs/metrics.md#noise).
        """
        present = sum(1 for row in self.confusion if sum(row))
        if present and abs(self.balanced_accuracy - 1 / present) <= COLLAPSE_TOL:
            return True
        predicted = [sum(col) for col in zip(*self.confusion, strict=True)] \
            if self.confusion else []
        return sum(1 for n in predicted if n) == 1


class HardwareReport(BaseModel):
    """Cost of one candidate on the target device.

    In an evaluation every field is measured by the trusted measure job
    (``tools/measure.py``) on the exported ONNX graph, in a process that runs no candidate
    code (``measured_by`` says so).
    """

    params: int
    size_mb: float
    flops: int
    macs: int
    peak_activation_mb: float
    latency_ms_median: float
    latency_ms_p90: float
    latency_device: str
    threads: int
    input_shape: list[int]
    onnx_latency_ms_median: float | None = None
    onnx_latency_ms_p90: float | None = None
    measured_by: str = Field(
        default="", description="Who measured these numbers; empty in reports from before the "
                        "trusted measure job.")
    graph_ops: dict[str, int] = Field(
        default_factory=dict, description="Operator counts of the measured ONNX graph.")
    runtime_peak_mb: float | None = Field(
        default=None, description="Resident memory ONNX Runtime added to load the graph and run it "
                          "at batch 1 (weights, activations, kernel scratch, allocator "
                          "slack), from the process's high-water mark; None where the "
                          "kernel cannot reset it. Reported beside memory_mb, not budgeted.")

    @property
    def memory_mb(self) -> float:
        """Weights plus peak activations: what must fit on the device."""
        return self.size_mb + self.peak_activation_mb


class TrainingStats(BaseModel):
    """What happened during training with the fixed recipe."""

    epochs: int
    steps: int
    images_per_s: float
    train_seconds: float
    final_loss: float
    loss_curve: list[float] = Field(default_factory=list)
    device: str
    amp: str
    stopped_early: bool = Field(
        default=False,
        description="Cut by the recipe's max_train_seconds before the last epoch ended."
    )


class EvaluationReport(BaseModel):
    """Everything measured about one candidate on one split."""

    candidate_id: str | None = None
    code_hash: str
    status: Literal["ok", "failed"]
    failure_stage: FailureStage | None = None
    failure_reason: str | None = None
    split: Literal["val", "test"] = "val"
    metrics: ClassificationMetrics | None = None
    fairness: dict[str, AttributeFairness] = Field(default_factory=dict)
    hardware: HardwareReport | None = None
    training: TrainingStats | None = None
    prediction_agreement: float | None = Field(
        default=None, description="Share of evaluation images on which the scored ONNX Runtime "
                          "predictions equal the worker's PyTorch predictions.")
    exporter: str | None = Field(default=None, description="ONNX exporter that wrote the graph.")
    budgets: Budgets = Field(default_factory=Budgets)
    violations: list[str] = Field(default_factory=list)
    isolation: list[str] = Field(default_factory=list)
    recipe: dict = Field(default_factory=dict)
    data_fingerprint: str = ""
    wall_s: float = 0.0
    attempts: int = Field(default=1, ge=1, description="Evaluations run for this report: more "
                          "than 1 when a worker was lost to an outside cause and retried.")

    @property
    def ok(self) -> bool:
        """True when the candidate trained and was measured."""
        return self.status == "ok"


def budget_violations(hw: HardwareReport, budgets: Budgets) -> list[str]:
    """Name each budget the hardware profile exceeds, with the numbers.

    Args:
        hw: The measured hardware profile.
        budgets: The device budgets.

    Returns:
        Human-readable violations in budget priority order, empty when all fit.
    """
    out: list[str] = []
    if budgets.max_latency_ms is not None and hw.latency_ms_median > budgets.max_latency_ms:
        out.append(f"latency {hw.latency_ms_median:.2f} ms > {budgets.max_latency_ms:g} ms")
    if budgets.max_memory_mb is not None and hw.memory_mb > budgets.max_memory_mb:
        out.append(f"memory {hw.memory_mb:.2f} MB > {budgets.max_memory_mb:g} MB")
    if budgets.max_params is not None and hw.params > budgets.max_params:
        out.append(f"params {hw.params:,} > {budgets.max_params:,}")
    if budgets.max_flops is not None and hw.flops > budgets.max_flops:
        out.append(f"flops {hw.flops:,} > {budgets.max_flops:,}")
    return out
