"""Loading and checking the exported ONNX graph, and its tensor shapes at a fixed batch.

The trusted measure job (``tools/measure.py``) loads the graph the evaluation exported,
refuses what the static counters of :mod:`evaluation.onnx_cost` could not vouch for
(:func:`validate_graph`) and computes every tensor's shape (:func:`static_shapes`); it
never imports candidate code, so a candidate cannot change what they report. Everything
here is a pure function of the ``ModelProto`` (docs/metrics.md).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference

__all__ = [
    "GraphError",
    "Shape",
    "dtype_bytes",
    "load_graph",
    "static_shapes",
    "stored_tensors",
    "validate_graph",
]

DEFAULT_DOMAINS = ("", "ai.onnx")
# Subgraph-carrying ops: their cost depends on data (a branch or trip count the static
# count cannot see), so they are refused. Nodes with any graph attribute are refused too.
CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})
# An eval-mode model must be deterministic: the batch check and the agreement check
# compare two runs of the same graph.
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform",
                        "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})
# Input positions that only carry shapes, axes or counts (never values that flow into the
# output): integer tensors used only here are metadata, not parameters.
SHAPE_OPERANDS: dict[str, frozenset[int]] = {
    "Reshape": frozenset({1}), "Expand": frozenset({1}), "Tile": frozenset({1}),
    "Slice": frozenset({1, 2, 3, 4}), "Squeeze": frozenset({1}), "Unsqueeze": frozenset({1}),
    "Pad": frozenset({1, 3}), "Resize": frozenset({1, 2, 3}), "Upsample": frozenset({1}),
    "Split": frozenset({1}), "TopK": frozenset({1}), "CumSum": frozenset({1}),
    "Trilu": frozenset({1}), "OneHot": frozenset({1}), "CenterCropPad": frozenset({1, 2}),
    "ConstantOfShape": frozenset({0}),
    **{op: frozenset({1}) for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
                                     "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                                     "ReduceLogSumExp", "ReduceSumSquare")},
}
# Inputs whose *values* set the size of the output: they must be computable from the
# input's shape and stored constants alone, never from image data.
SIZE_OPERANDS: dict[str, frozenset[int]] = {**SHAPE_OPERANDS, "Range": frozenset({0, 1, 2})}
# Ops whose output size depends on the data by definition.
DATA_SIZED = frozenset({"NonZero", "Unique", "Compress", "NonMaxSuppression"})
INTEGER_TYPES = frozenset({TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16,
                           TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32,
                           TensorProto.INT64, TensorProto.UINT64})
_FOUR_BIT = frozenset(getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1")
                      if hasattr(TensorProto, n))


class GraphError(ValueError):
    """The graph cannot be measured (custom ops, control flow, unknown shapes, ...).

    The message says what to change in the model, for the Code-Fixer.
    """


# ------------------------------------------------------------------ loading / validation


def load_graph(path: str, max_bytes: int = 2**31 - 1) -> onnx.ModelProto:
    """Read an ONNX file without following external-data references.

    Args:
        path: The ``.onnx`` file.
        max_bytes: Larger files are refused (protobuf's own limit is 2 GiB).

    Returns:
        The model.

    Raises:
        GraphError: Too large, or not a readable ONNX model.
    """
    with open(path, "rb") as fh:
        blob = fh.read(max_bytes + 1)
    if len(blob) > max_bytes:
        raise GraphError(f"the ONNX file is larger than {max_bytes} bytes")
    try:
        return onnx.load_from_string(blob)
    except Exception as e:  # noqa: BLE001 - any decode error means the same thing
        raise GraphError(f"the exported file is not a readable ONNX model ({type(e).__name__})"
                         ) from e


def stored_tensors(model: onnx.ModelProto) -> dict[str, TensorProto]:
    """Return the stored tensors by value name: initializers and ``Constant`` node values."""
    out = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
            out[node.output[0]] = _constant_tensor(node)
    return out


def _constant_tensor(node: onnx.NodeProto) -> TensorProto:
    """Return the value of a ``Constant`` node as a TensorProto (every attribute form)."""
    if len(node.attribute) != 1:
        raise GraphError(f"Constant node {node.name!r} has {len(node.attribute)} attributes")
    attr = node.attribute[0]
    if attr.name == "value":
        return attr.t
    if attr.name == "value_float":
        return helper.make_tensor(node.output[0], TensorProto.FLOAT, [], [attr.f])
    if attr.name == "value_floats":
        return helper.make_tensor(node.output[0], TensorProto.FLOAT, [len(attr.floats)],
                                  list(attr.floats))
    if attr.name == "value_int":
        return helper.make_tensor(node.output[0], TensorProto.INT64, [], [attr.i])
    if attr.name == "value_ints":
        return helper.make_tensor(node.output[0], TensorProto.INT64, [len(attr.ints)],
                                  list(attr.ints))
    raise GraphError(f"Constant node {node.name!r} holds a {attr.name}; only numeric tensors "
                     "are supported")


def validate_graph(model: onnx.ModelProto, image_size: int, num_classes: int) -> None:
    """Refuse graphs whose cost or outputs the static counters could not vouch for.

    Accepted: standard ONNX operators only (default domain, no model-local functions), no
    control flow or subgraphs, no random ops, every tensor stored inside the file (no
    external data, no sparse or string tensors), exactly one float input of shape
    ``(N, 3, image_size, image_size)`` with a free batch dimension and exactly one output of
    shape ``(N, num_classes)``, and a model the ONNX checker accepts.

    Raises:
        GraphError: With the first problem found.
    """
    g = model.graph
    if model.functions:
        raise GraphError("the graph defines its own functions "
                         f"({', '.join(f.name for f in model.functions[:3])}); "
                         "only standard ONNX operators are accepted")
    for node in g.node:
        if node.domain not in DEFAULT_DOMAINS:
            raise GraphError(f"node {node.name!r} uses the operator {node.domain}::"
                             f"{node.op_type}; only standard ONNX operators are accepted "
                             "(write the layer with plain torch operations)")
        if node.op_type in CONTROL_FLOW or any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                for a in node.attribute):
            raise GraphError(f"the graph contains control flow ({node.op_type} node "
                             f"{node.name!r}); forward must not branch or loop on tensor "
                             "values or sizes")
        if node.op_type in RANDOM_OPS:
            raise GraphError(f"the eval-mode graph contains a random op ({node.op_type}); "
                             "inference must be deterministic")
    _check_sizes_static(model)
    if g.sparse_initializer:
        raise GraphError("the graph stores sparse tensors; only dense tensors are accepted")
    for name, t in stored_tensors(model).items():
        if t.data_location == TensorProto.EXTERNAL or t.external_data:
            raise GraphError(f"tensor {name!r} is stored outside the ONNX file")
        if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
            raise GraphError(f"tensor {name!r} is not numeric")
    stored = {t.name for t in g.initializer}
    inputs = [v for v in g.input if v.name not in stored]
    if len(inputs) != 1 or len(g.output) != 1:
        raise GraphError(f"the graph has {len(inputs)} inputs and {len(g.output)} outputs; "
                         "expected one image batch in and one logits tensor out")
    _check_io(inputs[0], "input", [None, 3, image_size, image_size])
    _check_io(g.output[0], "output", [None, num_classes])
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - ValidationError and friends
        raise GraphError(f"the ONNX checker rejects the graph: {str(e)[:400]}") from e


def _check_sizes_static(model: onnx.ModelProto) -> None:
    """Refuse tensor sizes that depend on tensor values rather than on the input's shape.

    A value is *shape-derived* when it is stored, the output of ``Shape`` / ``Size``, or
    computed only from shape-derived values. Every size-setting operand
    (:data:`SIZE_OPERANDS`) must be shape-derived, and no op of :data:`DATA_SIZED` may
    appear; then every tensor's size is a function of the batch size alone, and the costs
    computed at one batch size hold for every input.
    """
    derived = set(stored_tensors(model))
    for node in model.graph.node:
        if node.op_type in DATA_SIZED:
            raise GraphError(f"the graph contains {node.op_type} (node {node.name!r}), whose "
                             "output size depends on the data; tensor sizes must depend on "
                             "the input size only")
        for k in SIZE_OPERANDS.get(node.op_type, ()):
            if k < len(node.input) and node.input[k] and node.input[k] not in derived:
                raise GraphError(f"the size of the output of {node.op_type} node "
                                 f"{node.name!r} is computed from tensor values "
                                 f"({node.input[k]!r}); tensor sizes must depend on the input "
                                 "size only")
        ins = [i for i in node.input if i]
        if node.op_type in ("Shape", "Size", "Constant") or (ins and all(i in derived
                                                                           for i in ins)):
            derived.update(o for o in node.output if o)


def _check_io(value: onnx.ValueInfoProto, what: str, expected: list[int | None]) -> None:
    tt = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    shown = "(" + ", ".join("N" if d is None else str(d) for d in dims) + ")"
    want = "(" + ", ".join("N" if d is None else str(d) for d in expected) + ")"
    if not value.type.HasField("tensor_type") or tt.elem_type != TensorProto.FLOAT:
        raise GraphError(f"the graph's {what} is not a float32 tensor")
    if not tt.HasField("shape") or len(dims) != len(expected) or any(
            e is not None and d != e for d, e in zip(dims, expected, strict=True)):
        raise GraphError(f"the graph's {what} has shape {shown}; expected {want}")
    if dims[0] is not None:
        raise GraphError(f"the graph's {what} has a fixed batch size {dims[0]}; the batch "
                         "dimension must stay free (do not use the batch size in forward)")


# ------------------------------------------------------------------------------ shapes

Shape = tuple[int, ...]


def static_shapes(model: onnx.ModelProto, batch: int = 1) -> dict[str, tuple[Shape, int]]:
    """Return the concrete shape and element type of every tensor at a fixed batch size.

    The batch dimension of the input (and output) is set to ``batch``, the exporter's own
    ``value_info`` is dropped, and ``onnx.shape_inference.infer_shapes`` (strict, with data
    propagation, so ``Shape -> Gather -> Reshape`` chains resolve) recomputes every shape.

    Sizes that inference leaves open (ONNX's data propagation does not cover every
    integer op) are read from one ONNX Runtime run at ``batch`` on a zero input, after
    checking that no size depends on tensor values (then they depend on ``batch`` alone).

    Returns:
        ``{tensor name: (shape, onnx element type)}`` for the input, stored tensors and
        every node output.

    Raises:
        GraphError: Inference fails, or a size depends on tensor values.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    for t in m.graph.initializer:
        # Inference needs the dims of weights, not their values (10x faster on ResNet-18);
        # integer tensors keep theirs for data propagation of shape arithmetic.
        if t.data_type not in INTEGER_TYPES:
            for f in ("raw_data", "float_data", "double_data", "int32_data"):
                t.ClearField(f)
    stored = {t.name for t in m.graph.initializer}
    for v in [*[i for i in m.graph.input if i.name not in stored], *m.graph.output]:
        v.type.tensor_type.shape.dim[0].Clear()
        v.type.tensor_type.shape.dim[0].dim_value = batch
    try:
        inferred = shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
    except Exception as e:  # noqa: BLE001 - InferenceError and friends
        raise GraphError(f"ONNX shape inference fails on the graph: {str(e)[:400]}") from e
    out: dict[str, tuple[Shape, int]] = {}
    for name, t in stored_tensors(inferred).items():
        out[name] = (tuple(int(d) for d in t.dims), t.data_type)
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if v.name in out or not v.type.HasField("tensor_type"):
            continue
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        known = [d for d in dims if d is not None]
        if tt.HasField("shape") and len(known) == len(dims):
            out[v.name] = (tuple(int(d) for d in known), tt.elem_type)
    missing = [name for node in inferred.graph.node for name in node.output
               if name and name not in out]
    if missing:
        # ONNX's data propagation stops at some integer ops (Div, for one: `chunk` in an
        # attention block); the sizes are still fixed by the batch size alone
        # (validate_graph checks that), so one run at this batch size reads them.
        _check_sizes_static(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
        out.update(_runtime_shapes(model, batch, missing, types))
    return out


def _runtime_shapes(model: onnx.ModelProto, batch: int, names: list[str],
                    types: dict[str, int]) -> dict[str, tuple[Shape, int]]:
    """Shapes of ``names`` from one ONNX Runtime run on a zero input at ``batch``."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    known = {o.name for o in m.graph.output}
    for name in names:
        if name not in known:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
    stored = {t.name for t in m.graph.initializer}
    inp = next(v for v in m.graph.input if v.name not in stored)
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(m.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        values = sess.run(names, {inp.name: np.zeros([batch, *dims[1:]], np.float32)})
    except Exception as e:  # noqa: BLE001 - ORT's own errors
        raise GraphError(f"the graph's tensor sizes at batch {batch} could not be inferred "
                         f"nor computed: {type(e).__name__}: {str(e)[:300]}") from e
    out: dict[str, tuple[Shape, int]] = {}
    for name, value in zip(names, values, strict=True):
        arr = np.asarray(value)
        elem = types.get(name) or helper.np_dtype_to_tensor_dtype(arr.dtype)
        out[name] = (tuple(int(d) for d in arr.shape), int(elem))
    return out


def dtype_bytes(elem_type: int, n: int) -> int:
    """Bytes of ``n`` elements of ONNX element type ``elem_type`` (4-bit types packed)."""
    if elem_type in _FOUR_BIT:
        return (n + 1) // 2
    try:
        return n * np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError) as e:
        raise GraphError(f"unsupported tensor element type {elem_type}") from e
