"""The C allocator's policy for the GNN's CPU steps.

    set_malloc("reuse")    # conf: malloc=reuse (default) | system

A GNN step on a full-size graph allocates and frees tens of (K, N, H) tensors of 10-100 MB.
glibc serves every block above its mmap threshold (at most 32 MB) with a fresh mmap and unmaps
it on free, so each step faults in and zeroes every page again: on a 2-core machine the kernel
time of `make bench-gnn` exceeded the user time. `reuse` keeps freed memory in the heap
(no mmap for large blocks, no trimming), so later steps reuse pages already mapped; the process
keeps its high-water mark, about twice the peak of `system` (docs/FULL_DATA.md, "Running on the full
data"). `system` leaves glibc's defaults. Elsewhere than glibc (macOS, musl) both are the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

POLICIES = ("reuse", "system")
# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
NEVER_TRIM = 2**31 - 1  # an int: the largest threshold mallopt takes


def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


def set_malloc(policy: str) -> bool:
    """Apply `policy` to later allocations of this process; returns whether anything changed
    (False on `system` or without glibc). Raises ValueError for an unknown policy."""
    if policy not in POLICIES:
        raise ValueError(f"unknown malloc policy '{policy}' (one of {', '.join(POLICIES)})")
    libc = _glibc()
    if policy == "system" or libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    if not ok:
        log.warning("mallopt refused the reuse policy; the allocator keeps its defaults")
    return ok
