"""Keeping the operator's resident memory close to what it holds.

Two glibc behaviours inflate a long-running Python process that watches many objects:
- every thread that allocates gets a malloc arena of its own (up to 8 per core), and the worker
  threads of the API calls would each keep one; `M_ARENA_MAX` caps them;
- memory freed after a large burst (the initial listing of every pod in the cluster arrives as one
  big JSON document) stays mapped in the heap; `malloc_trim` hands it back to the kernel.
Both are no-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_ARENA_MAX = -8


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas; call before threads start. True when applied."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, count))


def trim() -> bool:
    """Return freed heap memory to the kernel. True when some was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
