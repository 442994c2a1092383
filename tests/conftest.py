"""Shared fixtures: the tiny in-process model and bundles built from it."""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
