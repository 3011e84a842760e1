"""The machine a measurement comes from: CPU model, bf16 or fp32, torch threads, GPU.

Every figure the project prints is stated beside the machine it was measured on (CPUs of
one kind differ: some have native bf16, some not).
"""

from __future__ import annotations

from typing import Any

from tasks.host import cpu_model

__all__ = ["cpu_model", "machine"]  # cpu_model lives in the lowest layer (tasks.host)


def machine() -> dict[str, Any]:
    """Return the machine the figures come from: CPU, bf16 or fp32 on CPU, torch threads, GPU."""
    import torch

    from tools.train import resolve_amp

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_bf16_native": resolve_amp("auto", "cpu") == "bf16",
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "gpu": gpu}
