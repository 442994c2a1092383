"""Bundle files on disk: atomic writes, reading and writing the manifest, checking that files exist."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.records import MANIFEST
from edge_runtime.errors import BundleError

# --------------------------------------------------------------------------- files


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` through a temp file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(target: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Build a directory in a sibling temp dir; move it into place only if the block succeeds.

    On error the temp dir is removed and `target` is untouched. With `force`, an existing
    `target` is replaced (renamed aside first, deleted after the new one is in place).
    """
    target = Path(target)
    if target.exists() and not force:
        raise BundleError(f"output directory {str(target)!r} exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Parse and validate `bundle_dir/manifest.json` (files are not checked; see `check_files`)."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"bundle directory {str(root)!r} does not exist; build one with edge-export")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{str(path)!r} is missing: {str(root)!r} is not a bundle; build one with edge-export")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{str(path)!r} is not valid JSON ({e}); re-export the bundle") from e
    return Manifest.from_dict(data)


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Validate `manifest` by round-tripping it, then write it atomically."""
    text = manifest.to_json()
    Manifest.from_dict(json.loads(text))
    atomic_write_text(Path(bundle_dir) / MANIFEST, text)


def check_files(bundle_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """`BundleError` naming the first missing file of the manifest (a missing policy or difficulty
    model is not one: the runtime falls back to the rule controller or the client's difficulty)."""
    root = Path(bundle_dir)
    wanted = [manifest.tokenizer] + [v.onnx for v in manifest.variants]
    for rel in wanted:
        if not (root / rel).is_file():
            raise BundleError(f"bundle {str(root)!r} is missing {rel!r}; re-export the bundle with edge-export")


def file_bytes(onnx_path: str | os.PathLike[str]) -> int:
    """Bytes on disk of an ONNX file and every sibling external-data file it owns."""
    p = Path(onnx_path)
    return sum(f.stat().st_size for f in p.parent.iterdir() if f.name.startswith(p.name))
