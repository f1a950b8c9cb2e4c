"""Tests of the SB3 trainer, the agent-policy loader and the ``train`` CLI (tiny budgets)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

import mei_envs  # noqa: E402
from mei_envs.agents.algos import ALGOS, check_algo_for_env  # noqa: E402
from mei_envs.agents.cli import add_train_parser  # noqa: E402
from mei_envs.agents.policy import infer_algo, load_agent_policy  # noqa: E402
from mei_envs.agents.train import TrainArgs, parse_expr, train  # noqa: E402
from mei_envs.baselines.evaluation import run_episodes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DISCRETE_ALGOS = ("ppo", "a2c", "dqn", "maskable_ppo")
CONTINUOUS_ALGOS = ("sac", "td3")

# Small, fast settings per algorithm (a few hundred steps, tiny rollouts and buffers).
FAST_HP: dict[str, dict] = {
    "ppo": {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "maskable_ppo": {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "a2c": {"n_envs": 2, "n_steps": 8},
    "dqn": {"learning_starts": 64, "buffer_size": 1000, "batch_size": 32},
    "sac": {"learning_starts": 64, "buffer_size": 1000, "batch_size": 32},
    "td3": {"learning_starts": 64, "buffer_size": 1000, "batch_size": 32},
}


# --- a tiny env with action masks: acting illegally raises, so unmasked sampling fails -------
class MaskedToyEnv(gym.Env):
    """Discrete(3); at step t action ``t % 3`` is illegal; 20 steps per episode."""

    metadata = {"render_modes": [], "info_metrics": {"legal_share": "mean", "steps": "last"}}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(3)
        self.t = 0  # phase: decides the illegal action
        self.n = 0  # steps taken this episode

    def _obs(self) -> np.ndarray:
        o = np.zeros(3, np.float32)
        o[self.t % 3] = 1.0
        return o

    def action_masks(self) -> np.ndarray:
        m = np.ones(3, bool)
        m[self.t % 3] = False
        return m

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.n = int(self.np_random.integers(3)), 0
        return self._obs(), {"action_mask": self.action_masks()}

    def step(self, action):
        if not self.action_masks()[int(action)]:
            raise ValueError(f"illegal action {action} at t={self.t}")
        reward = 1.0 if int(action) == (self.t + 1) % 3 else 0.0
        self.t, self.n = self.t + 1, self.n + 1
        info = {"action_mask": self.action_masks(), "legal_share": 1.0, "steps": self.n}
        return self._obs(), reward, self.n >= 20, False, info


TOY_ID = "mei_test/MaskedToy-v0"
if TOY_ID not in gym.registry:
    gym.register(TOY_ID, entry_point=MaskedToyEnv)


# Env config for algorithms without masks: envs that raise on a masked action by default
# serve it as a bypass instead.
UNMASKED = {"mei_envs/EdgeLLMCache-v0": {"invalid_action": "bypass"}}


def _env_config(env_id: str, algo: str) -> dict:
    return {} if algo == "maskable_ppo" else dict(UNMASKED.get(env_id, {}))


def _space(env_id: str) -> tuple[spaces.Space, bool]:
    env = gym.make(env_id)
    try:
        return env.action_space, callable(getattr(env.unwrapped, "action_masks", None))
    finally:
        env.close()


def _fast_args(tmp_path: Path, env_id: str, algo: str, name: str, **kw) -> TrainArgs:
    defaults = dict(
        env_id=env_id,
        algo=algo,
        total_timesteps=256,
        hyperparams_override=dict(FAST_HP[algo]),
        run_dir=str(tmp_path / name),
        eval_freq=128,
        eval_episodes=2,
        checkpoint_freq=128,
    )
    defaults.update(kw)
    return TrainArgs(**defaults)


def _check_run_dir(run_dir: Path, env_id: str, n_envs: int, total: int, normalize: bool) -> None:
    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    assert cfg["args"]["env_id"] == env_id
    assert cfg["args"]["total_timesteps"] == total
    info_metrics = cfg["info_metrics"]
    monitors = sorted((run_dir / "monitor").glob("*.monitor.csv"))
    assert len(monitors) == n_envs
    header = monitors[0].read_text().splitlines()[1].split(",")
    assert header[:3] == ["r", "l", "t"] and set(info_metrics) <= set(header)
    columns = (run_dir / "progress.csv").read_text().splitlines()[0].split(",")
    assert "eval/mean_reward" in columns
    assert {c.split("/")[0] for c in columns} <= {"time", "rollout", "eval", "train"}, columns
    assert any((run_dir / "tb").iterdir())
    with np.load(run_dir / "evaluations.npz") as ev:
        assert ev["timesteps"].ndim == 1 and len(ev["timesteps"]) >= 1
        assert ev["results"].shape == (len(ev["timesteps"]), 2)
        assert ev["ep_lengths"].shape == ev["results"].shape
        assert np.all(np.diff(ev["timesteps"]) > 0)
    ckpts = sorted((run_dir / "checkpoints").glob("model_*_steps.zip"))
    assert ckpts, "no checkpoint written"
    assert (run_dir / "model.zip").is_file()
    assert (run_dir / "vecnormalize.pkl").is_file() == normalize
    done = yaml.safe_load((run_dir / "COMPLETE").read_text())
    assert done["num_timesteps"] >= total
    assert not list(run_dir.rglob("*.tmp"))


# --- algorithm / action-space checks ----------------------------------------------------------
def test_algos_table_and_space_checks():
    assert set(ALGOS) == {"ppo", "a2c", "dqn", "sac", "td3", "maskable_ppo"}
    box, disc = gym.make("Pendulum-v1"), gym.make("CartPole-v1")
    for algo in ("dqn", "maskable_ppo"):
        with pytest.raises(ValueError, match=rf"{algo}.*Box"):
            check_algo_for_env(algo, box)
    for algo in ("sac", "td3"):
        with pytest.raises(ValueError, match=rf"{algo}.*Discrete"):
            check_algo_for_env(algo, disc)
    with pytest.raises(ValueError, match="action_masks"):
        check_algo_for_env("maskable_ppo", disc)  # CartPole has no masks
    with pytest.raises(ValueError, match=r"known algorithms.*ppo"):
        check_algo_for_env("reinforce", disc)
    for algo in ("ppo", "a2c"):
        check_algo_for_env(algo, box)
        check_algo_for_env(algo, disc)


def test_dqn_on_box_actions_fails_before_any_file(tmp_path):
    args = _fast_args(tmp_path, "Pendulum-v1", "dqn", "dqn_box")
    with pytest.raises(ValueError, match=r"dqn.*Discrete.*Box"):
        train(args)
    assert not (tmp_path / "dqn_box").exists()


def test_bad_hyperparameter_key_is_named(tmp_path):
    args = _fast_args(tmp_path, "CartPole-v1", "ppo", "bad", hyperparams_override={"n_stepz": 8})
    with pytest.raises(ValueError, match="n_stepz"):
        train(args)
    args = _fast_args(
        tmp_path, "CartPole-v1", "ppo", "bad2", hyperparams_override={"buffer_size": 8}
    )
    with pytest.raises(ValueError, match="buffer_size.*ppo"):
        train(args)


def test_parse_expr_literals_only():
    pk = parse_expr("dict(net_arch=dict(pi=[64, 64], vf=[32]), activation_fn=nn.Tanh)", key="pk")
    import torch

    assert pk == {"net_arch": {"pi": [64, 64], "vf": [32]}, "activation_fn": torch.nn.Tanh}
    assert parse_expr("dict(norm_obs=True, norm_reward=False, clip_obs=-1.5)", key="n") == {
        "norm_obs": True,
        "norm_reward": False,
        "clip_obs": -1.5,
    }
    with pytest.raises(ValueError, match="policy_kwargs.*__import__"):
        parse_expr("__import__('os').system('true')", key="policy_kwargs")
    with pytest.raises(ValueError, match="policy_kwargs"):
        parse_expr("dict(net_arch=[64", key="policy_kwargs")


def test_missing_env_entry_in_yaml_is_named(tmp_path):
    args = _fast_args(tmp_path, "Acrobot-v1", "ppo", "acro")
    with pytest.raises(KeyError, match="Acrobot-v1"):
        train(args)


# --- every discrete algorithm on every registered env ------------------------------------------
@pytest.mark.parametrize("algo", DISCRETE_ALGOS)
@pytest.mark.parametrize("env_id", mei_envs.ENV_IDS)
def test_train_save_load_evaluate(tmp_path, env_id, algo):
    space, has_masks = _space(env_id)
    if not isinstance(space, spaces.Discrete):
        pytest.skip(f"{algo} needs a Discrete action space; {env_id} has {space}")
    if algo == "maskable_ppo" and not has_masks:
        pytest.skip(f"{env_id} has no action_masks()")
    env_config = _env_config(env_id, algo)
    args = _fast_args(tmp_path, env_id, algo, "run", env_config=env_config)
    run_dir = train(args)
    assert run_dir == tmp_path / "run"
    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    _check_run_dir(
        run_dir, env_id, cfg["args"]["n_envs"], 256, normalize=bool(cfg["args"]["normalize"])
    )
    env = gym.make(env_id, **env_config)
    pol = load_agent_policy(run_dir / "model.zip", env)
    assert pol.algo == algo
    obs, info = env.reset(seed=3)
    pol.reset(obs, info)
    for _ in range(20):
        a = pol.act(obs, info)
        assert space.contains(a)
        if has_masks and algo == "maskable_ppo":
            assert env.unwrapped.action_masks()[a]
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            break
    ev = dict(episodes=2, seed=0, env_config=env_config)
    res = run_episodes(env_id, str(run_dir / "model.zip"), **ev)
    assert res.returns.shape == (2,) and np.all(np.isfinite(res.returns))
    again = run_episodes(env_id, str(run_dir / "model.zip"), **ev)
    np.testing.assert_array_equal(res.returns, again.returns)  # deterministic actions


@pytest.mark.parametrize("algo", CONTINUOUS_ALGOS)
def test_continuous_algos_on_pendulum(tmp_path, algo):
    args = _fast_args(tmp_path, "Pendulum-v1", algo, "run", eval_freq=0, checkpoint_freq=200)
    run_dir = train(args)
    assert not (run_dir / "evaluations.npz").exists()
    assert len(list((run_dir / "checkpoints").glob("replay_buffer_*_steps.pkl"))) == 1
    res = run_episodes("Pendulum-v1", str(run_dir / "model.zip"), episodes=2, seed=0)
    assert res.lengths.tolist() == [200, 200] and np.all(res.returns < 0)
    env = gym.make("Pendulum-v1")
    pol = load_agent_policy(run_dir / "model.zip", env)
    obs, info = env.reset(seed=0)
    a = pol.act(obs, info)
    assert a.shape == (1,) and env.action_space.contains(a.astype(np.float32))


def test_maskable_ppo_respects_masks_on_toy(tmp_path):
    hp_file = tmp_path / "hp.yml"
    hp_file.write_text(
        yaml.safe_dump(
            {TOY_ID: {"n_timesteps": 512, "policy": "MlpPolicy", "normalize": False, "n_envs": 2}}
        )
    )
    args = _fast_args(
        tmp_path, TOY_ID, "maskable_ppo", "toy", total_timesteps=None, hyperparams=str(hp_file)
    )
    run_dir = train(args)  # the toy raises on an illegal action, so masks were used throughout
    _check_run_dir(run_dir, TOY_ID, 2, 512, normalize=False)
    rows = (run_dir / "monitor" / "0.monitor.csv").read_text().splitlines()[2:]
    header = (run_dir / "monitor" / "0.monitor.csv").read_text().splitlines()[1].split(",")
    first = dict(zip(header, rows[0].split(","), strict=True))
    assert float(first["legal_share"]) == 1.0 and float(first["steps"]) == 20.0  # mean, last
    with np.load(run_dir / "evaluations.npz") as ev:
        assert ev["metric_steps"].shape == ev["results"].shape
        assert np.all(ev["metric_steps"] == 20)
    res = run_episodes(TOY_ID, str(run_dir / "model.zip"), episodes=3, seed=0)
    assert res.lengths.tolist() == [20, 20, 20]


# --- determinism ---------------------------------------------------------------------------------
def test_progress_csv_columns_sorted_not_hash_ordered(tmp_path):
    # SB3's CSV writer adds new columns in set order, which follows the per-process string
    # hash: the header of the same run changed between processes (a flaky test). 24 keys in
    # set order are practically never sorted, so this fails with the old writer at any seed.
    from mei_envs.agents.files import make_logger

    keys = [f"{ns}/k{i:02d}" for ns in ("train", "time", "rollout", "eval") for i in range(6)]
    logger = make_logger(tmp_path, tensorboard=False, verbose=0)
    for k in keys:
        logger.record(k, 1.0)
    logger.dump(1)
    logger.record("eval/k00", 3.0)
    logger.record("a/late", 2.0)  # a key first seen later goes after the existing columns
    logger.dump(2)
    logger.close()
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert lines[0].split(",") == [*sorted(keys), "a/late"]
    assert lines[1] == ",".join(["1.0"] * len(keys)) + ","  # the old row padded
    second = dict(zip(lines[0].split(","), lines[2].split(","), strict=True))
    assert second["eval/k00"] == "3.0" and second["a/late"] == "2.0" and second["train/k00"] == ""


def _params(run_dir: Path, algo: str) -> dict:
    model = ALGOS[algo].load(str(run_dir / "model.zip"), device="cpu")
    return {k: v.detach().numpy().copy() for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize("env_id", ["CartPole-v1", *mei_envs.ENV_IDS])
def test_same_seed_same_parameters(tmp_path, env_id):
    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        args = _fast_args(
            tmp_path,
            env_id,
            "ppo",
            name,
            seed=seed,
            total_timesteps=512,
            env_config=_env_config(env_id, "ppo"),
        )
        runs.append(_params(train(args), "ppo"))
    a, b, c = runs
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(not np.array_equal(a[k], c[k]) for k in a), "seed had no effect"
    ev_a = np.load(tmp_path / "a" / "evaluations.npz")["results"]
    ev_b = np.load(tmp_path / "b" / "evaluations.npz")["results"]
    np.testing.assert_array_equal(ev_a, ev_b)


# --- policy loading ---------------------------------------------------------------------------
def test_infer_algo_from_zip_alone(tmp_path):
    for algo in ("ppo", "a2c", "dqn"):
        run_dir = train(_fast_args(tmp_path, "CartPole-v1", algo, algo, eval_freq=0))
        lone = tmp_path / f"lone_{algo}"
        lone.mkdir()
        (lone / "m.zip").write_bytes((run_dir / "model.zip").read_bytes())
        assert infer_algo(lone / "m.zip") == algo
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.zip"):
        infer_algo(tmp_path / "junk.zip")
    with pytest.raises(ValueError, match="observation_space"):
        load_agent_policy(tmp_path / "ppo" / "model.zip", gym.make("Acrobot-v1"))


def test_vecnormalize_stats_applied_and_frozen(tmp_path):
    run_dir = train(_fast_args(tmp_path, "CartPole-v1", "ppo", "n", normalize=True, eval_freq=0))
    env = gym.make("CartPole-v1")
    pol = load_agent_policy(run_dir / "model.zip", env)
    assert pol.obs_normalizer is not None
    mean = pol.obs_normalizer.obs_rms.mean.copy()
    assert np.any(mean != 0)
    obs, info = env.reset(seed=0)
    for _ in range(10):
        obs, *_ = env.step(pol.act(obs, info))
    np.testing.assert_array_equal(pol.obs_normalizer.obs_rms.mean, mean)


# --- resume -----------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_resume_after_sigkill(tmp_path, algo):
    run_dir = tmp_path / "killed"
    hp = {"ppo": ["n_envs=2", "n_steps=64", "batch_size=64"], "dqn": ["learning_starts=64"]}
    cmd = [sys.executable, "-m", "mei_envs.agents.train", "--env", "CartPole-v1", "--algo", algo]
    cmd += ["--timesteps", "1000000", "--checkpoint-freq", "128", "--eval-freq", "0"]
    cmd += ["--run-dir", str(run_dir), "--seed", "3"]
    if algo == "ppo":
        cmd += ["--normalize"]
    for item in hp[algo]:
        cmd += ["--hp", item]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    ckpt_dir = run_dir / "checkpoints"
    try:
        deadline = time.monotonic() + 60
        while not list(ckpt_dir.glob("model_*_steps.zip")):
            if proc.poll() is not None:
                pytest.fail(f"trainer exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 60 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert not (run_dir / "COMPLETE").exists()
    steps = max(int(p.name.split("_")[1]) for p in ckpt_dir.glob("model_*_steps.zip"))
    target = (steps // 128 + 4) * 128  # a multiple of PPO's 2 x 64 rollout
    args = TrainArgs(
        env_id="CartPole-v1", algo=algo, run_dir=str(run_dir), resume=True,
        total_timesteps=target,
    )  # fmt: skip
    assert train(args) == run_dir
    done = yaml.safe_load((run_dir / "COMPLETE").read_text())
    assert done["num_timesteps"] == target
    model = ALGOS[algo].load(str(run_dir / "model.zip"))
    assert model.num_timesteps == target
    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    assert cfg["args"]["seed"] == 3 and cfg["args"]["total_timesteps"] == target
    monitor = (run_dir / "monitor" / "0.monitor.csv").read_text()
    assert monitor.count("r,l,t") == 1  # appended, not overwritten
    progress = (run_dir / "progress.csv").read_text().splitlines()
    assert progress[0].count(",") == progress[-1].count(",")
    assert (run_dir / "vecnormalize.pkl").is_file() == (algo == "ppo")
    # A second resume of a complete run is a no-op.
    assert train(args) == run_dir


def test_resume_errors_name_the_file(tmp_path):
    run_dir = train(_fast_args(tmp_path, "CartPole-v1", "ppo", "r", eval_freq=0))
    (run_dir / "COMPLETE").unlink()
    latest = run_dir / "checkpoints" / "model_256_steps.zip"
    latest.write_bytes(b"garbage")
    args = TrainArgs(
        env_id="CartPole-v1", algo="ppo", run_dir=str(run_dir), resume=True, total_timesteps=512
    )
    with pytest.raises(ValueError, match="model_256_steps.zip"):
        train(args)
    for p in (run_dir / "checkpoints").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="checkpoints"):
        train(args)
    with pytest.raises(FileNotFoundError, match="config.yml"):
        train(TrainArgs(env_id="CartPole-v1", run_dir=str(tmp_path / "none"), resume=True))
    with pytest.raises(ValueError, match="algo"):
        train(TrainArgs(env_id="CartPole-v1", algo="a2c", run_dir=str(run_dir), resume=True))


def test_existing_run_dir_needs_resume(tmp_path):
    run_dir = train(_fast_args(tmp_path, "CartPole-v1", "a2c", "r", eval_freq=0))
    with pytest.raises(FileExistsError, match="resume"):
        train(_fast_args(tmp_path, "CartPole-v1", "a2c", "r"))
    assert (run_dir / "COMPLETE").is_file()


# --- CLI ------------------------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(argv)
    return ns.func(ns)


def test_cli_train_prints_run_dir(tmp_path, capsys):
    run_dir = tmp_path / "cli"
    argv = ["train", "--env", "CartPole-v1", "--algo", "a2c", "--timesteps", "64"]
    argv += ["--run-dir", str(run_dir), "--eval-freq", "0", "--hp", "n_envs=2", "--seed", "1"]
    assert _cli(argv) == 0
    assert capsys.readouterr().out.strip() == str(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    assert cfg["args"]["n_envs"] == 2 and cfg["args"]["seed"] == 1
    assert _cli([*argv[:-4], "--hp", "n_envz=2", "--run-dir", str(tmp_path / "x")]) == 2
    assert "n_envz" in capsys.readouterr().err
    assert _cli([*argv, "--set", "oops"]) == 2
    assert "oops" in capsys.readouterr().err


def test_cli_resume_takes_algo_from_run(tmp_path, capsys):
    run_dir = tmp_path / "cli"
    argv = ["train", "--env", "CartPole-v1", "--run-dir", str(run_dir), "--eval-freq", "0"]
    hp = ["--hp", "n_envs=2", "--hp", "n_steps=8"]
    assert _cli([*argv, "--algo", "a2c", "--timesteps", "64", *hp]) == 0
    assert yaml.safe_load((run_dir / "COMPLETE").read_text())["num_timesteps"] == 64
    assert _cli([*argv, "--resume", "--timesteps", "128"]) == 0  # no --algo: the run's a2c
    assert yaml.safe_load((run_dir / "COMPLETE").read_text())["num_timesteps"] == 128
    assert _cli([*argv, "--resume", "--algo", "ppo"]) == 2
    assert "a2c" in capsys.readouterr().err


@pytest.mark.parametrize("env_id", mei_envs.ENV_IDS)
def test_cli_env_config_reaches_env(tmp_path, env_id):
    space, _ = _space(env_id)
    if not isinstance(space, spaces.Discrete):
        pytest.skip(f"{env_id}: not discrete")
    argv = ["train", "--env", env_id, "--algo", "a2c", "--timesteps", "32", "--eval-freq", "0"]
    argv += ["--run-dir", str(tmp_path / "c"), "--hp", "n_envs=1", "--set", "no_such_key=1"]
    assert _cli(argv) == 2  # the env's config rejects unknown keys


def test_planned_timesteps_says_why_a_budget_is_rounded_up():
    from mei_envs.agents.hyperparameters import ResolvedHyperparams
    from mei_envs.agents.train import planned_timesteps

    ppo = ResolvedHyperparams(300, 2, None, "MlpPolicy", {"n_steps": 64})
    steps, note = planned_timesteps(ALGOS["ppo"], ppo)
    assert steps == 384 and "rounded up to 384" in note and "64*2" in note
    assert planned_timesteps(ALGOS["ppo"], ppo, start=128) == (384, note)
    exact = ResolvedHyperparams(256, 2, None, "MlpPolicy", {"n_steps": 64})
    assert planned_timesteps(ALGOS["ppo"], exact) == (256, "")
    dqn = ResolvedHyperparams(10, 1, None, "MlpPolicy", {"train_freq": 4})
    assert planned_timesteps(ALGOS["dqn"], dqn)[0] == 12
