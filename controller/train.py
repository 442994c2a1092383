"""Training the controller with stable-baselines3 on `EdgeDevice-v0`.

    catalog = VariantCatalog.from_manifest(read_manifest(bundle_dir))
    model, venv = train(TrainConfig(seed=0), catalog, load_profiles(TRAIN_PROFILES))

PPO is the default: on-policy with a discrete action and cheap simulated steps, it is
stable with little tuning; A2C is available for comparison. The policy is a small MLP
([64, 64] tanh) over the observation's features; its action logits are exported to ONNX
(`controller.policy_export`). `load_profiles` is `controller.env.load_profiles`. Training is deterministic for a given seed (seeded envs,
seeded torch, `torch_threads` = 1).

The bundled profiles are split: the policy trains on `TRAIN_PROFILES` and is judged on
`HELD_OUT`, which combine the same pressures (battery, heat, load) in settings it never saw.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_runtime.config import check_table, read_toml
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.errors import TrainError
from edge_runtime.sim.profile import Profile
from edge_runtime.sim.simulator import RewardConfig, Simulator

log = logging.getLogger(__name__)

TRAIN_PROFILES: tuple[str, ...] = (
    "desk-plugged", "laptop-battery", "phone-low-battery", "hot-enclosure", "bursty-traffic", "heavy-load-desk",
    "kiosk-rush",
)
HELD_OUT: tuple[str, ...] = ("jetson-battery-pack", "overnight-idle", "scripted-day", "commute-phone", "trace-office",
                             "field-tablet")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (`edge-train --config FILE.toml` reads these keys)."""

    algorithm: str = "ppo"  # key of ALGORITHMS
    timesteps: int = 600_000  # decisions simulated in total (~3-4 min here with 4 envs)
    seed: int = 0  # seeds envs, torch and the evaluation observations
    n_envs: int = 4  # DummyVecEnv copies; more = smoother gradients, same cost per step
    learning_rate: float = 1e-3  # 3e-4 learned the same policy more slowly (docs/controller.md)
    # the learning rate falls linearly with the steps left, down to this fraction of it (1: constant);
    # at a constant 1e-3 the late iterates wandered off (docs/controller.md)
    lr_final: float = 0.05
    n_steps: int = 1024  # rollout length per env per update (PPO/A2C)
    batch_size: int = 256  # PPO minibatch
    n_epochs: int = 10  # PPO passes over each rollout
    gamma: float = 0.995  # long horizon: a battery run flat is paid for hundreds of decisions later
    gae_lambda: float = 0.95
    ent_coef: float = 0.01  # exploration; too high keeps the policy from committing
    net_arch: tuple[int, ...] = (64, 64)  # hidden layers of the policy and value MLPs
    randomize: float = 0.3  # domain randomization strength (controller.env.perturb)
    prune_dominated: bool = True  # offer only undominated variants as actions
    # every this many steps (and at the end) the deterministic policy replays the training
    # profiles in the simulator; the best replay's weights are kept (0: keep the last ones)
    select_every: int = 25_000
    torch_threads: int = 1  # determinism, and fair to a shared 2-core machine

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise TrainError(f"algorithm {self.algorithm!r} is not one of {sorted(ALGORITHMS)}")
        for key in ("timesteps", "n_envs", "n_steps", "batch_size", "n_epochs", "torch_threads"):
            if getattr(self, key) < 1:
                raise TrainError(f"TrainConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.seed < 0 or self.select_every < 0:
            raise TrainError(f"TrainConfig.seed and select_every must be >= 0, got {self.seed}, {self.select_every}")
        if not (0 < self.gamma <= 1 and 0 < self.gae_lambda <= 1):
            raise TrainError(f"gamma and gae_lambda must be in (0, 1], got {self.gamma} and {self.gae_lambda}")
        if not 0 < self.lr_final <= 1:
            raise TrainError(f"TrainConfig.lr_final is a fraction of learning_rate in (0, 1], got {self.lr_final}")
        if self.learning_rate <= 0 or self.ent_coef < 0 or self.randomize < 0:
            raise TrainError("learning_rate must be > 0, ent_coef and randomize >= 0; got "
                             f"{self.learning_rate}, {self.ent_coef}, {self.randomize}")
        if not self.net_arch or any(n < 1 for n in self.net_arch):
            raise TrainError(f"net_arch must list positive layer widths, got {list(self.net_arch)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "train config") -> TrainConfig:
        return cls(**check_table(cls, data, where, TrainError))

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> TrainConfig:
        return cls.from_dict(read_toml(path, "train config", TrainError), f"train config {path}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["net_arch"] = list(self.net_arch)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# name -> stable_baselines3 class; both are actor-critics whose action logits export the same way
ALGORITHMS: dict[str, str] = {"ppo": "PPO", "a2c": "A2C"}


def check_split(train: Sequence[Profile], held_out: Sequence[Profile]) -> None:
    """`TrainError` if a held-out profile is also trained on (by name)."""
    both = sorted({p.name for p in train} & {p.name for p in held_out})
    if both:
        raise TrainError(f"profiles {both} are both trained on and held out; drop them from one list")


def make_env(catalog: VariantCatalog, profiles: Sequence[Profile], reward: RewardConfig, cfg: TrainConfig) -> Any:
    """The vectorized training env: `n_envs` seeded copies of `EdgeDevice-v0` in a DummyVecEnv."""
    import gymnasium
    from stable_baselines3.common.env_util import make_vec_env

    import controller  # noqa: F401  (registers the env id)
    from controller.env import ENV_ID

    return make_vec_env(
        lambda: gymnasium.make(ENV_ID, bundle=catalog, profiles=list(profiles), reward=reward,
                               randomize=cfg.randomize, prune_dominated=cfg.prune_dominated),
        n_envs=cfg.n_envs, seed=cfg.seed,
    )


def progress_bar(total: int, disable: bool = False) -> Any:
    """An SB3 callback drawing a tqdm bar over `total` timesteps."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total, unit="step", desc="edge-train", disable=disable, dynamic_ncols=True)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return Progress()


class Sb3Policy:
    """An in-memory SB3 model as an `edge_runtime.control.policy.Policy`: the argmax of its action
    logits over the allowed variants, as the exported `OnnxPolicy` decides."""

    def __init__(self, model: Any, actions: Sequence[int]) -> None:
        self.model, self.actions = model, np.asarray(actions, dtype=np.int64)

    def decide(self, obs: np.ndarray, allowed: np.ndarray) -> Any:
        import torch

        from edge_runtime.control.policy import Decision, best_allowed

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, -1))
            logits = self.model.policy.get_distribution(x).distribution.logits[0].numpy()
        return Decision(best_allowed(logits, self.actions, allowed), "rl")


def replay_score(policy: Any, catalog: VariantCatalog, profiles: Sequence[Profile], reward: RewardConfig,
                 baseline: dict[str, float]) -> float:
    """Mean over `profiles` of (the policy's simulated reward - `baseline`) / |baseline|, with the
    rule controller standing in where the policy raises, as the runtime's fallback does."""
    from edge_runtime.control.policy import FallbackPolicy, RulePolicy

    rel = []
    for prof in profiles:
        got = Simulator(prof, catalog, reward, record=False).run(FallbackPolicy(policy, RulePolicy(catalog))).reward
        rel.append((got - baseline[prof.name]) / max(abs(baseline[prof.name]), 1e-9))
    return float(np.mean(rel))


def selection(catalog: VariantCatalog, profiles: Sequence[Profile], reward: RewardConfig, every: int) -> Any:
    """An SB3 callback that replays the training profiles every `every` steps and at the end,
    and leaves the model with the weights of the best replay (`replay_score` against the best
    static choice of each profile). PPO's last iterate is not its best: on a menu whose cheap
    actions are within 2% of dense, seeds ended a few tenths of a percent either side of the
    best static choice (docs/controller.md). The held-out profiles play no part."""
    import copy

    from stable_baselines3.common.callbacks import BaseCallback

    from edge_runtime.control.policy import StaticPolicy

    baseline = {p.name: max(Simulator(p, catalog, reward, record=False).run(StaticPolicy(i)).reward
                            for i in catalog.offered) for p in profiles}

    class Select(BaseCallback):
        def _init_callback(self) -> None:
            self.best_score, self.best_step, self.best_state = -np.inf, 0, None
            self.scores: list[tuple[int, float]] = []
            self.next_at = every

        def _replay(self) -> None:
            policy = Sb3Policy(self.model, self.training_env.get_attr("actions")[0])
            score = replay_score(policy, catalog, profiles, reward, baseline)
            self.scores.append((self.num_timesteps, round(score, 5)))
            if score > self.best_score:
                self.best_score, self.best_step = score, self.num_timesteps
                self.best_state = copy.deepcopy(self.model.policy.state_dict())

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_at:
                self._replay()
                self.next_at += every
            return True

        def _on_training_end(self) -> None:
            self._replay()
            if self.best_state is not None:
                self.model.policy.load_state_dict(self.best_state)
            log.info("kept the policy of step %d (replay score %+.4f against the best static choice; last %+.4f)",
                     self.best_step, self.best_score, self.scores[-1][1])

    return Select()


def learning_rate(cfg: TrainConfig) -> Any:
    """SB3's learning rate: a float, or a function of the fraction of training left (1 -> 0)."""
    if cfg.lr_final >= 1:
        return cfg.learning_rate

    def at(progress_remaining: float) -> float:
        return cfg.learning_rate * max(progress_remaining, cfg.lr_final)

    return at


def train(
    cfg: TrainConfig,
    catalog: VariantCatalog,
    profiles: Sequence[Profile],
    reward: RewardConfig | None = None,
    progress: bool = True,
    record: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Train a policy; returns (SB3 model, its vectorized env). Deterministic for `cfg.seed`.
    `record`, when given, receives the step whose weights were kept and every replay's score."""
    import torch
    from stable_baselines3.common.utils import set_random_seed

    reward = reward or RewardConfig()
    torch.set_num_threads(cfg.torch_threads)
    set_random_seed(cfg.seed)
    env = make_env(catalog, profiles, reward, cfg)
    import stable_baselines3

    algo = getattr(stable_baselines3, ALGORITHMS[cfg.algorithm])
    kwargs: dict[str, Any] = dict(
        learning_rate=learning_rate(cfg), n_steps=cfg.n_steps, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
        ent_coef=cfg.ent_coef, seed=cfg.seed, verbose=0, device="cpu",
        policy_kwargs=dict(net_arch=dict(pi=list(cfg.net_arch), vf=list(cfg.net_arch))),
    )
    if cfg.algorithm == "ppo":
        kwargs.update(batch_size=min(cfg.batch_size, cfg.n_steps * cfg.n_envs), n_epochs=cfg.n_epochs)
    model = algo("MlpPolicy", env, **kwargs)
    log.info("training %s for %d steps on %s (%d actions: %s)", cfg.algorithm, cfg.timesteps,
             [p.name for p in profiles], env.action_space.n, env.get_attr("action_names")[0])
    select = selection(catalog, profiles, reward, cfg.select_every) if cfg.select_every else None
    model.learn(total_timesteps=cfg.timesteps,
                callback=[progress_bar(cfg.timesteps, disable=not progress), *([select] if select else [])])
    if select is not None and record is not None:
        record.update(kept_step=select.best_step, replay_scores=select.scores)
    return model, env


def policy_actions(model: Any, obs: np.ndarray) -> np.ndarray:
    """The SB3 policy's deterministic actions for observations [N, SIZE]."""
    actions, _ = model.predict(np.asarray(obs, dtype=np.float32), deterministic=True)
    return np.asarray(actions, dtype=np.int64)
