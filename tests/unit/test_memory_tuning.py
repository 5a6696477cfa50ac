"""node.memory_tuning: freed heap memory goes back to the system after a big batch (#11
target 5: the node's RSS stays at most 150 MiB)."""

from __future__ import annotations

import threading

import psutil

from node import memory_tuning


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_trim_hands_back_what_a_worker_thread_freed() -> None:
    """64 MiB allocated by a worker thread (as the batch parse is) between small objects that
    stay (as a request's leftovers do) and then freed stays resident, as holes glibc cannot
    give back at the top of its heap, until trim() returns most of it (glibc, as on every
    Debian host)."""
    assert memory_tuning.limit_arenas(memory_tuning.ARENAS)
    held: list[list[bytes]] = []
    kept: list[bytes] = []

    def allocate() -> None:
        big = []
        for i in range(4096):
            big.append(bytes(16 * 1024 - 64) + bytes([i % 256]))
            kept.append(bytes(600) + bytes([i % 256]))  # past pymalloc's 512 bytes: malloc's
        held.append(big)

    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    grown = _rss()
    held.clear()
    freed = _rss()
    memory_tuning.trim()
    trimmed = _rss()
    assert freed - trimmed > 32 * 2**20, (grown, freed, trimmed)
