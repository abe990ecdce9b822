"""Process-level tuning for CPU inference.

PyTorch's CPU allocator hands large tensors straight to glibc's ``malloc``, which maps blocks above
its mmap threshold (at most 32 MiB) freshly from the kernel and returns them on ``free``. A window
of the enhancer allocates and frees thousands of activations, and at real frame sizes every one of
them is above that threshold (a 32-channel activation of a 1280x720 frame is 118 MiB), so each is
page-faulted in and zeroed by the kernel again: with the x2 model at 1280x720 the kernel's share was
34 s of 94 s of CPU time, against 0.2 of 3.2 s at 320x180 (``SEMLENS_TUNE_MALLOC=0 python
benchmarks/sizes.py --sizes 320x180,1280x720 --frames 6 --threads 1``, BENCHMARKS.md "The allocator").
So semlens stops ``malloc`` from mapping blocks of their own (``M_MMAP_MAX = 0``) and keeps up to
2 GiB of freed memory at the top of the heap (``M_TRIM_THRESHOLD``): freed activations stay in the
heap, where the next frame reuses them without faults. Resident memory then stays near the run's
peak instead of falling between windows.

It is on by default wherever an upscaler is made (Linux with glibc only); set
``SEMLENS_TUNE_MALLOC=0`` to keep glibc's defaults.

:func:`resolve_device` turns a ``--device`` name into the device to run on, for inference and
training alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

__all__ = ["tune_allocator", "resolve_device"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Free memory kept at the top of the heap before it is returned (mallopt takes an int: 2 GiB - 1).
_TRIM = 2**31 - 1
_OFF = ("0", "false", "no", "off")

_state: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Keep large blocks in glibc's heap, once per process (Linux with glibc only).

    Returns ``True`` when the settings are (now) made, ``False`` when turned off (the environment
    variable ``SEMLENS_TUNE_MALLOC`` is ``0``) or not applicable.
    """
    if "done" in _state:
        return _state["done"]
    ok = False
    wanted = os.environ.get("SEMLENS_TUNE_MALLOC", "1").strip().lower() not in _OFF
    if sys.platform.startswith("linux") and wanted:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM))
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
            ok = False
    _state["done"] = ok
    return ok


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU. ``cuda:N`` must name a
    device this process sees (``CUDA_VISIBLE_DEVICES`` and Ray narrow what it sees)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for but CUDA is not available; use device='cpu'")
    if dev.type == "cuda" and dev.index is not None:
        count = torch.cuda.device_count()
        if dev.index >= count:
            seen = f"cuda:0 to cuda:{count - 1}" if count > 1 else "only cuda:0"
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
            raise ValueError(f"device {str(device)!r} does not exist: this process sees {count} CUDA "
                             f"device{'s' if count != 1 else ''}{where}, {seen}")
    return dev
