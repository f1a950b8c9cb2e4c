"""``mei-envs bench`` on tiny budgets: the structure of its JSON and Markdown, positive
ratios, legal actions, the scaling fit. No timing assertions (this machine is shared)."""

from __future__ import annotations

import json
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

from mei_envs import bench
from mei_envs.cache import catalog_from_dict
from mei_envs.cli import main

EE = "mei_envs/EarlyExitUpload-v1"
CACHE = "mei_envs/EdgeLLMCache-v0"


@pytest.mark.parametrize("exponent", [0.5, 1.0, 1.5, 2.0])
def test_fit_recovers_a_known_exponent(exponent: float) -> None:
    sizes = np.array([10, 50, 200, 1000, 5000])
    # Deterministic +-3% "noise" around c * n^b.
    noise = 1.0 + 0.03 * np.array([1, -1, 0.5, -0.5, 0.2])
    fit = bench.fit_exponent(sizes, 2e-6 * sizes**exponent * noise)
    assert fit is not None
    assert fit["exponent"] == pytest.approx(exponent, abs=0.03)
    assert fit["coef"] == pytest.approx(2e-6, rel=0.2)
    assert 0.99 < fit["r2"] <= 1.0


def test_fit_needs_two_distinct_positive_sizes() -> None:
    assert bench.fit_exponent([10, 10], [1.0, 2.0]) is None
    assert bench.fit_exponent([10], [1.0]) is None
    # Non-positive points are dropped, not fitted.
    fit = bench.fit_exponent([0, 10, 100, 1000], [5.0, 1.0, 10.0, 100.0])
    assert fit is not None and fit["exponent"] == pytest.approx(1.0)


def test_pick_draws_only_legal_indices_and_all_of_them() -> None:
    env = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="vector_entry_point")
    sampler = bench.LegalSampler(env, seed=0, vector=True)
    mask = np.array([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=bool)
    seen = [set(), set(), set()]
    for _ in range(300):
        picks = sampler._pick(mask)
        for row, k in enumerate(picks):
            assert mask[row, k]
            seen[row].add(int(k))
    assert seen == [{1, 3, 4}, {0}, {4}]


def test_single_env_sampler_is_legal_on_a_masked_env() -> None:
    env = gym.make(CACHE)
    sampler = bench.LegalSampler(env, seed=3)
    assert sampler.masked
    env.reset(seed=3)
    for _ in range(200):
        mask = env.unwrapped.action_masks()
        a = sampler.sample()
        assert mask[a], a
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()


def test_replay_reproduces_the_recorded_episodes() -> None:
    env = gym.make(EE)
    rec = bench.record_single(env, seed=5, block_s=0.002, max_s=30.0)
    assert rec.episodes_ended >= 1 and len(rec.actions) >= rec.episodes_ended
    assert bench.replay_single(env, 5, rec) > 0
    # Another seed ends its episodes elsewhere: the replay notices.
    short = bench.Recording(rec.actions, rec.episodes_ended + 1, 0.0)
    with pytest.raises(RuntimeError, match="not deterministic"):
        bench.replay_single(env, 5, short)


def test_quick_run_structure_json_and_markdown() -> None:
    res = bench.run(
        bench.QUICK,
        [EE],
        parts=("single", "vector", "policies"),
        presets=["default", "short_replies"],
        policies=["eager", "dp_oracle"],
    )
    res = json.loads(json.dumps(res))  # JSON-ready
    m = res["machine"]
    for key in ("cpu", "cores", "python", "numpy", "gymnasium", "date_utc"):
        assert m[key]
    rows = res["envs"][EE]["presets"]
    assert list(rows) == ["default", "short_replies"]
    for row in rows.values():
        s = row["single"]
        assert s["ratio_to_cartpole"] > 0 and s["steps_per_s"] > 0
        assert s["cartpole_steps_per_s"] > 0 and s["reset_us"] > 0
        assert s["reset_ratio_to_cartpole"] > 0
        assert min(s["ratio_min_max"]) <= s["ratio_to_cartpole"] <= max(s["ratio_min_max"])
        assert set(row["vector"]) == {"1", "16", "256"}
        for v in row["vector"].values():
            if bench.has_vector_entry_point(EE):
                assert v["ratio_to_cartpole_vector"] > 0 and v["ratio_to_own_single"] > 0
            else:
                assert v == "none"
        assert set(row["policies"]) == {"eager", "dp_oracle"}
        dp = row["policies"]["dp_oracle"]
        assert dp["kind"] == "oracle" and "error" not in dp
        assert dp["build_s"] > 0 and dp["us_per_decision_median"] > 0
        assert 1 <= dp["decisions"] <= bench.QUICK.max_decisions
    md = bench.to_markdown(res)
    assert md.startswith("Machine: ")
    assert "| EarlyExitUpload-v1 | default |" in md
    assert "| EarlyExitUpload-v1 | short_replies | dp_oracle | oracle |" in md
    header = next(line for line in md.splitlines() if line.startswith("| env | preset | step"))
    assert "vec256 x CartPole vec256" in header


def test_vector_speed_against_cartpole_itself() -> None:
    # CartPole-v1 has a native vector env: the vector path runs whatever our envs have.
    v = bench.vector_env_speed(bench.REFERENCE_ID, {}, 4, bench.QUICK, single_steps_per_s=1e4)
    assert isinstance(v, dict)
    assert v["num_envs"] == 4 and v["env_steps_per_s"] > 0
    assert v["ratio_to_cartpole_vector"] > 0 and v["ratio_to_own_single"] > 0
    assert v["masked_actions"] is False


@pytest.mark.parametrize("n", [1, 10, 50])
def test_scaled_catalog_has_exactly_n_models(n: int, tmp_path) -> None:
    doc = bench.scaled_catalog_doc(n)
    cat = catalog_from_dict(doc)
    assert cat.n_models == n
    kinds = {m["kind"] for m in doc["models"]}
    assert "base" in kinds
    if n >= 50:
        assert {"lora", "partial", "quantised"} <= kinds
    path = tmp_path / "cat.json"
    path.write_text(json.dumps(doc))
    env = gym.make(CACHE, config={"catalog_file": str(path)})
    assert env.unwrapped.n_models == n
    env.reset(seed=0)


def test_unreachable_size_is_reported_with_the_field(tmp_path) -> None:
    axis = bench.ScalingAxis(
        "mei_envs/SplitFedAlloc-v0", "devices", (100_000,), lambda n: {"n_devices": n}
    )
    p = bench.scaling_point(axis, 100_000, bench.QUICK)
    assert "n_devices" in p["not_reachable"] and "us_per_step" not in p


def test_scaling_axis_output_and_fits(tmp_path) -> None:
    axis = bench.ScalingAxis(
        EE, "tokens", (8, 32), lambda n: {"tokens": n}, ("dp_oracle",), per_unit="tokens"
    )
    points = [bench.scaling_point(axis, n, bench.QUICK) for n in axis.sizes]
    for p in points:
        assert p["us_per_step"] > 0 and p["us_per_unit"] > 0
        assert p["dp_oracle"]["build_s"] > 0
    fits = bench._scaling_fits(axis, points)
    assert {"us_per_step", "us_per_unit", "dp_oracle.build_s"} <= set(fits)
    res = {
        "machine": bench.machine_info(),
        "settings": {"repeats": 1, "vector_sizes": [1]},
        "reference": bench.REFERENCE_ID,
        "envs": {},
        "scaling": [
            {"env_id": EE, "axis": "tokens", "per_unit": "tokens", "points": points, "fits": fits}
        ],
    }
    md = bench.to_markdown(res)
    assert "Scaling: mei_envs/EarlyExitUpload-v1 vs tokens" in md
    assert "Fitted exponents" in md and "dp_oracle.build_s" in md


def test_time_limit_interrupts_a_long_call() -> None:
    t0 = time.perf_counter()
    with pytest.raises(bench.BudgetExceeded), bench.time_limit(0.05):
        while True:
            pass
    assert time.perf_counter() - t0 < 5.0


def test_ppo_part_is_skipped_without_sb3(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # import raises ImportError
    out = bench.ppo_speed([EE], bench.QUICK)
    assert "skipped" in out and "stable" in out["skipped"].lower()


def test_cli_bench_writes_json_and_markdown(tmp_path, capsys) -> None:
    argv = ["bench", "--quick", "--env", EE, "--parts", "single", "--preset", "default"]
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "bench.json").read_text())
    assert list(res["envs"]) == [EE] and res["command"].startswith("mei-envs bench --quick")
    assert (tmp_path / "bench.md").read_text().strip() == out.strip()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--parts", "single,bogus"], "bogus"),
        (["--preset", "nope"], "nope"),
        (["--env", "mei_envs/Nope-v0"], "Nope-v0"),
    ],
)
def test_cli_bench_bad_flags(flags, needle, tmp_path, capsys) -> None:
    assert main(["bench", "--quick", *flags, "--out", str(tmp_path)]) == 2
    assert needle in capsys.readouterr().err


# ---- a masked env with a native vector version (the path our envs take once they have one) --
class _MaskedEnv(gym.Env):
    """Discrete(5); only even actions are legal; an illegal one raises. Ends after 7 steps."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(5)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def action_masks(self) -> np.ndarray:
        return np.arange(5) % 2 == 0

    def step(self, action):
        if not self.action_masks()[action]:
            raise ValueError(f"illegal action {action}")
        self.t += 1
        return np.zeros(1, np.float32), 0.0, self.t >= 7, False, {}


class _MaskedVectorEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, **kwargs) -> None:
        self.num_envs = num_envs
        self.single_observation_space = _MaskedEnv.observation_space
        self.single_action_space = _MaskedEnv.action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        self.t[:] = 0
        return np.zeros((self.num_envs, 1), np.float32), {}

    def action_masks(self) -> np.ndarray:
        # Sub-env i may also take action 1 on odd steps of its episode.
        mask = np.tile(np.arange(5) % 2 == 0, (self.num_envs, 1))
        mask[:, 1] = self.t % 2 == 1
        return mask

    def step(self, actions):
        actions = np.asarray(actions)
        if not self.action_masks()[np.arange(self.num_envs), actions].all():
            raise ValueError(f"illegal actions {actions}")
        self.steps += 1
        self.t += 1
        done = self.t >= 7
        self.t[done] = 0
        zeros = np.zeros(self.num_envs)
        return np.zeros((self.num_envs, 1), np.float32), zeros, done, zeros.astype(bool), {}


@pytest.fixture
def masked_env_id():
    env_id = "bench_test/Masked-v0"
    gym.register(id=env_id, entry_point=_MaskedEnv, vector_entry_point=_MaskedVectorEnv)
    yield env_id
    del gym.registry[env_id]


def test_vector_speed_samples_legal_actions_from_vector_masks(masked_env_id) -> None:
    # An illegal action raises inside step, so finishing proves every action was legal.
    v = bench.vector_env_speed(masked_env_id, {}, 16, bench.QUICK, single_steps_per_s=1e4)
    assert v["masked_actions"] is True
    assert v["env_steps_per_s"] > 0 and v["ratio_to_cartpole_vector"] > 0
    s = bench.single_env_speed(masked_env_id, {}, bench.QUICK)
    assert s["masked_actions"] is True and s["ratio_to_cartpole"] > 0


def test_markdown_reports_a_failed_measurement() -> None:
    res = {
        "machine": bench.machine_info(),
        "settings": {"repeats": 1, "vector_sizes": [1]},
        "reference": bench.REFERENCE_ID,
        "envs": {
            EE: {
                "presets": {
                    "default": {
                        "single": {"error": "RuntimeError: boom"},
                        "vector": {"1": {"num_envs": 1, "error": "ValueError: bad"}},
                    }
                }
            }
        },
    }
    md = bench.to_markdown(res)
    assert "| EarlyExitUpload-v1 | default | - |" in md
    assert "single: RuntimeError: boom" in md and "vec1: ValueError: bad" in md


def test_ppo_part_uses_the_throughput_helper_when_present(monkeypatch) -> None:
    pytest.importorskip("stable_baselines3")
    import types

    calls = []

    def ppo_steps_per_s(
        env_id,
        n_envs=8,
        total_steps=8192,
        *,
        repeats=3,
        ppo_kwargs=None,
        seed=0,
        vec_env="auto",
        env_config=None,
    ):
        calls.append((env_id, n_envs, total_steps, repeats, dict(ppo_kwargs), env_config))
        return {
            "env_steps_per_s": 300.0,
            "reference_steps_per_s": 600.0,
            "ratio": 0.5,
            "vec_env": "dummy",
        }

    fake = types.ModuleType("mei_envs.agents.throughput")
    fake.ppo_steps_per_s = ppo_steps_per_s
    monkeypatch.setitem(sys.modules, "mei_envs.agents.throughput", fake)
    out = bench.ppo_speed([EE, CACHE], bench.QUICK)
    q = bench.QUICK
    ppo_kwargs = {
        "n_steps": q.ppo_n_steps,
        "batch_size": q.ppo_batch_size,
        "n_epochs": q.ppo_n_epochs,
    }
    settings = (q.ppo_n_envs, q.ppo_timesteps, q.ppo_repeats, ppo_kwargs)
    # Plain PPO ignores masks: the cache env is asked to bypass illegal evictions.
    assert calls == [(EE, *settings, None), (CACHE, *settings, {"invalid_action": "bypass"})]
    assert out["method"].startswith("mei_envs.agents.throughput")
    assert out["envs"][EE]["ratio_to_cartpole"] == 0.5
    assert out["envs"][EE]["cartpole_env_steps_per_s"] == 600.0


def test_maskable_ppo_rows_only_for_discrete_masked_envs() -> None:
    """MaskablePPO is timed where it can train the default config: masks and a discrete
    action space (SplitFedAlloc's masks belong to its discrete mode; its default is a Box)."""
    assert bench._has_action_masks(EE) and bench._has_action_masks(CACHE)
    assert not bench._has_action_masks("mei_envs/SplitFedAlloc-v0")
    assert not bench._has_action_masks("CartPole-v1")
