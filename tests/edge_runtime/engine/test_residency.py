"""Weight pages the session no longer reads leave the RSS; written pages never do."""

from __future__ import annotations

import sys

import numpy as np

from edge_runtime.engine.residency import mappings, release_weight_pages, weight_mappings

SMAPS = """\
7f0000000000-7f0000200000 rw-p 00000000 fe:00 11   /b/v/model.onnx.data
Size:               2048 kB
Rss:                2048 kB
Anonymous:             0 kB
VmFlags: rd wr mr mw me ac
7f0000200000-7f0000400000 rw-p 00200000 fe:00 11   /b/v/model.onnx.data
Size:               2048 kB
Rss:                1024 kB
Anonymous:             4 kB
7f0000400000-7f0000600000 r--p 00000000 fe:00 12   /usr/lib/libonnxruntime.so
Size:               2048 kB
Anonymous:             0 kB
7f0000600000-7f0000601000 rw-p 00000000 00:00 0
Anonymous:             4 kB
"""


def test_only_unwritten_mappings_of_the_weight_files():
    assert weight_mappings({"/b/v/model.onnx.data"}, SMAPS) == [(0x7F0000000000, 0x7F0000200000)]
    assert weight_mappings({"/elsewhere"}, SMAPS) == []


def test_a_session_over_released_pages_computes_the_same(tiny_bundle):
    from edge_runtime.bundle import read_manifest
    from edge_runtime.engine.session import VariantSession

    v = read_manifest(tiny_bundle).variant("dense")
    s = VariantSession(tiny_bundle / v.onnx, threads=1)  # releases what its load read
    d = s.decoder(16)
    d.reset()
    if sys.platform.startswith("linux"):
        assert _resident_kb(tiny_bundle / v.onnx) == 0  # what the load read was given back
    first = d.prefill([1, 2, 3, 4])
    assert release_weight_pages(tiny_bundle / v.onnx) >= 0  # again, mid-sequence: nothing changes
    d.rollback(0)
    assert np.array_equal(d.prefill([1, 2, 3, 4]), first)


def _resident_kb(model) -> int:
    """Resident kB of the mappings of the variant's data file, from /proc/self/smaps."""
    data = str((model.parent / "model.onnx.data").resolve())
    with open("/proc/self/smaps", encoding="utf-8") as f:
        return sum(kb.get("Rss", 0) for _, _, path, kb in mappings(f.read()) if path == data)


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw,size=4096k
31 22 0:27 / /media/my\\040disk rw - vfat /dev/sdb1 rw
"""


def test_filesystem_of_a_path_is_its_longest_mount():
    from pathlib import Path

    from edge_runtime.engine.residency import MEMORY_FILESYSTEMS, filesystem

    assert filesystem(Path("/work/bundles/x"), MOUNTINFO) == "ext4"
    assert filesystem(Path("/tmp/edge-expanded-1"), MOUNTINFO) in MEMORY_FILESYSTEMS
    assert filesystem(Path("/tmpfoo"), MOUNTINFO) == "ext4"
    assert filesystem(Path("/media/my disk/b"), MOUNTINFO) == "vfat"
