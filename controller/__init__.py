"""Offline side of the budget controller: the gym environment, training, baselines, export.

Importing this package registers the `EdgeDevice-v0` environment with gymnasium. Needs the
`[train]` extra (gymnasium, stable-baselines3, torch, onnx); the device side
(`edge_runtime`) never imports it.
"""

import gymnasium

from controller.env import ENV_ID, EdgeDeviceEnv

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="controller.env:EdgeDeviceEnv")

__all__ = ["ENV_ID", "EdgeDeviceEnv"]
