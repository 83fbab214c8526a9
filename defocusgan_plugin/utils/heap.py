"""Keeping freed memory in the process for the length of a CPU computation (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MB) with fresh pages from the kernel and hands
them back on ``free``. A CPU solver whose steps create hundreds of temporaries of 50-200 MB (the joint DP optimiser
at 1008x1344: ~56 GB of newly faulted, kernel-zeroed pages per full-resolution step) then spends a large part of its
time in page faults. Inside :func:`heap_reuse` the allocator takes big blocks from its heap and keeps them when
they are freed (``mallopt(M_MMAP_MAX, 0)``, no trimming), so the next step reuses them; on exit the defaults come back
and the free memory is returned (``malloc_trim``). Results are unchanged; the peak resident memory grows (the heap
keeps what the largest step held, plus fragmentation).
"""
import ctypes
import sys
import threading
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults
_LOCK = threading.Lock()
_STATE = {'depth': 0, 'libc': None}


def glibc():
    """The C library when it is glibc (the only one whose ``mallopt`` this module knows), else None."""
    if _STATE['libc'] is None:
        _STATE['libc'] = False
        if sys.platform.startswith('linux'):
            try:
                libc = ctypes.CDLL('libc.so.6')
                libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError on other C libraries)
            except (OSError, AttributeError):
                return None
            libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
            _STATE['libc'] = libc
    return _STATE['libc'] or None


@contextmanager
def heap_reuse(enabled=True):
    """Within the block, freed memory stays in the process for reuse (see the module docstring); nests.

    Args:
        enabled (bool): False makes the block a no-op (e.g. for a GPU run, whose tensors glibc does not hold).

    Yields:
        bool: Whether the allocator was switched (False off Linux/glibc or when disabled).
    """
    libc = glibc() if enabled else None
    if libc is None:
        yield False
        return
    with _LOCK:
        if _STATE['depth'] == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
        _STATE['depth'] += 1
    try:
        yield True
    finally:
        with _LOCK:
            _STATE['depth'] -= 1
            if _STATE['depth'] == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
