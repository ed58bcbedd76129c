"""glibc malloc tuning for processes that stream large buffers (pulls, loads).

A stream of 1 MiB chunks through a few threads is allocated and freed over and over. With
glibc's start-up settings each such buffer is a fresh mmap (threshold 128 KiB, raised only
after the first frees) and the freed heap top is handed back to the kernel at once (trim
threshold 128 KiB), so every byte pulled costs several page faults: ~200000 minor faults and
~0.4 s of system time for a 240 MB pull in a new process. A long-running process reaches
similar settings by itself (glibc's dynamic thresholds); this sets them at once.
"""

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 4 << 20   # buffers up to 4 MiB come from the heap, reused
TRIM_THRESHOLD = 32 << 20  # keep up to 32 MiB free at a heap's top before giving it back

_done = False


def tune_for_streaming():
    """Set the thresholds above once per process; a no-op where malloc is not glibc's."""
    global _done
    if _done:
        return
    _done = True
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
