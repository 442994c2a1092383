"""Fixtures for the training-side tests: a tiny training config (bundles, profiles: tests/conftest.py)."""

from __future__ import annotations

from controller.train import TrainConfig

# a few gradient steps: mechanics, not performance
TINY = TrainConfig(timesteps=512, n_envs=2, n_steps=128, batch_size=64, n_epochs=2, net_arch=(16, 16))
