"""The Template's search space (Choices) as a genome, and its renderer.

FL-NAS (Qin et al., ASP-DAC 2024) gives the LLM a baseline DNN, the `Template`, and a
list of `Choices` it may change. Here the Template is a small CNN: a stem conv, stages of
blocks, global pooling, dropout and a linear classifier. A `Genome` is one point of that
space; `render` turns it into candidate code (the same form as every other candidate),
and `parse_genome` reads it back from the `GENOME = {...}` literal in that code. The
named moves along the Choices (`MUTATIONS`) live in `tasks/mutations.py`.

`python -m tasks.genome --write-template` regenerates `tasks/candidates/template.py`;
`--choices` prints the Choices as the prompts show them.
"""

from __future__ import annotations

import argparse
import ast
import math
import random
import textwrap
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks import pyast
from tasks.template_code import BODY, HEADER

# Ranges of the Choices: the single source for validation, CHOICES and the mutations.
MIN_WIDTH, MAX_WIDTH = 8, 512  # channel counts are multiples of 8 (SIMD- and GroupNorm-friendly)
MAX_STEM_WIDTH = 128
MAX_STAGES, MAX_DEPTH, MAX_BLOCKS = 6, 6, 16
MAX_DOWNSAMPLES = 5  # stride-2 convs in total: 32 px input -> 1 px, 64 px -> 2 px
KERNELS = (3, 5, 7)
MAX_EXPANSION = 6
MAX_DROPOUT = 0.5
DEFAULT_EXPANSION = 4  # inverted residuals added by a mutation (MobileNetV2 uses 6; 4 is lighter)
SE_REDUCTION = 4  # squeeze-excitation bottleneck: max(8, channels // 4)

BlockType = Literal["plain", "residual", "dwsep", "inverted_residual"]
NormType = Literal["batch", "group", "none"]
ActType = Literal["relu", "silu", "hardswish", "gelu"]
PoolType = Literal["avg", "max"]


def _check_width(value: int) -> int:
    if value % 8:
        raise ValueError(f"width {value} is not a multiple of 8")
    return value


class Stage(BaseModel):
    """A run of `depth` blocks of one type at one width; the first block applies `stride`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(ge=MIN_WIDTH, le=MAX_WIDTH)
    depth: int = Field(ge=1, le=MAX_DEPTH)
    kernel: Literal[3, 5, 7] = 3
    stride: Literal[1, 2] = 2
    block: BlockType = "plain"
    expansion: int = Field(default=1, ge=1, le=MAX_EXPANSION)
    se: bool = False

    _width = field_validator("width")(_check_width)

    @model_validator(mode="before")
    @classmethod
    def _expansion_only_for_mbconv(cls, data: Any) -> Any:
        # Expansion means nothing outside inverted residuals; pin it so equal models compare equal.
        if isinstance(data, dict) and data.get("block", "plain") != "inverted_residual":
            data = {**data, "expansion": 1}
        return data


class Genome(BaseModel):
    """One architecture of the Template's search space (see `CHOICES`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stem_width: int = Field(ge=MIN_WIDTH, le=MAX_STEM_WIDTH)
    stem_stride: Literal[1, 2] = 1
    stages: tuple[Stage, ...] = Field(min_length=1, max_length=MAX_STAGES)
    norm: NormType = "batch"
    act: ActType = "relu"
    pool: PoolType = "avg"
    dropout: float = Field(default=0.0, ge=0.0, le=MAX_DROPOUT)

    _stem_width = field_validator("stem_width")(_check_width)

    @field_validator("dropout")
    @classmethod
    def _round_dropout(cls, value: float) -> float:
        return round(value, 2)  # 0.1 + 0.2 must equal 0.3 after a round trip through code

    @model_validator(mode="after")
    def _check_totals(self) -> Genome:
        blocks = sum(s.depth for s in self.stages)
        if blocks > MAX_BLOCKS:
            raise ValueError(f"{blocks} blocks in total, at most {MAX_BLOCKS}")
        downsamples = (self.stem_stride == 2) + sum(s.stride == 2 for s in self.stages)
        if downsamples > MAX_DOWNSAMPLES:
            raise ValueError(f"{downsamples} stride-2 convs, at most {MAX_DOWNSAMPLES}")
        return self


# FL-NAS's baseline DNN: a plain VGG-style CNN, 4 conv stages 16-32-64-128, 3x3, BN, ReLU.
TEMPLATE_GENOME = Genome(
    stem_width=16,
    stem_stride=1,
    stages=(
        Stage(width=16, depth=1),
        Stage(width=32, depth=2),
        Stage(width=64, depth=2),
        Stage(width=128, depth=1),
    ),
    norm="batch",
    act="relu",
    pool="avg",
    dropout=0.1,
)

CHOICES: dict[str, dict[str, Any]] = {
    "stem_width": {"range": [MIN_WIDTH, MAX_STEM_WIDTH], "step": 8,
                   "doc": "channels of the 3x3 stem conv"},
    "stem_stride": {"values": [1, 2], "doc": "2 halves the resolution at once: ~4x fewer FLOPs"},
    "stages": {"range": [1, MAX_STAGES],
               "doc": f"stages in order, at most {MAX_BLOCKS} blocks and {MAX_DOWNSAMPLES} "
                      "stride-2 convs (stem included) in total"},
    "stage.width": {"range": [MIN_WIDTH, MAX_WIDTH], "step": 8, "doc": "output channels"},
    "stage.depth": {"range": [1, MAX_DEPTH], "doc": "blocks in the stage"},
    "stage.kernel": {"values": list(KERNELS), "doc": "spatial kernel of the block's k x k conv"},
    "stage.stride": {"values": [1, 2], "doc": "stride of the stage's first block"},
    "stage.block": {"values": {
        "plain": "conv-norm-act (VGG style)",
        "residual": "two k x k convs with an identity or 1x1 projection shortcut (ResNet)",
        "dwsep": "depthwise k x k then pointwise 1x1 (MobileNetV1): ~k*k fewer MACs",
        "inverted_residual": "1x1 expand, depthwise k x k, linear 1x1 project, identity "
                             "shortcut when shapes match (MBConv, MobileNetV2)",
    }},
    "stage.expansion": {"range": [1, MAX_EXPANSION],
                        "doc": "hidden width multiplier of inverted_residual blocks"},
    "stage.se": {"values": [False, True],
                 "doc": f"squeeze-excitation on each block's output (reduction {SE_REDUCTION})"},
    "norm": {"values": {"batch": "BatchNorm2d", "group": "GroupNorm, 8 groups (batch-size free)",
                        "none": "no normalisation (convs get a bias)"}},
    "act": {"values": ["relu", "silu", "hardswish", "gelu"], "doc": "activation everywhere"},
    "pool": {"values": ["avg", "max"], "doc": "global pooling before the classifier"},
    "dropout": {"range": [0.0, MAX_DROPOUT], "doc": "dropout before the linear classifier"},
}


def choices_text() -> str:
    """Render `CHOICES` as a bulleted list, for prompts."""
    lines = []
    for name, spec in CHOICES.items():
        doc = f" ({spec['doc']})" if "doc" in spec else ""
        values = spec.get("values")
        if isinstance(values, dict):
            lines.append(f"- {name}:{doc}")
            lines += [f"    - {k}: {v}" for k, v in values.items()]
        elif values is not None:
            lines.append(f"- {name}: {' | '.join(str(v) for v in values)}{doc}")
        else:
            lo, hi = spec["range"]
            step = f" step {spec['step']}" if "step" in spec else ""
            lines.append(f"- {name}: {lo}..{hi}{step}{doc}")
    return "\n".join(lines)


def genome_summary(genome: Genome) -> str:
    """One line describing a genome, e.g. for histories and traces."""

    def stage(s: Stage) -> str:
        block = {"inverted_residual": f"mb{s.expansion}", "residual": "res"}.get(s.block, s.block)
        return f"{s.width}x{s.depth} {block} k{s.kernel} s{s.stride}" + (" +se" if s.se else "")

    return (f"stem {genome.stem_width} s{genome.stem_stride} | "
            + ", ".join(stage(s) for s in genome.stages)
            + f" | {genome.norm} {genome.act} {genome.pool}pool dropout {genome.dropout}")


def _cost(genome: Genome, num_classes: int, image_size: int) -> tuple[int, int]:
    """(parameters, multiply-accumulates) of `render(genome)`'s model, counted layer by layer."""
    params = macs = 0
    extra = 1 if genome.norm == "none" else 2  # per channel: conv bias, or norm weight + bias

    def conv(cin: int, cout: int, k: int, side: int, groups: int = 1) -> None:
        nonlocal params, macs
        weights = cin // groups * cout * k * k
        params += weights + extra * cout
        macs += weights * side * side

    side = math.ceil(image_size / genome.stem_stride)  # "same" padding: ceil(size / stride)
    conv(3, genome.stem_width, 3, side)
    cin = genome.stem_width
    for s in genome.stages:
        for i in range(s.depth):
            stride, cout, k, side_in = (s.stride if i == 0 else 1), s.width, s.kernel, side
            side = math.ceil(side / stride)
            if s.block == "plain":
                conv(cin, cout, k, side)
            elif s.block == "residual":
                conv(cin, cout, k, side)
                conv(cout, cout, k, side)
                if stride != 1 or cin != cout:
                    conv(cin, cout, 1, side)
            elif s.block == "dwsep":
                conv(cin, cin, k, side, groups=cin)
                conv(cin, cout, 1, side)
            else:
                hidden = cin * s.expansion
                if s.expansion > 1:
                    conv(cin, hidden, 1, side_in)
                conv(hidden, hidden, k, side, groups=hidden)
                conv(hidden, cout, 1, side)
            if s.se:
                squeeze = max(8, cout // SE_REDUCTION)
                params += 2 * cout * squeeze + squeeze + cout
                macs += 2 * cout * squeeze
            cin = cout
    return params + cin * num_classes + num_classes, macs + cin * num_classes


def estimate_params(genome: Genome, num_classes: int) -> int:
    """Count the parameters of `render(genome)`'s model analytically (equals the built count)."""
    return _cost(genome, num_classes, 32)[0]


def estimate_macs(genome: Genome, image_size: int = 64, num_classes: int = 8) -> int:
    """Multiply-accumulates of one forward pass at batch 1, convolutions and classifier only.

    For each conv, MACs = (c_in / groups) * c_out * k^2 * H_out * W_out with
    H_out = ceil(H_in / stride); the classifier adds c_last * num_classes. Norms,
    activations and pooling are not counted (torch's FlopCounterMode reports 2 x MACs).
    """
    return _cost(genome, num_classes, image_size)[1]


def _grid(rng: random.Random, lo: int, hi: int, step: int = 1) -> int:
    """Draw uniformly from ``lo, lo + step, ..., hi``."""
    return lo + step * rng.randrange((hi - lo) // step + 1)


def _random_stage(rng: random.Random) -> dict[str, Any]:
    """Draw every Choice of one stage uniformly (expansion only for inverted residuals)."""
    block = rng.choice(("plain", "residual", "dwsep", "inverted_residual"))
    return {"width": _grid(rng, MIN_WIDTH, MAX_WIDTH, 8), "depth": _grid(rng, 1, MAX_DEPTH),
            "kernel": rng.choice(KERNELS), "stride": rng.choice((1, 2)), "block": block,
            "expansion": _grid(rng, 1, MAX_EXPANSION) if block == "inverted_residual" else 1,
            "se": rng.random() < 0.5}


def random_genome(rng: random.Random) -> Genome:
    """Draw a genome uniformly from the Choices (`CHOICES`).

    Each Choice is drawn independently and uniformly from its values or range (widths
    in steps of 8, dropout to the genome's two decimals); a draw that breaks a total
    (`MAX_BLOCKS` blocks, `MAX_DOWNSAMPLES` stride-2 convs) is drawn again whole, so
    the result is uniform over the valid combinations. About one draw in four is
    redrawn; no budget is applied here (callers filter with `estimate_params`).

    Args:
        rng: Seeded generator: equal seeds draw equal genomes.

    Returns:
        A valid genome; `render` of it parses back to it.
    """
    while True:
        stages = [_random_stage(rng) for _ in range(_grid(rng, 1, MAX_STAGES))]
        stem_stride = rng.choice((1, 2))
        if sum(s["depth"] for s in stages) > MAX_BLOCKS or \
                (stem_stride == 2) + sum(s["stride"] == 2 for s in stages) > MAX_DOWNSAMPLES:
            continue  # outside the totals: redraw everything, keeping the draw uniform
        return Genome(stem_width=_grid(rng, MIN_WIDTH, MAX_STEM_WIDTH, 8),
                      stem_stride=stem_stride, stages=tuple(Stage(**s) for s in stages),
                      norm=rng.choice(("batch", "group", "none")),
                      act=rng.choice(("relu", "silu", "hardswish", "gelu")),
                      pool=rng.choice(("avg", "max")),
                      dropout=round(rng.uniform(0.0, MAX_DROPOUT), 2))


# ---------------------------------------------------------------- rendering and parsing


def _genome_literal(genome: Genome) -> str:
    """`GENOME = {...}` as a literal Python dict, one stage per two lines (fits 100 columns)."""
    lines = ["GENOME: dict[str, Any] = {",
             f'    "stem_width": {genome.stem_width},',
             f'    "stem_stride": {genome.stem_stride},',
             '    "stages": [']
    for s in genome.stages:
        lines.append(f'        {{"width": {s.width}, "depth": {s.depth}, "kernel": {s.kernel}, '
                     f'"stride": {s.stride},')
        lines.append(f'         "block": "{s.block}", "expansion": {s.expansion}, "se": {s.se}}},')
    lines += ["    ],",
              f'    "norm": "{genome.norm}",',
              f'    "act": "{genome.act}",',
              f'    "pool": "{genome.pool}",',
              f'    "dropout": {genome.dropout!r},',
              "}"]
    return "\n".join(lines) + "\n"


def render(genome: Genome) -> str:
    """Render a genome as complete candidate source (deterministic).

    Args:
        genome: The architecture.

    Returns:
        Module source defining `build_model(num_classes)`, with the genome embedded as a
        `GENOME = {...}` literal that `parse_genome` reads back.
    """
    summary = textwrap.fill(genome_summary(genome), width=88)
    return HEADER.format(summary=summary) + _genome_literal(genome) + BODY


def parse_genome(source: str) -> Genome | None:
    """Read the `GENOME = {...}` literal of candidate source.

    Args:
        source: Candidate code, e.g. from `render` or an LLM's edit of it.

    Returns:
        The validated genome, or None when the source has no parsable, valid GENOME literal.
        The literal is only evaluated by `ast.literal_eval`, never executed.
    """
    try:
        tree = pyast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if [t.id for t in targets if isinstance(t, ast.Name)] == ["GENOME"] and len(targets) == 1:
            try:
                return Genome.model_validate(ast.literal_eval(value))
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError,
                    ValidationError):
                return None
    return None


def main(argv: list[str] | None = None) -> None:
    """CLI: write the Template file, or print the Choices or a rendered genome."""
    parser = argparse.ArgumentParser(prog="python -m tasks.genome", description=__doc__)
    parser.add_argument("--write-template", action="store_true",
                        help="regenerate tasks/candidates/template.py from TEMPLATE_GENOME")
    parser.add_argument("--choices", action="store_true", help="print the Choices")
    args = parser.parse_args(argv)
    if args.write_template:
        path = Path(__file__).parent / "candidates" / "template.py"
        path.write_text(render(TEMPLATE_GENOME), encoding="utf-8")
        print(f"wrote {path}")
    elif args.choices:
        print(choices_text())
    else:
        print(render(TEMPLATE_GENOME), end="")


if __name__ == "__main__":
    main()
