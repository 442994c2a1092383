"""The bundle: `manifest.json`, `tokenizer.json`, one ONNX graph per variant, a policy.

Format `edge-bundle/1` (docs/DESIGN.md, section 3). This module is the one reader and
writer of that format; export, evaluation, training and serving all go through it.

    bundle/
      manifest.json
      tokenizer.json
      variants/<name>/model.onnx (+ model.onnx.data)
      controller/policy.onnx       # optional

Readers reject an unknown `format`, a missing file, or a malformed entry with a
`BundleError` that names the key and the fix. Unknown keys are kept (`extra`) so that a
newer writer's additions survive a round trip through an older reader.
"""

from __future__ import annotations

from edge_runtime.bundle.files import (
    atomic_directory,
    atomic_write_text,
    check_files,
    file_bytes,
    read_manifest,
    write_manifest,
)
from edge_runtime.bundle.manifest import ControllerInfo, Manifest, ModelInfo
from edge_runtime.bundle.records import (
    DIFFICULTY_MODEL,
    FORMAT,
    GATE_STATUSES,
    MANIFEST,
    METHODS,
    POLICY,
    PROMPT_LOOKUP,
    QUANTIZATIONS,
    TOKENIZER,
    Cost,
    Gate,
    Pair,
    Parity,
    Quality,
    Recovery,
    Variant,
    check_pairs,
)

__all__ = ['ControllerInfo', 'Cost', 'DIFFICULTY_MODEL', 'FORMAT', 'GATE_STATUSES', 'Gate', 'MANIFEST', 'METHODS', 'Manifest', 'ModelInfo', 'POLICY', 'PROMPT_LOOKUP', 'Pair', 'Parity', 'QUANTIZATIONS', 'Quality', 'Recovery', 'TOKENIZER', 'Variant', 'atomic_directory', 'atomic_write_text', 'check_files', 'check_pairs', 'file_bytes', 'read_manifest', 'write_manifest']
