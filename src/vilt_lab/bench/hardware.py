"""What a timing was measured on: processor or GPU name, threads, load, torch and CUDA versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 7B13"): /proc/cpuinfo on Linux, where
    `platform.processor()` is often empty; the platform's own answer elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_hardware(device: torch.device) -> dict[str, str | int | float]:
    """The facts a latency figure needs beside it, for `device` (a CPU or a CUDA GPU)."""
    info: dict[str, str | int | float] = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        # Other processes on the machine slow a CPU timing down; the 1-minute load says how busy it was.
        "load_average": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda or "unknown"
    return info


def hardware_line(info: dict[str, str | int | float]) -> str:
    """One line for a report: the GPU and its host CPU, or the CPU with the threads torch used."""
    cpu = f"{info['cpu']}, {info['torch_threads']} torch threads on {info['cpu_cores']} cores"
    where = f"{info['gpu']} (CUDA {info['cuda']}), host {info['cpu']}" if "gpu" in info else cpu
    return f"{where}, load average {info['load_average']}, torch {info['torch']}"
