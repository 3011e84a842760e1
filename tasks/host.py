"""The CPU a figure was measured on (lowest layer, so every benchmark may name it).

CPUs of one kind differ (some have native bf16, some not), so every printed figure
states the CPU model beside it; :mod:`tools.machine` adds torch's view (bf16, threads, GPU).
"""

from __future__ import annotations

from pathlib import Path


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Return the CPU model name from ``/proc/cpuinfo`` and the logical core count."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "unknown CPU"
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else "unknown CPU"
