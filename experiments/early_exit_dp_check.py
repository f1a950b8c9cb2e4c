"""How well does the DP (on the FSMC) predict the cost of its own policy in gauss_markov mode?

    python -m mei_envs.experiments.early_exit_dp_check [--episodes 2000] [--seed 100000]

In ``gauss_markov`` mode the DP plans on an FSMC fitted to the continuous channel; its
predicted cost (``solve_dp(...).initial_value``) is compared with a Monte Carlo of the
oracle on held-out episodes, for v1's defaults (airtime-preserving state rates) and for
v0's channel (rates at the bins' mean SNR, TR 36.814 path loss at 600 m).
"""

from __future__ import annotations

import argparse

import numpy as np

from mei_envs.baselines.early_exit import ENV_ID, solve_dp
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.envs.early_exit_upload import EarlyExitUploadEnv

CASES = {
    "v1 defaults": {"channel": "gauss_markov"},
    "v0 channel": {
        "channel": "gauss_markov",
        "path_loss_model": "36814_macro",
        "distance_m": 600.0,
        "fsmc_rate": "bin_mean_snr",
    },
}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=100_000, help="first held-out episode seed")
    args = ap.parse_args(argv)
    out = {}
    for name, cfg in CASES.items():
        predicted = solve_dp(EarlyExitUploadEnv(config=cfg).model).initial_value
        ret = run_episodes(
            ENV_ID, "dp_oracle", episodes=args.episodes, seed=args.seed, env_config=cfg
        ).returns
        mc = float(-ret.mean())
        half = float(1.96 * ret.std(ddof=1) / np.sqrt(ret.size))
        out[name] = {"predicted": predicted, "monte_carlo": mc, "ci_half": half}
        print(
            f"{name}: DP predicted cost {predicted:.2f}, Monte Carlo {mc:.2f} +- {half:.2f} "
            f"(95%), predicted/MC - 1 = {100 * (predicted / mc - 1):+.2f}%"
        )
    return out


if __name__ == "__main__":
    main()
