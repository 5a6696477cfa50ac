"""node.memory_tuning: freed heap memory goes back to the system after a big batch (#11
target 5: the node's RSS stays at most 150 MiB)."""

from __future__ import annotations

import asyncio.sslproto
import subprocess
import sys
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


# Run in a fresh interpreter: malloc's thresholds are per process, and this one's have moved.
_AFTER_A_BIG_FREE = """
import sys, psutil
from node import memory_tuning
if sys.argv[1] == "fixed":
    assert memory_tuning.fix_mmap_threshold()
def rss():
    return psutil.Process().memory_info().rss
big = bytes(8 * 2**20)
del big  # mapped and unmapped: glibc's own threshold rises to 8 MiB
kept, blocks = [], []
start = rss()
for _ in range(32):
    blocks.append(bytearray(2 * 2**20))  # 64 MiB in 2 MiB blocks, as a batch's buffers
    kept.append(bytearray(100_000))  # between smaller blocks that stay
blocks.clear()
print(rss() - start)
"""


def _in_a_fresh_interpreter(script: str, *args: str) -> str:
    """What `script` prints, run with `args` in a new interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def _kept_after_freeing(mode: str) -> int:
    return int(_in_a_fresh_interpreter(_AFTER_A_BIG_FREE, mode))


def test_big_blocks_freed_after_a_bigger_one_go_back_to_the_system() -> None:
    """With the mmap threshold fixed, 64 MiB of 2 MiB blocks freed after an 8 MiB one (a
    batch's buffers after the previous batch's) leave the process at once; with glibc's
    adaptive threshold (the control) they stay resident, which is what the node kept after
    each batch."""
    assert _kept_after_freeing("fixed") < 8 * 2**20
    assert _kept_after_freeing("adaptive") > 48 * 2**20


# What an SSL read allocates: asyncio's SSL transport, and uvloop's (same constant, not
# importable from it), read each time into a new bytes object of this size, then shrink it.
_SSL_READ_SIZE = asyncio.sslproto.SSLProtocol.max_size

_MAPPED_BLOCKS = """
import ctypes, ctypes.util, sys
from node import memory_tuning
if sys.argv[1] == "tuned":
    assert memory_tuning.fix_mmap_threshold()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
def mapped():
    return libc.mallinfo2().hblks
start = mapped()
read_buffer = bytes(int(sys.argv[2]))
after_read = mapped()
batch_buffer = bytes(2 * 2**20)
print(after_read - start, mapped() - after_read)
"""


def _blocks_mapped(mode: str) -> tuple[int, int]:
    read, batch = _in_a_fresh_interpreter(_MAPPED_BLOCKS, mode, str(_SSL_READ_SIZE)).split()
    return int(read), int(batch)


def test_an_ssl_read_buffer_comes_from_the_heap_and_a_batch_buffer_is_mapped() -> None:
    """Tuned, the 256 KiB buffer every SSL read allocates (each request through TLS) comes from
    the heap, while a 2 MiB batch buffer still gets a mapping of its own; with glibc's start-up
    threshold (the control) the read buffer is mapped too, which cost the node an mmap, a page
    fault, an mremap and a munmap per read (strace under the closed loop)."""
    assert _blocks_mapped("tuned") == (0, 1)
    assert _blocks_mapped("default") == (1, 1)
