"""Offline side of the budget controller: the gym environment, training, baselines, export.

Importing this package registers the `EdgeDevice-v0` environment with gymnasium. Needs the
`[train]` extra (gymnasium, stable-baselines3, torch, onnx); the device side
(`edge_runtime`) never imports it.
"""

from importlib.util import find_spec

# Without the [train] extra the package still imports, so that `edge-train` (controller.cli)
# can say which extra to install in one line instead of dying on `import gymnasium`.
if find_spec("gymnasium") is not None:
    import gymnasium

    from controller.env import ENV_ID, EdgeDeviceEnv

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="controller.env:EdgeDeviceEnv")

__all__ = ["ENV_ID", "EdgeDeviceEnv"]
