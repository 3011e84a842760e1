"""The machine a measurement comes from: CPU model, bf16 or fp32, torch threads, GPU.

Every figure the project prints is stated beside the machine it was measured on (CPUs of
one kind differ: some have native bf16, some not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Return the CPU model name from ``/proc/cpuinfo`` and the logical core count."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "unknown CPU"
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else "unknown CPU"


def machine() -> dict[str, Any]:
    """Return the machine the figures come from: CPU, bf16 or fp32 on CPU, torch threads, GPU."""
    import torch

    from tools.train import resolve_amp

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_bf16_native": resolve_amp("auto", "cpu") == "bf16",
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "gpu": gpu}
