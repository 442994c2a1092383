"""Give back the pages of a variant's weight file that the session no longer reads.

onnxruntime maps external weights from the variant's `model.onnx.data` and, while it loads
the session, prepacks most of them into its own buffers. Every page it read to do so stays
resident, and counted in the process's RSS, as long as the mapping lives, which is the
session's life for a tensor with another reader. The tied token embedding of the default
model is that case: the lm_head prepacks it (113 MB of fp32 read end to end) and the token
lookup keeps it mapped, so dense held the weight twice, once packed and once as file pages
(peak RSS 714 MB against llama.cpp F32's 590; `benchmarks/peers.py`).

`release_weight_pages` tells the kernel, after the load, that those pages are not needed
(madvise MADV_DONTNEED): they leave the RSS and the page cache keeps them, so the rows the
token lookup reads later come back one page at a time, at the cost of a minor fault. It is
safe only where the pages still equal the file, so a mapping any page of which was written
is left alone (`weight_mappings`), and useful only where the file is on a disk: a masked
variant's expanded weights in a temporary folder on tmpfs are memory either way, so they
are left resident rather than hidden from the RSS. Linux only; anywhere else, and on any failure, it does nothing.

Beside it, the process's other memory bookkeeping: `trim_heap` hands the C heap's free memory
back after a burst of temporaries, and `peak_rss_mb` reads the process's peak (VmHWM).
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys
from collections.abc import Iterator
from pathlib import Path

# Prompt tokens per forward pass of a prefill. A pass's intermediates grow with it, and
# onnxruntime's arena keeps the largest it served: dense-int8 (eighth round, 2 cores) held
# 11 MB less after a 512-token prompt at 64 than at 256 (3 MB after 128 tokens), with
# prefill speed within the runs' noise; at 32 it lost about 10% of its prefill speed.
PREFILL_CHUNK = 64

log = logging.getLogger(__name__)

MADV_DONTNEED = 4  # Linux: drop the pages; a file mapping refaults them from the file


MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})  # a file here is memory: dropping its mapped pages frees none


def filesystem(path: Path, mountinfo: str | None = None) -> str:
    """The type of the filesystem `path` lies on, from /proc/self/mountinfo ("" if unknown)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            mountinfo = f.read()
    best, kind = "", ""
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        point = parts[4].replace("\\040", " ")
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, rest.split()[0]
    return kind


def mappings(smaps: str) -> Iterator[tuple[int, int, str, dict[str, int]]]:
    """(start, end, path, {field: kB}) of each mapping in a /proc/PID/smaps text ("" for an
    anonymous one)."""
    current: tuple[int, int, str, dict[str, int]] | None = None
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a mapping's header
            if current is not None:
                yield current
            start, end = (int(x, 16) for x in head[0].split("-"))
            current = (start, end, head[5].strip() if len(head) == 6 else "", {})
        elif current is not None and line.endswith(" kB"):
            key, _, value = line.partition(":")
            current[3][key] = int(value.split()[0])
    if current is not None:
        yield current


def weight_mappings(files: set[str], smaps: str) -> list[tuple[int, int]]:
    """(start, end) of the mappings of `files` (resolved paths) in a /proc/PID/smaps text
    whose every resident page still equals the file: no page written (`Anonymous: 0 kB`).

    onnxruntime maps weight files private and writable (copy on write); a page it had
    written would be anonymous, and dropping it would bring back the file's bytes, so a
    mapping with any such page is left alone.
    """
    return [(start, end) for start, end, path, kb in mappings(smaps) if path in files and kb.get("Anonymous") == 0]


def release_weight_pages(model: str | Path) -> int:
    """Drop the resident pages of `model`'s external-data files (every file beside it); the
    bytes of mappings advised (0 where nothing was mapped, or off Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        folder = Path(model).resolve().parent
        if filesystem(folder) in MEMORY_FILESYSTEMS:  # the pages would stay in memory, only out of the RSS
            return 0
        files = {str(p.resolve()) for p in folder.iterdir() if p.is_file()}
        with open("/proc/self/smaps", encoding="utf-8") as f:
            ranges = weight_mappings(files, f.read())
        if not ranges:
            return 0
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        released = 0
        for start, end in ranges:
            if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
                released += end - start
        return released
    except (OSError, AttributeError, ValueError) as e:  # no /proc, no libc symbol: keep the pages
        log.debug("%s: weight pages kept resident (%s)", model, e)
        return 0


def trim_heap() -> bool:
    """Give the C heap's free memory back to the system (glibc's malloc_trim); True if done.

    A heap keeps what a burst of allocations freed: a masked variant's expansion (numpy
    temporaries the size of a weight, which glibc serves from the heap once its mmap
    threshold has risen past them) left 20 MB there, the tokenizer's load about 38 MB.
    Later allocations would reuse it, but until then it counts in the RSS, and a process
    that loads a variant next peaks higher by as much. glibc only; elsewhere it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, in MiB.

    Linux's VmHWM resets at exec; ru_maxrss does not (a child forked from a big parent
    would report the parent's size), so it is only the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
