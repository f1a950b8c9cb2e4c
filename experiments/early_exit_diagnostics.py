"""Is the EarlyExitUpload scenario a real decision problem? Diagnostics of the DP oracle.

    python -m mei_envs.experiments.early_exit_diagnostics [--episodes 200] [--seed 100000]
        [--set k=v ...]

Reports, on held-out episodes: the share of decision states the DP oracle visits where its
action differs from eager's (upload now) and from lazy's (wait), the mean cost of every
registered policy with a 95% CI, and the DP's cost advantage over the better of eager and
lazy. If eager or lazy is (near-)optimal everywhere, the scenario is degenerate.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from mei_envs.baselines.early_exit import ENV_ID, DPOraclePolicy
from mei_envs.baselines.evaluation import make_env, run_episodes
from mei_envs.baselines.registry import list_policies
from mei_envs.config import parse_set_options


def decision_shares(env_config: dict, episodes: int, seed: int) -> dict[str, float]:
    """Shares of the DP's decisions (on its own trajectories) that wait / upload."""
    env = make_env(ENV_ID, env_config)
    pol = DPOraclePolicy(env)
    up = env.unwrapped.config.upload_fractions.index(1.0)
    n_dec = n_up = 0
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        done = False
        while not done:
            if env.unwrapped.decision_state()["decision"]:
                a = pol.act(obs, info)
                n_dec += 1
                n_up += int(a == up)
            else:
                a = 0
            obs, _, term, trunc, info = env.step(a)
            done = term or trunc
    return {
        "decisions": n_dec,
        "differs_from_eager": 1.0 - n_up / n_dec,
        "differs_from_lazy": n_up / n_dec,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=100_000, help="first held-out episode seed")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = parse_set_options(args.set)
    costs = {}
    for spec in list_policies(ENV_ID)[ENV_ID]:
        r = run_episodes(ENV_ID, spec.name, episodes=args.episodes, seed=args.seed, env_config=cfg)
        c = -r.returns
        costs[spec.name] = {
            "mean": float(c.mean()),
            "ci95": float(1.96 * c.std(ddof=1) / np.sqrt(c.size)),
        }
    shares = decision_shares(cfg, args.episodes, args.seed)
    naive = min(costs["eager"]["mean"], costs["lazy"]["mean"])
    out = {
        "config": cfg,
        "episodes": args.episodes,
        "seed": args.seed,
        "cost": costs,
        **shares,
        "dp_advantage_over_best_of_eager_lazy": (naive - costs["dp_oracle"]["mean"]) / naive,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, c in costs.items():
            print(f"{name:20s} cost {c['mean']:9.2f} +- {c['ci95']:.2f}")
        print(
            f"DP decisions {shares['decisions']}: differs from eager in "
            f"{100 * shares['differs_from_eager']:.1f}%, from lazy in "
            f"{100 * shares['differs_from_lazy']:.1f}%"
        )
        print(
            f"DP cost advantage over the better of eager/lazy: "
            f"{100 * out['dp_advantage_over_best_of_eager_lazy']:.1f}%"
        )
    return out


if __name__ == "__main__":
    main()
