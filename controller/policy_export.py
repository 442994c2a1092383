"""Exporting a trained policy to ONNX and writing it into the bundle.

Contract (read by `edge_runtime.control.policy.OnnxPolicy`): one input `observation` float32
[N, observation.SIZE], one output `logits` float32 [N, n_actions]; the action is the argmax
of the logits over allowed actions, which is exactly SB3's deterministic action for a
categorical policy. Only the actor is exported (features -> actor MLP -> action head);
the value head stays behind.

Validate, then write: the ONNX file is exported to a temp file beside its destination,
checked with `onnx.checker`, loaded by onnxruntime through `OnnxPolicy`, and compared with
the SB3 policy on a fixed set of observations; only when the actions agree is it renamed
into `controller/policy.onnx` and the manifest's `controller` entry written (atomically, via
`edge_runtime.bundle.write_manifest`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle import POLICY, ControllerInfo, read_manifest, write_manifest
from edge_runtime.control import observation
from edge_runtime.control.policy import OnnxPolicy
from edge_runtime.errors import TrainError

log = logging.getLogger(__name__)

OPSET = 18
MIN_AGREEMENT = 0.999  # share of observations where ONNX and SB3 must pick the same action


def export_onnx(model: Any, path: str | os.PathLike[str]) -> None:
    """Write the actor of an SB3 actor-critic `model` as an ONNX graph at `path`."""
    import onnx
    import torch

    policy = model.policy

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def forward(self, obs: torch.Tensor) -> torch.Tensor:  # [N, SIZE] -> [N, A]
            features = self.policy.pi_features_extractor(obs)
            return self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))

    net = Logits().eval()
    dummy = torch.zeros(1, observation.SIZE, dtype=torch.float32)
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed" notices: not ours to fix
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            net, (dummy,), str(path), input_names=[OnnxPolicy.INPUT], output_names=[OnnxPolicy.OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("N")},), opset_version=OPSET, dynamo=True,
            external_data=False, verbose=False,
        )
    quiet.setLevel(level)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def sample_observations(env: Any, n: int, seed: int) -> np.ndarray:
    """A fixed set of [n, SIZE] observations: half from random-action rollouts of `env`
    (an `EdgeDeviceEnv`), half uniform in [0, 1] (states rollouts rarely reach)."""
    rng = np.random.default_rng(seed)
    rolled = []
    obs, _ = env.reset(seed=seed)
    while len(rolled) < n // 2:
        rolled.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, _ = env.reset()
    uniform = rng.random((n - len(rolled), observation.SIZE), dtype=np.float32)
    return np.concatenate([np.asarray(rolled, dtype=np.float32).reshape(-1, observation.SIZE), uniform])


def agreement(model: Any, policy: OnnxPolicy, obs: np.ndarray) -> dict[str, float]:
    """How often the ONNX policy's argmax equals SB3's deterministic action, and the logit gap."""
    import torch

    onnx_logits = policy.logits(obs)  # [N, A]
    with torch.no_grad():
        t = torch.as_tensor(obs, dtype=torch.float32)
        dist = model.policy.get_distribution(t)
        torch_logits = dist.distribution.logits.numpy()  # normalized log-probs: same argmax
    sb3_actions, _ = model.predict(obs, deterministic=True)
    return {
        "observations": int(len(obs)),
        "agreement": float(np.mean(onnx_logits.argmax(axis=1) == np.asarray(sb3_actions))),
        "max_abs_logprob_diff": float(np.max(np.abs(_log_softmax(onnx_logits) - torch_logits))),
    }


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def write_policy(
    bundle_dir: str | os.PathLike[str], model: Any, actions: list[str], check_obs: np.ndarray,
    info: dict[str, Any],
) -> dict[str, float]:
    """Export, check and install the policy in the bundle; returns the agreement measured.

    Args:
        bundle_dir: the bundle to write `controller/policy.onnx` and the manifest into.
        model: the trained SB3 model.
        actions: variant names in action order.
        check_obs: [N, SIZE] observations for the ONNX-vs-SB3 check.
        info: extra keys for the manifest's `controller` entry (algorithm, seed, ...).

    Raises:
        TrainError: the exported policy disagrees with SB3 or fails to load; nothing is written.
    """
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    unknown = [a for a in actions if a not in manifest.actions]
    if unknown:
        raise TrainError(f"actions {unknown} are not variants of bundle {str(root)!r}; retrain on this bundle")
    dest = root / POLICY
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".policy.", suffix=".onnx.tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export_onnx(model, tmp)
        policy = OnnxPolicy(tmp, len(actions))
        agree = agreement(model, policy, check_obs)
        if agree["agreement"] < MIN_AGREEMENT:
            raise TrainError(
                f"the exported ONNX policy picks SB3's action on only {agree['agreement']:.2%} of "
                f"{agree['observations']} observations (need {MIN_AGREEMENT:.1%}); the export is broken, "
                "nothing was written"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    controller = ControllerInfo(
        policy=POLICY,
        observation=observation.FEATURES,
        actions=tuple(actions),
        extra={"observation_version": observation.OBSERVATION_VERSION, **info, "onnx_agreement": agree},
    )
    write_manifest(root, replace(read_manifest(root), controller=controller))
    log.info("wrote %s and the manifest's controller entry (agreement %.4f)", dest, agree["agreement"])
    return agree
