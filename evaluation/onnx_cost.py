"""Cost of a model read from its ONNX graph alone: parameters, size, FLOPs, peak activations.

These counters run in the trusted measure job (``tools/measure.py``), which loads the
graph the evaluation exported and never imports candidate code, so a candidate cannot
change what they report; the graph is checked and its shapes computed first
(:mod:`evaluation.onnx_graph`). Everything here is a pure function of the ``ModelProto``.

Conventions (the same as ``torch.utils.flop_counter.FlopCounterMode``, docs/metrics.md):

* **FLOPs** count matrix products and convolutions only, at 2 FLOPs per multiply-accumulate;
  element-wise ops, bias additions, normalisation, pooling and activations count 0.
* **Parameters** are the numbers the deployed graph stores: every element of every stored
  tensor (initializers and ``Constant`` nodes), except integer tensors that only give
  shapes or axes (e.g. the target shape of a ``Reshape``). BatchNorm layers that the
  exporter folded into the preceding convolution count as the folded convolution holds
  them (its weight and one bias per channel), so the figure differs slightly from
  PyTorch's trainable-parameter count (see :func:`count_params`).
* **Peak activation memory** is the largest total size of tensors alive at once when the
  nodes run one after another in graph order, each tensor (including the input) alive from
  the node that creates it until its last use; stored tensors and anything computed from
  them alone (constant-foldable) are weights, not activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from evaluation.onnx_graph import (
    DEFAULT_DOMAINS,
    INTEGER_TYPES,
    SHAPE_OPERANDS,
    GraphError,
    Shape,
    dtype_bytes,
    static_shapes,
    stored_tensors,
)

__all__ = [
    "GraphCost",
    "count_flops",
    "count_params",
    "graph_cost",
    "node_flops",
    "peak_activation_bytes",
]


@dataclass(frozen=True)
class GraphCost:
    """What :func:`graph_cost` computes from one graph at one batch size."""

    params: int
    size_bytes: int
    flops: int
    peak_activation_bytes: int
    nodes: int
    opset: int
    ops: dict[str, int]


# ------------------------------------------------------------------------------ params


def _consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name:
                users.setdefault(name, []).append((node, k))
    return users


def count_params(model: onnx.ModelProto,
                 shapes: dict[str, tuple[Shape, int]] | None = None) -> tuple[int, int]:
    """Count the stored parameters and their bytes.

    ``params = sum(numel(t))`` over every stored tensor ``t`` (initializer or ``Constant``
    node), except integer tensors that are shape metadata: used only at a shape/axes input
    (:data:`SHAPE_OPERANDS`, e.g. ``Reshape``'s target shape), directly or through integer
    arithmetic whose results are used only there. ``bytes = sum(numel(t) * itemsize)`` over
    every stored tensor.

    Against PyTorch's ``sum(p.numel() for p in model.parameters() if p.requires_grad)``:
    a convolution without bias followed by a BatchNorm over ``C`` channels is stored
    folded as one convolution with a bias (``W + C`` numbers instead of ``W + 2C``; with a
    conv bias, ``W + C`` instead of ``W + 3C``); an unfolded BatchNorm stores scale, bias,
    running mean and variance (``4C`` instead of ``2C``); scalar constants (``Clip`` bounds
    of ReLU6, epsilons) count one each; frozen tensors, buffers and plain tensor
    attributes that the forward uses count; identical tensors the exporter de-duplicated
    count once.

    Args:
        model: The graph.
        shapes: :func:`static_shapes` output (element types of intermediate values); when
            omitted, only direct uses decide whether an integer tensor is metadata.

    Returns:
        ``(params, bytes)``.
    """
    users = _consumers(model)
    outputs = {v.name for v in model.graph.output}
    types = {k: v[1] for k, v in (shapes or {}).items()}
    memo: dict[str, bool] = {}

    def metadata(name: str, depth: int = 0) -> bool:
        # True when the integer value `name` only ever ends up in shape/axes positions.
        if name in memo:
            return memo[name]
        memo[name] = False  # cycles cannot happen in a valid graph; guard anyway
        ok = name not in outputs and depth < 64
        for node, k in users.get(name, []) if ok else []:
            if k in SHAPE_OPERANDS.get(node.op_type, ()):
                continue
            outs = [o for o in node.output if o]
            if not outs or not all(types.get(o) in INTEGER_TYPES and metadata(o, depth + 1)
                                   for o in outs):
                ok = False
                break
        memo[name] = ok
        return ok

    params = size = 0
    for name, t in stored_tensors(model).items():
        n = math.prod(int(d) for d in t.dims)
        size += dtype_bytes(t.data_type, n)
        if t.data_type in INTEGER_TYPES and metadata(name):
            continue
        params += n
    return params, size


# ------------------------------------------------------------------------------- FLOPs


def _einsum_flops(equation: str, operands: list[Shape]) -> int:
    """Count the FLOPs of an Einsum contracted left to right, one pair at a time (like torch).

    Each pairwise step costs ``2 * prod(size of every index it keeps or contracts)``;
    indices found in one operand only and needed later nowhere are summed first (free).
    """
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise GraphError(f"Einsum {equation!r} has {len(terms)} terms for {len(operands)} "
                         "inputs")
    pool = iter(chr(c) for c in range(0x100, 0x200))  # names for the ellipsis dims
    ell_letters: list[str] = []
    sizes: dict[str, int] = {}
    letters: list[list[str]] = []
    for term, shape in zip(terms, operands, strict=True):
        explicit = [c for c in term.replace("...", "") if c.isalpha()]
        n_ell = len(shape) - len(explicit) if "..." in term else 0
        while len(ell_letters) < n_ell:
            ell_letters.insert(0, next(pool))
        head, _, tail = term.partition("...") if "..." in term else (term, "", "")
        idx = list(head) + ell_letters[len(ell_letters) - n_ell:] + list(tail)
        if len(idx) != len(shape):
            raise GraphError(f"Einsum {equation!r} does not match input rank {len(shape)}")
        for c, s in zip(idx, shape, strict=True):
            sizes[c] = max(sizes.get(c, 1), int(s))
        letters.append(idx)
    if arrow:
        out = set(rhs.replace("...", "")) | (set(ell_letters) if "..." in rhs else set())
    else:
        counts: dict[str, int] = {}
        for idx in letters:
            for c in idx:
                counts[c] = counts.get(c, 0) + 1
        out = {c for c, k in counts.items() if k == 1} | set(ell_letters)
    flops, current = 0, set(letters[0])
    for i in range(1, len(letters)):
        later = set().union(*letters[i + 1:]) if i + 1 < len(letters) else set()
        keep = (current | set(letters[i])) & (out | later)
        contract = (current & set(letters[i])) - keep
        flops += 2 * math.prod(sizes[c] for c in keep | contract)
        current = keep
    return flops


def node_flops(node: onnx.NodeProto, shapes: dict[str, tuple[Shape, int]]) -> int:
    """Count the FLOPs of one node (2 per multiply-accumulate; 0 for ops that are not products).

    * ``Conv`` (and ``ConvInteger``, ``QLinearConv``): ``2 * N * prod(W.shape) *
      prod(Y.shape[2:])``, i.e. every output element costs ``C_in / group * prod(kernel)``
      MACs; the bias is not counted.
    * ``ConvTranspose``: ``2 * N * prod(W.shape) * prod(X.shape[2:])``.
    * ``Gemm``: ``2 * M * N * K`` (``C`` is not counted).
    * ``MatMul`` (and ``MatMulInteger``, ``QLinearMatMul``): ``2 * prod(Y.shape) * K``
      with ``K`` the last dimension of ``A`` (batch dimensions broadcast).
    * ``Einsum``: see :func:`_einsum_flops`.
    """
    op = node.op_type

    def shape(name: str) -> Shape:
        return shapes[name][0]

    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = node.input[3 if op == "QLinearConv" else 1]
        y = shape(node.output[0])
        return 2 * y[0] * math.prod(shape(w)) * math.prod(y[2:])
    if op == "ConvTranspose":
        x = shape(node.input[0])
        return 2 * x[0] * math.prod(shape(node.input[1])) * math.prod(x[2:])
    if op == "Gemm":
        a, b = shape(node.input[0]), shape(node.input[1])
        attrs = {a_.name: a_.i for a_ in node.attribute}
        m, k = (a[1], a[0]) if attrs.get("transA") else (a[0], a[1])
        n = b[0] if attrs.get("transB") else b[1]
        return 2 * m * n * k
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a = shape(node.input[0])
        return 2 * math.prod(shape(node.output[0])) * (a[-1] if a else 1)
    if op == "Einsum":
        eq = next((a_.s.decode() for a_ in node.attribute if a_.name == "equation"), "")
        return _einsum_flops(eq, [shape(i) for i in node.input])
    return 0


def count_flops(model: onnx.ModelProto, shapes: dict[str, tuple[Shape, int]]) -> int:
    """Count the FLOPs of one forward pass: the sum of :func:`node_flops` over the graph."""
    return sum(node_flops(node, shapes) for node in model.graph.node)


# ------------------------------------------------------------------------- activations


def _const_values(model: onnx.ModelProto) -> set[str]:
    """Return the stored tensors and every value computed from them alone (constant-foldable)."""
    const = set(stored_tensors(model))
    for node in model.graph.node:
        ins = [i for i in node.input if i]
        if node.op_type == "Constant" or (ins and all(i in const for i in ins)):
            const.update(o for o in node.output if o)
    return const


def peak_activation_bytes(model: onnx.ModelProto,
                          shapes: dict[str, tuple[Shape, int]]) -> int:
    """Return the peak bytes of live activations when the nodes run sequentially in graph order.

    Before node ``i`` runs, the live set holds the graph input (until its last use) and
    every earlier output still needed by a later node or being a graph output; node ``i``
    adds its outputs, the total is recorded, then every value whose last use is node ``i``
    is freed. Stored tensors and constant-foldable values are weights and never count.
    The peak is ``max_i`` of the recorded totals (and the input alone). Kernel scratch
    memory and in-place reuse by the runtime are not modelled.
    """
    const = _const_values(model)
    nodes = list(model.graph.node)
    end = len(nodes)
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name:
                last_use[name] = i
    for v in model.graph.output:
        last_use[v.name] = end

    def nbytes(name: str) -> int:
        shape, elem = shapes[name]
        return dtype_bytes(elem, math.prod(shape))

    stored = {t.name for t in model.graph.initializer}
    live: dict[str, int] = {v.name: nbytes(v.name) for v in model.graph.input
                            if v.name not in stored}
    current = peak = sum(live.values())
    for i, node in enumerate(nodes):
        for name in node.output:
            if name and name not in const and name not in live:
                live[name] = nbytes(name)
                current += live[name]
        peak = max(peak, current)
        for name in [*node.input, *node.output]:
            if name in live and last_use.get(name, i) <= i:
                current -= live.pop(name)
    return peak


# ------------------------------------------------------------------------------ summary


def graph_cost(model: onnx.ModelProto, batch: int = 1) -> GraphCost:
    """Compute all static costs of ``model`` at batch size ``batch`` (see the module docstring).

    Raises:
        GraphError: Shapes cannot be inferred statically.
    """
    shapes = static_shapes(model, batch)
    params, size = count_params(model, shapes)
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return GraphCost(params=params, size_bytes=size, flops=count_flops(model, shapes),
                     peak_activation_bytes=peak_activation_bytes(model, shapes),
                     nodes=len(model.graph.node), opset=int(opset), ops=ops)
