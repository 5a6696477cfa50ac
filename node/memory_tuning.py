"""Keeping the node's resident memory near what it uses (#11 target 5: at most 150 MiB).

glibc's malloc gives every thread that allocates its own arena, and keeps freed memory for
reuse rather than handing it back. A 10,000-item batch, parsed and checked in the batch worker
threads (node.batch_body), grew the node by 50 MiB that stayed after the batch (measured with
`make bench`). Two arenas are plenty for one event loop and a few worker threads; big blocks
are always mapped on their own (`fix_mmap_threshold`), so freeing one hands it back; and after
a big batch the rest of what was freed is handed back with malloc_trim. All are no-ops off
glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("rocars.node")

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENAS = 2
# Blocks at least this big get their own mapping, unmapped when freed. glibc starts at 128 KiB
# but raises its threshold to the size of each mapped block freed (up to 32 MiB), so once a
# batch's multi-megabyte buffers (its body, the statements psycopg sends) have been freed, the
# next batch's come from the heap, between small objects that stay, and are kept. Fixed, the
# node after four batches sat at 118-122 MiB against 124-127 and peaked at 128-131 against
# 133-140 (three rounds each way, alternately, each from a fresh node).
# Above 256 KiB, though: every SSL read (asyncio's and uvloop's transports, so each request
# through HAProxy's TLS, and each answer from Redis, etcd and Patroni) allocates a 256 KiB
# buffer and shrinks it to what arrived. At a 256 KiB threshold each read was an mmap, a page
# fault, an mremap and a munmap (five page faults per submission under the closed loop, 0.02
# now), and the node's CPU per submission was higher in each of seven alternate pairs of
# runs, by 0.03-0.12 ms (medians 0.48 against 0.405 ms, then 0.50 against 0.44).
MMAP_THRESHOLD = 512 * 1024
# How much free memory at the top of the heap is kept rather than handed back at once: twice
# the mapping threshold, glibc's own rule while its threshold adapts (its fixed default, 128
# KiB, would hand back and take again most of each read buffer at every read).
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 (glibc only: musl has no mallopt)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def _mallopt(param: int, name: str, value: int) -> bool:
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(param, value))
    if not ok:
        log.warning("mallopt(%s, %d) refused", name, value)
    return ok


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; call before any thread starts. False off glibc."""
    return _mallopt(_M_ARENA_MAX, "M_ARENA_MAX", arenas)


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD, trim: int = TRIM_THRESHOLD) -> bool:
    """Map blocks of `threshold` bytes and more on their own, whatever was freed before (the
    threshold stops adapting), and keep up to `trim` bytes free at the heap's top. False off
    glibc."""
    return _mallopt(_M_MMAP_THRESHOLD, "M_MMAP_THRESHOLD", threshold) and _mallopt(
        _M_TRIM_THRESHOLD, "M_TRIM_THRESHOLD", trim
    )


def trim() -> bool:
    """Hand freed heap memory back to the system (glibc's malloc_trim); True when some was."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
