"""Process-level tuning for CPU inference.

PyTorch's CPU allocator hands large tensors straight to glibc's ``malloc``, which maps blocks above
its mmap threshold freshly from the kernel and returns them on ``free``. A window of the enhancer
allocates and frees thousands of multi-megabyte activations, so with the default thresholds every
one of them is page-faulted in again, which costs a visible share of CPU time. Raising
the mmap and trim thresholds keeps freed blocks in the heap, where the next window reuses them:
less CPU time, more resident memory. It is opt-in: set ``SEMLENS_TUNE_MALLOC=1``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 16 MiB (a 32-channel 320x180 activation is 7 MiB) come from the heap; up to 128 MiB
# of free heap is kept. Larger values buy little speed and cost resident memory.
_MMAP_THRESHOLD = 16 * 1024 * 1024
_TRIM = 128 * 1024 * 1024

_state: dict[str, bool] = {}


def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds once per process (Linux with glibc only).

    Returns ``True`` when the thresholds are (now) raised, ``False`` when not asked for (the
    environment variable ``SEMLENS_TUNE_MALLOC`` is not ``1``) or not applicable.
    """
    if "done" in _state:
        return _state["done"]
    ok = False
    if sys.platform.startswith("linux") and os.environ.get("SEMLENS_TUNE_MALLOC", "") in ("1", "true", "yes"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM))
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
            ok = False
    _state["done"] = ok
    return ok
