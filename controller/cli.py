"""`edge-train`: train the budget controller, export it into the bundle, and evaluate it.

    edge-train --bundle bundles/smollm2-135m
    edge-train --bundle DIR --profiles laptop-battery hot-enclosure --held-out scripted-day --timesteps 200000

Steps: read the bundle's measured costs and quality; train on `--profiles` (default: the
bundled training split) with domain randomization; export the actor to
`controller/policy.onnx` after checking that it picks SB3's action on a fixed set of
observations; write the manifest's `controller` entry; replay every training and held-out
profile with the exported policy, the rule controller and every static variant (and the
oracle with `--oracle`) and print the table. Flags left unset keep the `--config` file's
values, which keep `TrainConfig`'s defaults.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from typing import Any

from edge_runtime.bundle import read_manifest, write_manifest
from edge_runtime.control.catalog import VariantCatalog
from edge_runtime.errors import EdgeError
from edge_runtime.extras import add_version, require
from edge_runtime.sim.simulator import RewardConfig


def build_parser() -> argparse.ArgumentParser:
    from controller.train import ALGORITHMS, HELD_OUT, TRAIN_PROFILES

    p = argparse.ArgumentParser(prog="edge-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="bundle directory; the policy and manifest entry are written here")
    p.add_argument("--profiles", nargs="+", default=list(TRAIN_PROFILES), metavar="P",
                   help=f"profiles to train on, names or .toml paths (default: {' '.join(TRAIN_PROFILES)})")
    p.add_argument("--held-out", nargs="*", default=list(HELD_OUT), metavar="P",
                   help=f"profiles to evaluate on, never trained on (default: {' '.join(HELD_OUT)})")
    p.add_argument("--timesteps", type=int, default=None, help="decisions to train for (default 600000, ~4 min)")
    p.add_argument("--seed", type=int, default=None, help="random seed; the same seed gives the same policy (default 0)")
    p.add_argument("--algorithm", choices=sorted(ALGORITHMS), default=None, help="SB3 algorithm (default ppo)")
    p.add_argument("--n-envs", type=int, default=None, help="vectorized environments (default 4)")
    p.add_argument("--config", default=None, metavar="TOML", help="TrainConfig keys (flags win)")
    p.add_argument("--reward", default=None, metavar="TOML", help="RewardConfig weights (default: built-in)")
    p.add_argument("--oracle", action="store_true", help="also evaluate the lookahead oracle (minutes)")
    p.add_argument("--no-export", action="store_true", help="train and evaluate, write nothing into the bundle")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_version(p)
    return p


def _summary_table(results: dict[str, Any], held_out: list[str], dense: str) -> tuple[str, dict[str, Any]]:
    from controller.evaluation import criteria

    rows = ["profile               split  rl reward  best static (reward)            rule    oracle  "
            "rl quality  rl miss  checks"]
    summary = {}
    for prof, reports in results.items():
        c = criteria(reports, dense)
        rl = reports["rl"]
        best = reports[c["best_static"]]
        oracle = f"{reports['oracle'].reward:8.1f}" if "oracle" in reports else "       -"
        checks = [k for k in ("beats_static", "beats_rule", "quality_gain", "deadline", "oracle")
                  if c.get(k) is not None]
        flags = " ".join(("+" if c[k] else "-") + k for k in checks)
        split = "held" if prof in held_out else "train"
        rows.append(f"{prof:21s} {split:5s} {rl.reward:9.1f}  {c['best_static'][7:]:20s}({best.reward:7.1f})  "
                    f"{reports['rule'].reward:7.1f} {oracle}  {rl.mean_quality:10.3f}  {rl.deadline_miss_rate:6.1%}  {flags}")
        summary[prof] = {"split": split, "reward": {k: round(r.reward, 2) for k, r in reports.items()},
                         "rl_quality": round(rl.mean_quality, 4), "rl_miss_rate": round(rl.deadline_miss_rate, 4),
                         "checks": {k: c[k] for k in checks}}
    return "\n".join(rows), summary


def run(args: argparse.Namespace) -> int:
    from controller.env import EdgeDeviceEnv, load_profiles
    from controller.evaluation import compare, controller_specs
    from controller.policy_export import sample_observations, write_policy
    from controller.train import Sb3Policy, TrainConfig, check_split, train
    from edge_runtime.sim.simulator import Simulator

    manifest = read_manifest(args.bundle)
    catalog = VariantCatalog.from_manifest(manifest)
    cfg = TrainConfig.from_toml(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in (("timesteps", args.timesteps), ("seed", args.seed),
                                   ("algorithm", args.algorithm), ("n_envs", args.n_envs)) if v is not None}
    cfg = replace(cfg, **overrides)
    reward = RewardConfig.from_toml(args.reward) if args.reward else RewardConfig()
    train_profiles = load_profiles(args.profiles)
    held_out = load_profiles(args.held_out) if args.held_out else []
    check_split(train_profiles, held_out)
    logging.getLogger("controller").info("quality from %s", catalog.quality_source)

    t0 = time.perf_counter()
    kept: dict[str, Any] = {}
    model, venv = train(cfg, catalog, train_profiles, reward, progress=not args.quiet, record=kept)
    train_s = time.perf_counter() - t0
    actions = venv.get_attr("actions")[0]
    names = [catalog.names[i] for i in actions]
    print(f"trained {cfg.algorithm} for {cfg.timesteps} steps in {train_s:.0f} s; actions {names}"
          + (f"; kept the weights of step {kept['kept_step']} (the best replay of the training profiles)" if kept else ""))

    check_env = EdgeDeviceEnv(catalog, train_profiles + held_out, reward, cfg.randomize, cfg.prune_dominated)
    check_obs = sample_observations(check_env, 2000, cfg.seed)
    specs = controller_specs(catalog, rl=False, oracle=args.oracle)
    everything = train_profiles + held_out
    if args.no_export:
        results = compare(args.bundle, everything, specs, reward, progress=not args.quiet)
        pol = Sb3Policy(model, actions)
        for prof in everything:
            results[prof.name]["rl"] = Simulator(prof, catalog, reward).run(pol, "rl")
    else:
        info = {
            "algorithm": cfg.algorithm, "seed": cfg.seed, "timesteps": cfg.timesteps,
            "trained_on": [p.name for p in train_profiles], "held_out": [p.name for p in held_out],
            "reward": reward.to_dict(), "train_config": cfg.to_dict(), "quality_source": catalog.quality_source,
            "train_seconds": round(train_s, 1), "selection": kept,
        }
        agree = write_policy(args.bundle, model, names, check_obs, info)
        print(f"exported {args.bundle}/controller/policy.onnx: ONNX picks SB3's action on "
              f"{agree['agreement']:.2%} of {agree['observations']} observations "
              f"(max |log-prob diff| {agree['max_abs_logprob_diff']:.1e})")
        results = compare(args.bundle, everything, specs + ["rl"], reward, progress=not args.quiet)
    table, summary = _summary_table(results, [p.name for p in held_out], catalog.names[catalog.dense])
    print(table)
    if not args.no_export:
        m = read_manifest(args.bundle)
        ctl = replace(m.controller, extra={**m.controller.extra, "evaluation": summary})
        write_manifest(args.bundle, replace(m, controller=ctl))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        require("train", "edge-train")
        return run(args)
    except EdgeError as e:
        print(f"edge-train: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
