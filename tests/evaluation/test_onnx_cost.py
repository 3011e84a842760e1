"""Graph-based cost counters: hand-computed nets, FlopCounterMode parity, refused graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from evaluation.onnx_cost import count_params, graph_cost
from evaluation.onnx_graph import GraphError, load_graph, static_shapes, validate_graph
from tasks.models import baseline_sources, build_from_source, template_source
from tools.export import EXPORT_BATCH, export_onnx


def exported(model: nn.Module, tmp_path: Path, size: int = 8) -> onnx.ModelProto:
    path = tmp_path / "m.onnx"
    export_onnx(model.eval(), torch.randn(EXPORT_BATCH, 3, size, size), path)
    return load_graph(str(path))


def fcm_flops(model: nn.Module, size: int) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, 3, size, size))
    return int(counter.get_total_flops())


class Tiny(nn.Module):
    """conv 3->4 (3x3, pad 1) on 8x8, ReLU, linear 256->5; an unused buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)
        self.register_buffer("unused", torch.ones(7))

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_tiny_net_hand_computed(tmp_path):
    model = exported(Tiny(), tmp_path)
    validate_graph(model, 8, 5)
    cost = graph_cost(model)
    # conv 4*3*3*3 + 4 = 112, linear 256*5 + 5 = 1285; the unused buffer is not in the graph
    assert cost.params == 112 + 1285 and cost.size_bytes == 4 * (112 + 1285)
    # MACs: conv 4*8*8 outputs * 27 = 6912; linear 256*5 = 1280; FLOPs = 2 * MACs
    assert cost.flops == 2 * (6912 + 1280) == fcm_flops(Tiny(), 8)
    # live at the ReLU: conv out 1024 B + relu out 1024 B (the input, 768 B, was last used
    # by the conv); the flatten output then sits beside the relu output: also 2048 B
    assert cost.peak_activation_bytes == 2048
    assert graph_cost(model, batch=2).flops == 2 * cost.flops


@pytest.mark.slow
@pytest.mark.parametrize("name", ["template", "mobilenetv2", "resnet18"])
def test_flops_equal_flop_counter_mode_and_params_differ_by_folded_norms(name, tmp_path):
    source = template_source() if name == "template" else baseline_sources()[name]
    torch.manual_seed(0)
    model = build_from_source(source, 8)
    with torch.no_grad():  # trained-like BatchNorm: nothing the exporter could de-duplicate
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    graph = exported(model, tmp_path, size=32)
    validate_graph(graph, 32, 8)
    cost = graph_cost(graph)
    assert cost.flops == fcm_flops(model, 32)
    # Each eval-mode BatchNorm is folded into the conv before it: the conv keeps one bias
    # per channel instead of the norm's weight and bias. ReLU6's Clip bounds are stored
    # scalars (MobileNetV2 only).
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    scalars = sum(1 for n in graph.graph.node if n.op_type == "Constant")
    assert cost.params == trainable - channels + scalars
    assert (scalars > 0) == (name == "mobilenetv2")


class Attention(nn.Module):
    """Single-head attention over the 16 pixels of a 4x4 map, einsum and matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(3, 24)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)  # (B, 16, 3)
        q, k, v = self.qkv(t).chunk(3, dim=-1)  # (B, 16, 8) each
        attn = torch.einsum("bid,bjd->bij", q, k).softmax(-1)
        return self.fc((attn @ v).mean(1))


class Sdpa(Attention):
    def forward(self, x):
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).chunk(3, dim=-1)
        return self.fc(F.scaled_dot_product_attention(q, k, v).mean(1))


@pytest.mark.parametrize("cls", [Attention, Sdpa])
def test_matmul_einsum_and_attention_flops_equal_flop_counter_mode(cls, tmp_path):
    torch.manual_seed(0)
    model = cls()
    graph = exported(model, tmp_path, size=4)
    cost = graph_cost(graph)
    # qkv: 16*3*24, q k^T: 16*16*8, attn v: 16*16*8, fc: 8*5 MACs
    assert cost.flops == fcm_flops(model, 4) == 2 * (16 * 3 * 24 + 2 * 16 * 16 * 8 + 8 * 5)


# ------------------------------------------------------------------ hand-built graphs


def graph(nodes, inits=(), *, inp=("N", 3, 8, 8), out=("N", 5), extra_inputs=(),
          opset=18, **kw) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(inp)),
                     *extra_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out))],
        initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], **kw)


def tensor(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def linear_head(weights: str = "w") -> list[onnx.NodeProto]:
    """x (N,3,8,8) -> global average -> flatten -> MatMul with (3,5) `weights` -> y."""
    return [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("MatMul", ["f", weights], ["y"])]


W = np.ones((3, 5), np.float32)


def test_hand_built_graph_costs():
    model = graph(linear_head(), [tensor("w", W)])
    validate_graph(model, 8, 5)
    cost = graph_cost(model)
    assert cost.params == 15 and cost.size_bytes == 60 and cost.flops == 2 * 3 * 5
    # input 768 B + pooled 12 B at the pool; then pooled + flat, then flat + y (20 B)
    assert cost.peak_activation_bytes == 768 + 12


@pytest.mark.parametrize(("make", "message"), [
    (lambda: graph([helper.make_node("Relu", ["x"], ["r"], domain="com.evil"), *linear_head()],
                   [tensor("w", W)]), "only standard ONNX operators"),
    (lambda: graph([helper.make_node(
        "If", ["c"], ["y"], then_branch=helper.make_graph([], "t", [], []),
        else_branch=helper.make_graph([], "e", [], []))],
        [tensor("c", np.array(True))]), "control flow"),
    (lambda: graph([helper.make_node("Dropout", ["x"], ["d"]), *linear_head()],
                   [tensor("w", W)]), "random op"),
    (lambda: graph(linear_head(), [tensor("w", W)], inp=(1, 3, 8, 8)), "fixed batch size 1"),
    (lambda: graph(linear_head(), [tensor("w", W)], out=("N", 4)), r"expected \(N, 5\)"),
    (lambda: graph(linear_head(), [tensor("w", W)], inp=("N", 3, 16, 16)),
     r"expected \(N, 3, 8, 8\)"),
    (lambda: graph(linear_head(), extra_inputs=[
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 5])]), "2 inputs"),
])
def test_graphs_the_counters_cannot_vouch_for_are_refused(make, message):
    with pytest.raises(GraphError, match=message):
        validate_graph(make(), 8, 5)


def test_external_data_and_local_functions_are_refused():
    model = graph(linear_head(), [tensor("w", W)])
    w = model.graph.initializer[0]
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="/etc/passwd")
    with pytest.raises(GraphError, match="stored outside"):
        validate_graph(model, 8, 5)
    fn = helper.make_function("local", "Cheap", ["a"], ["b"],
                              [helper.make_node("Identity", ["a"], ["b"])],
                              [helper.make_opsetid("", 18)])
    model = graph(linear_head(), [tensor("w", W)], functions=[fn])
    with pytest.raises(GraphError, match="own functions"):
        validate_graph(model, 8, 5)


def test_unreadable_file_is_a_graph_error(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x00not a model" * 10)
    with pytest.raises(GraphError, match="not a readable ONNX model"):
        load_graph(str(path))


def test_weights_hidden_in_constants_or_integers_count_but_shapes_do_not():
    # float weights in a Constant node, not an initializer
    const = helper.make_node("Constant", [], ["w"], value=tensor("wv", W))
    model = graph([const, *linear_head()])
    assert count_params(model, static_shapes(model))[0] == 15
    # int8 weights cast to float at run time are parameters too
    nodes = [helper.make_node("Cast", ["q"], ["w"], to=TensorProto.FLOAT), *linear_head()]
    model = graph(nodes, [tensor("q", np.ones((3, 5), np.int8))])
    assert count_params(model, static_shapes(model)) == (15, 15)
    # an int64 target shape, even built with integer arithmetic, is metadata
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Concat", ["one", "minus"], ["shape"], axis=0),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    model = graph(nodes, [tensor("w", W), tensor("one", np.array([1], np.int64)),
                          tensor("minus", np.array([-1], np.int64))], inp=("N", 3, 8, 8))
    assert count_params(model, static_shapes(model)) == (15, 60 + 16)


def test_data_dependent_sizes_are_refused():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]),
             helper.make_node("Shape", ["nz"], ["s"]),
             *linear_head()]
    with pytest.raises(GraphError, match="NonZero"):
        validate_graph(graph(nodes, [tensor("w", W)]), 8, 5)
    # a slice whose end is computed from pixel values
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Cast", ["m"], ["end"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["end", "one"], ["ends"]),
             helper.make_node("Slice", ["x", "zero", "ends", "one"], ["xs"]),
             *linear_head()]
    nodes[-3].input[0] = "xs"
    inits = [tensor("w", W), tensor("one", np.array([1], np.int64)),
             tensor("zero", np.array([0], np.int64))]
    with pytest.raises(GraphError, match="computed from tensor values"):
        validate_graph(graph(nodes, inits), 8, 5)
