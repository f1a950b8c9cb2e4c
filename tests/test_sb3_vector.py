"""The SB3 adapter of Gymnasium vector envs (``mei_envs.agents.vector``) and its use in training.

The proof that the native path changes speed, not results: an algorithm seeded alike collects
the same rollouts (observations, actions, rewards, episode starts, values, log-probs,
returns) through :class:`VectorEnvAdapter` as through SB3's ``DummyVecEnv`` over single envs,
and records the same episodes. It is checked on

* ``SyncVectorEnv(..., autoreset_mode=SAME_STEP)`` over every registered env (the stand-in
  for a native vector env: same layout of infos, and sub-env ``i`` *is* the single env);
* a tiny native vector env written here on :class:`mei_envs.vector.MeiVectorEnv`, with masks
  (an illegal action raises), truncation (bootstrapped from the terminal observation) and
  lean info (per-episode totals ``episode_<key>``), through ``PPO``, ``MaskablePPO`` and the
  trainer (``mei-envs train`` with ``vec_env="native"`` vs ``"dummy"``);
* every registered env with a native vector env (``vector_entry_point``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

import torch as th  # noqa: E402
from sb3_contrib import MaskablePPO  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

import mei_envs  # noqa: E402
from mei_envs.agents.envs import make_vec_env, resolve_vec_env  # noqa: E402
from mei_envs.agents.train import TrainArgs, train  # noqa: E402
from mei_envs.agents.vector import VectorEnvAdapter, unbatch_infos  # noqa: E402
from mei_envs.baselines.evaluation import make_env  # noqa: E402
from mei_envs.registration import env_config_class  # noqa: E402
from mei_envs.vector import MeiVectorEnv  # noqa: E402

TOY_ID = "mei_envs_test/ToyWalk-v0"
BUFFER_FIELDS = (
    "observations",
    "actions",
    "rewards",
    "episode_starts",
    "values",
    "log_probs",
    "returns",
    "advantages",
)


# ---- a tiny env and its native vector version ------------------------------------------------
class ToyWalk(gym.Env):
    """Walk on 0..L towards a random goal: actions left/stay/right; stepping off the line is
    illegal (raises; with ``config={"strict": False}`` it is a stay). Ends at the goal;
    truncated after T steps. Reward: minus the distance plus N(0, 0.1) noise drawn every step.
    Lean info: per step ``dist``, ``moves``, ``noise``; at the end ``episode_<key>`` totals
    (``episode_dist`` deliberately 1000 + the sum, so a test can tell the totals were used)."""

    L, T = 4, 6
    metadata = {
        "render_modes": [],
        "info_metrics": {"dist": "sum", "moves": "mean", "noise": "last"},
    }

    def __init__(self, config: dict | None = None, render_mode: str | None = None) -> None:
        self.strict = bool((config or {}).get("strict", True))
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(3)
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos, self.goal = (int(v) for v in self.np_random.integers(0, self.L + 1, size=2))
        self.t, self.dist_sum, self.moves = 0, 0.0, 0.0
        return self._obs(), {"start": float(self.pos)}

    def _obs(self) -> np.ndarray:
        return np.array(
            [self.pos / self.L * 2 - 1, self.goal / self.L * 2 - 1, self.t / self.T], np.float32
        )

    def action_masks(self) -> np.ndarray:
        return np.array([self.pos > 0, True, self.pos < self.L])

    def step(self, action: Any):
        a = int(action)
        if not self.action_masks()[a]:
            if self.strict:
                raise ValueError(f"illegal action {a} at position {self.pos}")
            a = 1
        self.pos += a - 1
        self.t += 1
        noise = float(self.np_random.normal())
        dist = abs(self.pos - self.goal)
        reward = -dist + 0.1 * noise
        terminated = dist == 0
        truncated = not terminated and self.t >= self.T
        self.dist_sum += dist
        self.moves += float(a != 1)
        info = {"dist": float(dist), "moves": float(a != 1), "noise": noise}
        if terminated or truncated:
            info["episode_dist"] = 1000.0 + self.dist_sum
            info["episode_moves"] = self.moves / self.t
            info["episode_noise"] = noise
        return self._obs(), reward, terminated, truncated, info


class ToyWalkVector(MeiVectorEnv):
    """ToyWalk for all sub-envs at once (noise drawn per sub-env from ``rngs[i]``)."""

    single_env_class = ToyWalk

    def _setup(self, single: ToyWalk) -> None:
        self.strict = self.single_env.strict
        n = self.num_envs
        self.pos = np.zeros(n, np.int64)
        self.goal = np.zeros(n, np.int64)
        self.t = np.zeros(n, np.int64)
        self.dist_sum = np.zeros(n)
        self.moves = np.zeros(n)

    def _reset_envs(self, mask: np.ndarray, options: dict | None = None):
        for i in np.flatnonzero(mask):
            self.pos[i], self.goal[i] = self.rngs[i].integers(0, ToyWalk.L + 1, size=2)
        self.t[mask] = 0
        self.dist_sum[mask] = 0.0
        self.moves[mask] = 0.0
        return self._obs(), {"start": self.pos.astype(float), "_start": mask.copy()}

    def _obs(self) -> np.ndarray:
        L, T = ToyWalk.L, ToyWalk.T
        return np.stack([self.pos / L * 2 - 1, self.goal / L * 2 - 1, self.t / T], 1).astype(
            np.float32
        )

    def action_masks(self) -> np.ndarray:
        ones = np.ones(self.num_envs, bool)
        return np.stack([self.pos > 0, ones, self.pos < ToyWalk.L], axis=1)

    def _step(self, actions: Any):
        a = np.asarray(actions, dtype=np.int64)
        legal = self.action_masks()[np.arange(self.num_envs), a]
        if not legal.all():
            if self.strict:
                raise ValueError(f"illegal actions {a} at positions {self.pos}")
            a = np.where(legal, a, 1)
        self.pos += a - 1
        self.t += 1
        noise = np.array([rng.normal() for rng in self.rngs])
        dist = np.abs(self.pos - self.goal)
        reward = -dist + 0.1 * noise
        terminated = dist == 0
        truncated = ~terminated & (self.t >= ToyWalk.T)
        self.dist_sum += dist
        self.moves += a != 1
        done = terminated | truncated
        ones = np.ones(self.num_envs, bool)
        infos: dict[str, Any] = {
            "dist": dist.astype(float),
            "_dist": ones,
            "moves": (a != 1).astype(float),
            "_moves": ones,
            "noise": noise,
            "_noise": ones,
        }
        if done.any():
            infos["episode_dist"], infos["_episode_dist"] = 1000.0 + self.dist_sum, done.copy()
            infos["episode_moves"], infos["_episode_moves"] = self.moves / self.t, done.copy()
            infos["episode_noise"], infos["_episode_noise"] = noise.copy(), done.copy()
        obs, infos = self._autoreset(self._obs(), terminated, truncated, infos)
        return obs, reward, terminated, truncated, infos


if TOY_ID not in gym.registry:
    gym.register(TOY_ID, entry_point=ToyWalk, vector_entry_point=ToyWalkVector)


# ---- helpers -----------------------------------------------------------------------------
class RolloutRecorder(BaseCallback):
    """Copies of the rollout buffer at the end of every rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.rollouts: list[dict[str, np.ndarray]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        self.rollouts.append({k: getattr(buf, k).copy() for k in BUFFER_FIELDS})


def collect(venv, algo=PPO, rollouts: int = 3, n_steps: int = 32, seed: int = 0):
    """Train ``algo`` for ``rollouts`` rollouts; return the recorded buffers, the episodes of
    ``ep_info_buffer`` (without their times) and the final parameters."""
    th.manual_seed(seed)
    model = algo(
        "MlpPolicy",
        venv,
        n_steps=n_steps,
        batch_size=32,
        n_epochs=2,
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": [16]},
    )
    rec = RolloutRecorder()
    model.learn(rollouts * n_steps * venv.num_envs, callback=rec)
    episodes = [{k: v for k, v in ep.items() if k != "t"} for ep in model.ep_info_buffer]
    params = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    venv.close()
    return rec.rollouts, episodes, params


def assert_same_training(a, b) -> None:
    rollouts_a, episodes_a, params_a = a
    rollouts_b, episodes_b, params_b = b
    assert len(rollouts_a) == len(rollouts_b) > 0
    for ra, rb in zip(rollouts_a, rollouts_b, strict=True):
        for k in BUFFER_FIELDS:
            np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
    assert episodes_a, "no episode ended: the test would not cover terminal observations"
    assert len(episodes_a) == len(episodes_b)
    for ea, eb in zip(episodes_a, episodes_b, strict=True):
        assert ea.keys() == eb.keys()
        for k in ea:
            np.testing.assert_equal(ea[k], eb[k], err_msg=k)
    for k in params_a:
        assert th.equal(params_a[k], params_b[k]), k


def sync_adapter(env_id: str, n: int, env_config: dict, **kwargs) -> VectorEnvAdapter:
    """The stand-in native vector env: SyncVectorEnv (SAME_STEP) over the single envs."""
    fns = [functools.partial(make_env, env_id, env_config) for _ in range(n)]
    venv = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    metrics = make_env(env_id, env_config).unwrapped.metadata.get("info_metrics", {})
    return VectorEnvAdapter(venv, info_metrics=metrics, env_id=env_id, **kwargs)


def dummy(env_id: str, n: int, env_config: dict, masked: bool = False):
    metrics = make_env(env_id, env_config).unwrapped.metadata.get("info_metrics", {})
    return make_vec_env(
        env_id, n, env_config=env_config, info_metrics=metrics, masked=masked, vec_env="dummy"
    )


# Configs with short episodes, so three rollouts of 32 steps cross several episode ends.
SHORT_CONFIGS = {
    "mei_envs/EarlyExitUpload-v1": {"preset": "short_replies"},
    "mei_envs/EdgeLLMCache-v0": {"requests_per_episode": 20},
    "mei_envs/SplitFedAlloc-v0": {"preset": "few_devices", "max_rounds": 10},
}


# ---- rollout equality --------------------------------------------------------------------
def _config_fields(env_id: str) -> set[str]:
    return {f.name for f in dataclasses.fields(env_config_class(env_id))}


def _cases(native_only: bool) -> list[Any]:
    """(env id, algorithm, config): masked envs with MaskablePPO (and PPO where the env can
    take illegal actions as a no-op), each at full and lean info where the env has both."""
    cases = []
    for env_id in mei_envs.ENV_IDS:
        if native_only and not gym.spec(env_id).vector_entry_point:
            continue
        base = SHORT_CONFIGS[env_id]
        fields = _config_fields(env_id)
        algo = MaskablePPO if env_id == "mei_envs/EdgeLLMCache-v0" else PPO
        cases.append(pytest.param(env_id, algo, base, id=f"{env_id}-{algo.__name__}"))
        if "info" in fields:
            lean = {**base, "info": "lean"}
            cases.append(pytest.param(env_id, algo, lean, id=f"{env_id}-{algo.__name__}-lean"))
        if algo is MaskablePPO and "invalid_action" in fields:
            bypass = {**base, "invalid_action": "bypass"}
            cases.append(pytest.param(env_id, PPO, bypass, id=f"{env_id}-PPO-bypass"))
    return cases


@pytest.mark.parametrize(("env_id", "algo", "cfg"), _cases(native_only=False))
def test_rollouts_through_sync_vector_env_equal_dummy(env_id, algo, cfg):
    masked = algo is MaskablePPO
    a = collect(sync_adapter(env_id, 3, cfg), algo)
    b = collect(dummy(env_id, 3, cfg, masked=masked), algo)
    assert_same_training(a, b)


@pytest.mark.parametrize(("env_id", "algo", "cfg"), _cases(native_only=True))
def test_rollouts_through_native_vector_env_equal_dummy(env_id, algo, cfg):
    """The native vector env of every env that has one: the proof that ``vec_env="auto"``
    leaves training results unchanged."""
    metrics = make_env(env_id, cfg).unwrapped.metadata.get("info_metrics", {})
    native = make_vec_env(env_id, 3, env_config=cfg, info_metrics=metrics, vec_env="native")
    assert isinstance(native, VectorEnvAdapter)
    a = collect(native, algo)
    b = collect(dummy(env_id, 3, cfg, masked=algo is MaskablePPO), algo)
    assert_same_training(a, b)


@pytest.mark.parametrize("step_info", [True, False])
@pytest.mark.parametrize(
    ("algo", "cfg", "normalize"),
    [(PPO, {"strict": False}, False), (PPO, {"strict": False}, True), (MaskablePPO, {}, False)],
)
def test_rollouts_through_native_toy_vector_env_equal_dummy(algo, cfg, normalize, step_info):
    metrics = ToyWalk.metadata["info_metrics"]
    native = make_vec_env(
        TOY_ID, 4, env_config=cfg, info_metrics=metrics, vec_env="native", step_info=step_info
    )
    assert isinstance(native, VectorEnvAdapter)
    old = dummy(TOY_ID, 4, cfg, masked=algo is MaskablePPO)
    if normalize:  # VecNormalize's reward statistics see the rewards' dtype (float32 in SB3)
        native, old = VecNormalize(native), VecNormalize(old)
    a = collect(native, algo)
    b = collect(old, algo)
    assert_same_training(a, b)
    # Truncations happened and were bootstrapped alike (T steps cap every episode).
    assert any(ep["l"] == ToyWalk.T for ep in a[1])
    # The episode metrics are the env's own totals (episode_dist = 1000 + the sum).
    assert all(ep["dist"] >= 1000.0 for ep in a[1])


def test_unmasked_ppo_on_strict_toy_raises_through_the_adapter():
    """The strict toy raises on illegal actions, so the masked test above proves the masks
    reached MaskablePPO through env_method("action_masks")."""
    native = make_vec_env(TOY_ID, 4, vec_env="native")
    with pytest.raises(ValueError, match="illegal actions"):
        collect(native, PPO, rollouts=10)


# ---- the trainer: vec_env="native" and "dummy" train the same agent ------------------------
def test_train_native_and_dummy_give_the_same_run(tmp_path):
    hp = tmp_path / "maskable_ppo.yml"
    hp.write_text(
        yaml.safe_dump(
            {
                TOY_ID: {
                    "n_timesteps": 256,
                    "policy": "MlpPolicy",
                    "n_envs": 4,
                    "n_steps": 32,
                    "batch_size": 64,
                    "n_epochs": 2,
                    "normalize": True,
                }
            }
        )
    )
    runs = {}
    for vec_env in ("native", "dummy"):
        runs[vec_env] = train(
            TrainArgs(
                env_id=TOY_ID,
                algo="maskable_ppo",
                seed=3,
                vec_env=vec_env,
                hyperparams=str(hp),
                run_dir=str(tmp_path / vec_env),
                eval_freq=128,
                eval_episodes=3,
                checkpoint_freq=0,
                tensorboard=False,
                progress_bar=False,
            )
        )
    from mei_envs.agents.files import read_run_config

    assert read_run_config(runs["native"])["vec_env"] == "native"
    assert read_run_config(runs["dummy"])["vec_env"] == "dummy"
    models = {k: MaskablePPO.load(str(v / "model.zip"), device="cpu") for k, v in runs.items()}
    sa, sb = (m.policy.state_dict() for m in models.values())
    assert all(th.equal(sa[k], sb[k]) for k in sa)
    npz = {k: np.load(v / "evaluations.npz") for k, v in runs.items()}
    with npz["native"] as a, npz["dummy"] as b:
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for i in range(4):
        cols = {}
        for k, run in runs.items():
            lines = (run / "monitor" / f"{i}.monitor.csv").read_text().splitlines()
            assert json.loads(lines[0][1:])["env_id"] == TOY_ID
            rows = [line.split(",") for line in lines[1:]]
            header = rows[0]
            assert header == ["r", "l", "t", "dist", "moves", "noise"]
            keep = [j for j, h in enumerate(header) if h != "t"]
            cols[k] = [[row[j] for j in keep] for row in rows[1:]]
        assert cols["native"] and cols["native"] == cols["dummy"]


def test_auto_is_native_only_for_same_step_vector_envs():
    assert resolve_vec_env(TOY_ID, "auto") == "native"
    assert resolve_vec_env("CartPole-v1", "auto") == "dummy"  # its vector env is NEXT_STEP
    assert resolve_vec_env("Pendulum-v1", "auto") == "dummy"
    assert resolve_vec_env(TOY_ID, "dummy") == "dummy"
    with pytest.raises(ValueError, match="vec_env='native'.*CartPole-v1"):
        resolve_vec_env("CartPole-v1", "native")
    with pytest.raises(ValueError, match="vec_env='fast'"):
        resolve_vec_env(TOY_ID, "fast")
    with pytest.raises(ValueError, match="native.*Pendulum-v1"):
        train(TrainArgs(env_id="Pendulum-v1", algo="sac", vec_env="native"))


def test_compare_config_passes_vec_env_to_its_training_jobs(tmp_path):
    from mei_envs.experiments.compare import CompareConfig, CompareConfigError, _train_jobs

    cfg = CompareConfig.from_dict({"vec_env": "dummy", "seeds": [0, 1]})
    jobs = _train_jobs(cfg, tmp_path)
    assert [j.to_train_args().vec_env for j in jobs] == ["dummy", "dummy"]
    assert CompareConfig.from_dict({}).vec_env == "auto"
    with pytest.raises(CompareConfigError, match="vec_env='fast'"):
        CompareConfig.from_dict({"vec_env": "fast"})


# ---- the adapter's VecEnv API --------------------------------------------------------------
def test_seed_semantics_are_dummy_vec_envs():
    """VecEnv.seed(s) seeds sub-env i with s + i at the next reset only; reset() without a
    new seed continues the generators, as DummyVecEnv does."""
    native = make_vec_env(TOY_ID, 3, vec_env="native")
    old = dummy(TOY_ID, 3, {})
    for venv in (native, old):
        assert venv.seed(7) == [7, 8, 9]
    np.testing.assert_array_equal(native.reset(), old.reset())
    np.testing.assert_array_equal(native.reset(), old.reset())  # generators continue
    for i in range(3):
        single = make_env(TOY_ID)
        first, info = single.reset(seed=7 + i)
        native.seed(7)
        np.testing.assert_array_equal(native.reset()[i], first)
        assert native.reset_infos[i] == info
    native.seed(7)
    native.set_options({"anything": 1})  # one options dict for all sub-envs is passed on
    with pytest.raises(ValueError, match="one options dict"):
        native.set_options([{"a": 1}, {}, {}])
        native.reset()


@pytest.mark.parametrize("step_info", [True, False])
def test_terminal_observation_and_truncation_flags(step_info):
    """What SB3 reads matches DummyVecEnv's; ``step_info=False`` leaves out only the per-step
    keys of sub-envs whose episode goes on."""
    metrics = ToyWalk.metadata["info_metrics"]
    native = make_vec_env(TOY_ID, 2, info_metrics=metrics, vec_env="native", step_info=step_info)
    old = dummy(TOY_ID, 2, {})
    native.seed(1), old.seed(1)
    native.reset(), old.reset()
    rng = np.random.default_rng(0)
    seen = {"terminated": 0, "truncated": 0}
    for _ in range(60):
        masks = np.stack(native.env_method("action_masks"))
        np.testing.assert_array_equal(masks, np.stack(old.env_method("action_masks")))
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        (o1, r1, d1, i1), (o2, r2, d2, i2) = native.step(actions), old.step(actions)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        assert r1.dtype == r2.dtype == np.float32
        np.testing.assert_array_equal(d1, d2)
        for a, b in zip(i1, i2, strict=True):
            assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
            assert ("terminal_observation" in a) == ("terminal_observation" in b)
            if "terminal_observation" in a:
                np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
                seen["truncated" if a["TimeLimit.truncated"] else "terminated"] += 1
                assert {k: v for k, v in a["episode"].items() if k != "t"} == {
                    k: v for k, v in b["episode"].items() if k != "t"
                }
            if step_info or "terminal_observation" in a:
                assert {k for k in a if k != "episode"} == {k for k in b if k != "episode"}
                assert {k: a[k] for k in metrics if k in a} == {k: b[k] for k in metrics if k in b}
            else:
                assert a == {"TimeLimit.truncated": False} and set(metrics) <= set(b)
        assert native.reset_infos == old.reset_infos
    assert seen["terminated"] > 0 and seen["truncated"] > 0


def test_per_sub_env_access():
    native = make_vec_env(TOY_ID, 3, vec_env="native")
    native.reset()
    assert native.has_attr("action_masks")
    assert native.get_attr("strict", indices=[0, 2]) == [True, True]
    assert native.env_is_wrapped(Monitor) == [True] * 3
    native.set_attr("strict", False)
    assert native.venv.strict is False
    with pytest.raises(ValueError, match="set it for all sub-envs"):
        native.set_attr("strict", True, indices=[1])
    with pytest.raises(AttributeError, match="no per-sub-env methods"):
        native.env_method("render")
    masks = native.env_method("action_masks", indices=[1, 2])
    np.testing.assert_array_equal(np.stack(masks), native.venv.action_masks()[1:])
    # A vector env with sub-env objects serves their methods and attributes.
    sync = sync_adapter(TOY_ID, 2, {})
    sync.reset()
    assert sync.env_method("action_masks")[0].shape == (3,)
    assert sync.get_attr("strict") == [True, True]
    assert sync.env_is_wrapped(gym.wrappers.OrderEnforcing) == [True, True]


def test_rejects_next_step_vector_envs_and_dict_observations():
    cartpole = gym.make_vec("CartPole-v1", 2, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match="SAME_STEP"):
        VectorEnvAdapter(cartpole)
    with pytest.raises(ValueError, match="sum, mean, last"):
        sync_adapter(TOY_ID, 2, {}).__class__(
            SyncVectorEnv([lambda: gym.make(TOY_ID)], autoreset_mode=AutoresetMode.SAME_STEP),
            info_metrics={"dist": "median"},
        )


def test_unbatch_infos_follows_the_masks():
    infos = {
        "a": np.array([1.0, 2.0, 3.0]),
        "_a": np.array([True, False, True]),
        "m": np.arange(6).reshape(3, 2),
        "_m": np.ones(3, bool),
        "sub": {"x": np.array([1, 2, 3]), "_x": np.array([False, True, False])},
        "_sub": np.array([False, True, False]),
    }
    out = unbatch_infos(infos, 3)
    assert out[0] == {"a": 1.0, "m": out[0]["m"]} and out[0]["m"].tolist() == [0, 1]
    assert out[1]["sub"] == {"x": 2} and "a" not in out[1]
    assert type(out[2]["a"]) is float
    infos["m"][0, 0] = 99  # rows are copies
    assert out[0]["m"].tolist() == [0, 1]


def test_ppo_throughput_reports_both_rates_and_their_ratio():
    from mei_envs.agents.throughput import ppo_steps_per_s

    out = ppo_steps_per_s(
        TOY_ID,
        2,
        64,
        env_config={"strict": False},
        repeats=2,
        ppo_kwargs={"n_steps": 16, "batch_size": 16, "n_epochs": 1},
    )
    assert out["vec_env"] == "native" and out["reference"] == "CartPole-v1"
    assert out["algo"] == "ppo"
    assert len(out["env_runs"]) == len(out["reference_runs"]) == 2
    assert out["env_steps_per_s"] > 0 and out["reference_steps_per_s"] > 0
    pairs = [a / b for a, b in zip(out["env_runs"], out["reference_runs"], strict=True)]
    assert out["ratio"] == pytest.approx(sum(pairs) / 2)  # the median of two pairs
    assert "smaller" in out["matched_skipped"]  # ToyWalk's 3 observations < CartPole's 4
    with pytest.raises(ValueError, match="repeats=0"):
        ppo_steps_per_s(TOY_ID, 2, 64, repeats=0)
    with pytest.raises(ValueError, match="algo='sac'"):
        ppo_steps_per_s(TOY_ID, 2, 64, algo="sac")
    with pytest.raises(ValueError, match="clock='gpu'"):
        ppo_steps_per_s(TOY_ID, 2, 64, clock="gpu")


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_ppo_throughput_matched_reference_has_the_envs_network(algo):
    """The network-matched CartPole gets the env's observation shape and action space (so
    the same policy) and CartPole's dynamics; MaskablePPO gets all-legal masks."""
    from mei_envs.agents.throughput import build_model, ppo_steps_per_s

    env_id = "mei_envs/EdgeLLMCache-v0"
    kw = {"n_steps": 16, "batch_size": 16, "n_epochs": 1}
    cfg = {"requests_per_episode": 20}
    if algo == "ppo":
        cfg["invalid_action"] = "bypass"
    env_model = build_model(env_id, algo, 2, kw, env_config=cfg)
    like = build_model("CartPole-v1", algo, 2, kw, env_config=cfg, like=env_id)
    assert like.observation_space == spaces.Box(-np.inf, np.inf, (543,), np.float32)
    assert like.action_space == env_model.action_space == spaces.Discrete(46)
    for a, b in zip(env_model.policy.parameters(), like.policy.parameters(), strict=True):
        assert a.shape == b.shape
    venv = like.get_env()
    obs = venv.reset()
    assert obs.shape == (2, 543) and not obs[:, 4:].any() and obs[:, :4].any()
    if algo == "maskable_ppo":
        masks = venv.env_method("action_masks")
        assert [m.tolist() for m in masks] == [[True] * 46] * 2
    # action 45 is CartPole's 45 % 2 = 1 (push right): the cart's velocity grows
    before = obs[:, 1].copy()
    obs, *_ = venv.step(np.array([45, 45]))
    assert (obs[:, 1] > before).all()
    out = ppo_steps_per_s(env_id, 2, 32, env_config=cfg, repeats=1, ppo_kwargs=kw, algo=algo)
    assert out["algo"] == algo and out["matched_steps_per_s"] > 0
    assert out["network_factor"] == pytest.approx(out["matched_runs"][0] / out["reference_runs"][0])


def test_resume_through_the_native_path_appends_to_the_monitor_files(tmp_path):
    hp = tmp_path / "ppo.yml"
    hp.write_text(
        yaml.safe_dump(
            {TOY_ID: {"n_timesteps": 128, "policy": "MlpPolicy", "n_envs": 2, "n_steps": 32}}
        )
    )
    fields = {
        "env_id": TOY_ID,
        "algo": "ppo",
        "env_config": {"strict": False},
        "hyperparams": str(hp),
        "run_dir": str(tmp_path / "run"),
        "eval_freq": 0,
        "checkpoint_freq": 64,
        "tensorboard": False,
        "progress_bar": False,
    }
    run = train(TrainArgs(**fields))
    before = (run / "monitor" / "0.monitor.csv").read_text().splitlines()
    train(TrainArgs(**{**fields, "resume": True, "total_timesteps": 256}))
    after = (run / "monitor" / "0.monitor.csv").read_text().splitlines()
    assert after[: len(before)] == before and len(after) > len(before)
    assert sum(line.startswith("#") for line in after) == 1  # one header: appended, not rewritten
    assert yaml.safe_load((run / "COMPLETE").read_text())["num_timesteps"] == 256


@pytest.mark.skipif(
    not gym.spec("mei_envs/EarlyExitUpload-v1").vector_entry_point,
    reason="EarlyExitUpload-v1 has no native vector env on this branch",
)
def test_main_job_settings_train_the_same_agent_native_or_dummy(tmp_path):
    """The main job (PPO on EarlyExitUpload-v1 with the shipped hyperparameters: 8 envs,
    VecNormalize on observations) trains the same agent through its native vector env as
    through DummyVecEnv; only rollouts are shortened (n_steps 32) to keep the test small."""
    runs = {}
    for vec_env in ("native", "dummy"):
        runs[vec_env] = train(
            TrainArgs(
                env_id="mei_envs/EarlyExitUpload-v1",
                algo="ppo",
                seed=0,
                total_timesteps=512,
                vec_env=vec_env,
                hyperparams_override={"n_steps": 32, "n_epochs": 2},
                run_dir=str(tmp_path / vec_env),
                eval_freq=0,
                checkpoint_freq=0,
                tensorboard=False,
                progress_bar=False,
            )
        )
    models = {k: PPO.load(str(v / "model.zip"), device="cpu") for k, v in runs.items()}
    sa, sb = (m.policy.state_dict() for m in models.values())
    assert all(th.equal(sa[k], sb[k]) for k in sa)
    stats = {k: pickle.loads((v / "vecnormalize.pkl").read_bytes()) for k, v in runs.items()}
    np.testing.assert_array_equal(stats["native"].obs_rms.mean, stats["dummy"].obs_rms.mean)
    np.testing.assert_array_equal(stats["native"].obs_rms.var, stats["dummy"].obs_rms.var)
    for i in range(8):
        rows = {
            k: [line.split(",") for line in (v / "monitor" / f"{i}.monitor.csv").open()][2:]
            for k, v in runs.items()
        }
        assert rows["native"], "no episode ended"
        assert [r[:2] + r[3:] for r in rows["native"]] == [r[:2] + r[3:] for r in rows["dummy"]]
