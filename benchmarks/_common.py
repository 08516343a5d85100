"""What every benchmark script shares (STYLE.md 9): git sha, device name, synchronized timing, JSON lines.

Benchmarks are scripts, not a package: `python benchmarks/x.py` puts this folder on sys.path, so
`from _common import ...` works from any working directory.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def git_sha() -> str:
    """Short sha of HEAD, "+dirty" when the tree has changes; "none" outside git or before the first commit."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "none"
    return sha + ("+dirty" if git("status", "--porcelain") else "")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        lines = [ln for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        model = lines[0].split(":", 1)[1].strip() if lines else model
    return f"{model} x{os.cpu_count()}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(fn(), seconds), with the device synchronized before and after so queued kernels are counted."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def emit(record: dict) -> None:
    """One measurement as one JSON line on stdout (chatter goes to stderr)."""
    print(json.dumps(record), flush=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
