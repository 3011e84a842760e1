"""The gate's FLOP count: FlopCounterMode's numbers, without the torch._dynamo import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from tools.candidate import build_candidate, count_flops

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = (REPO / "tasks" / "candidates" / "template.py").read_text(encoding="utf-8")


def _reference_flops(code: str, size: int) -> int:
    model = build_candidate(code, 8).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, size, size))
    return int(counter.get_total_flops())


def test_count_flops_matches_flop_counter_mode() -> None:
    model = build_candidate(TEMPLATE, 8).eval()
    assert count_flops(model, torch.randn(1, 3, 48, 48)) == _reference_flops(TEMPLATE, 48)


def test_gate_export_job_does_not_import_torch_dynamo(tmp_path: Path) -> None:
    # A fresh interpreter, like the sandboxed worker: each gate paid 1.3-2.4 s for it.
    code = textwrap.dedent(f"""
        import json, sys
        from tools.jobs import gate_export_job
        out = gate_export_job({{"code": {TEMPLATE!r}, "image_size": 32, "num_classes": 8,
                               "budgets": {{}}}}, {str(tmp_path)!r})
        print(json.dumps({{"ok": all(c["ok"] for c in out["checks"]), "flops": out["flops"],
                          "exporter": out.get("exporter"),
                          "dynamo": "torch._dynamo" in sys.modules}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=180, cwd=REPO)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["exporter"] and (tmp_path / "model.onnx").is_file()
    assert out["flops"] == _reference_flops(TEMPLATE, 32)
    assert out["dynamo"] is False
