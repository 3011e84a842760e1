"""Side-by-side re-timing of exported graphs, in the real sandbox (tools.retime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tools.side_by_side import sandboxed_timer


def conv_graph(path: Path, layers: int, channels: int) -> str:
    """A batch-1 32 px network: ``layers`` 3x3 convolutions of ``channels``, then a head."""
    rng = np.random.default_rng(0)
    nodes, inits, x, c_in = [], [], "x", 3
    for i in range(layers):
        w = rng.standard_normal((channels, c_in, 3, 3)).astype(np.float32) * 0.1
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x, c_in = f"r{i}", channels
    nodes += [helper.make_node("GlobalAveragePool", [x], ["p"]),
              helper.make_node("Flatten", ["p"], ["y"])]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_in])],
                          initializer=inits)
    path.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
                     .SerializeToString())
    return str(path)


def test_graphs_are_timed_side_by_side_and_a_broken_one_gets_no_figure(tmp_path):
    small = conv_graph(tmp_path / "small.onnx", 1, 4)
    large = conv_graph(tmp_path / "large.onnx", 4, 64)  # ~1000x the small one's FLOPs
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    latencies, info = sandboxed_timer([small, large, str(broken)], 32)
    assert latencies[0] is not None and latencies[1] is not None and latencies[2] is None
    assert 0 < latencies[0] < latencies[1]
    assert info["errors"][:2] == [None, None] and info["errors"][2]
    assert all(cv is not None and cv >= 0 for cv in info["round_cv"][:2])


def test_the_rounds_shrink_to_fit_the_time_budget(tmp_path):
    from tools.retime import retime_job

    graph = conv_graph(tmp_path / "g.onnx", 2, 16)
    full = retime_job({"graphs": [graph], "image_size": 32, "rounds": 2}, tmp_path)
    assert full["iters"] == 20 and full["latency_ms"][0] > 0
    tight = retime_job({"graphs": [graph], "image_size": 32, "rounds": 2, "budget_s": 0},
                       tmp_path)
    assert tight["iters"] == 3 and tight["latency_ms"][0] > 0


def test_relative_paths_are_timed_too(tmp_path, monkeypatch):
    # A run folder given relative to the current folder (``runs/<id>``, the CLI's default):
    # the job runs elsewhere, so the paths must reach it resolved.
    conv_graph(tmp_path / "g.onnx", 1, 4)
    monkeypatch.chdir(tmp_path)
    latencies, info = sandboxed_timer(["g.onnx"], 32)
    assert latencies[0] is not None and latencies[0] > 0, info["errors"]
