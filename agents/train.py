"""Train a Stable-Baselines3 agent on a Gymnasium env: reproducible, logged and resumable.

Read top to bottom: arguments (:class:`TrainArgs`), hyperparameters (rl-baselines3-zoo YAML
files in ``agents/hyperparams/``), environments, callbacks, then :func:`train`.

A run folder holds::

    config.yml              resolved arguments and hyperparameters (written atomically)
    monitor/<i>.monitor.csv one per training env: r, l, t and the env's info metrics
    progress.csv            SB3 logger (CSV)
    tb/                     SB3 logger (TensorBoard)
    evaluations.npz         timesteps, results, ep_lengths (EvalCallback format) + metric_<key>
    checkpoints/            model_<n>_steps.zip, vecnormalize_<n>_steps.pkl,
                            replay_buffer_<n>_steps.pkl (off-policy, latest only)
    model.zip               final model
    vecnormalize.pkl        final observation/reward statistics (when normalizing)
    COMPLETE                written last, atomically

Same ``seed`` => same run (global RNGs, env seeds ``seed + i``, deterministic torch on CPU).
Evaluation envs are seeded from ``eval_seed`` (far from training seeds), and every evaluation
replays the same episodes so the curve compares like with like.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import io
import json
import os
import pickle
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from gymnasium import spaces
from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import (
    CSVOutputFormat,
    HumanOutputFormat,
    KVWriter,
    Logger,
    TensorBoardOutputFormat,
    filter_excluded_keys,
)
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.utils import LinearSchedule, set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

import mei_envs  # noqa: F401  (registers the envs)
from mei_envs.agents.algos import OFF_POLICY, check_algo_for_env, get_algo_class

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
MASKABLE = frozenset({"maskable_ppo"})

# rl-baselines3-zoo keys that are not constructor arguments of the algorithm.
_ZOO_KEYS = frozenset({"n_timesteps", "policy", "n_envs", "normalize", "noise_type", "noise_std"})
# Constructor arguments the trainer sets itself (not hyperparameters).
_RESERVED = frozenset(
    {"self", "env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}
)
_SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")


@dataclass
class TrainArgs:
    """Arguments of one training run (every field has a ``help`` in its metadata)."""

    env_id: str = field(metadata={"help": "Gymnasium env id, e.g. mei_envs/EarlyExitUpload-v0"})
    algo: str = field(default="ppo", metadata={"help": "ppo|a2c|dqn|sac|td3|maskable_ppo"})
    total_timesteps: int | None = field(
        default=None, metadata={"help": "env steps in total (None: the YAML n_timesteps)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of RNGs and training envs"})
    n_envs: int | None = field(
        default=None, metadata={"help": "parallel training envs (None: YAML n_envs or 1)"}
    )
    vec_env: str = field(default="dummy", metadata={"help": "dummy|subproc"})
    normalize: bool | None = field(
        default=None, metadata={"help": "wrap in VecNormalize (None: as the YAML says)"}
    )
    env_config: dict = field(
        default_factory=dict, metadata={"help": "env config, passed as gym.make(id, config=...)"}
    )
    hyperparams: str | None = field(
        default=None, metadata={"help": "YAML hyperparameter file (None: agents/hyperparams)"}
    )
    hyperparams_override: dict = field(
        default_factory=dict, metadata={"help": "hyperparameters replacing the YAML ones"}
    )
    run_dir: str | None = field(
        default=None, metadata={"help": "run folder (None: runs/{algo}/{env}__{seed}__{time})"}
    )
    eval_freq: int = field(
        default=10_000, metadata={"help": "evaluate every this many env steps (0: never)"}
    )
    eval_episodes: int = field(default=10, metadata={"help": "episodes per evaluation"})
    eval_seed: int = field(
        default=1_000_000, metadata={"help": "seed of the evaluation env (not a training seed)"}
    )
    checkpoint_freq: int = field(
        default=50_000, metadata={"help": "checkpoint every this many env steps (0: never)"}
    )
    resume: bool = field(
        default=False, metadata={"help": "continue run_dir from its latest checkpoint"}
    )
    progress_bar: bool = field(default=False, metadata={"help": "show a progress bar"})
    tensorboard: bool = field(default=True, metadata={"help": "log to run_dir/tb"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    verbose: int = field(default=0, metadata={"help": "0 quiet, 1 SB3 logs to stdout"})
    torch_threads: int = field(
        default=1, metadata={"help": "torch CPU threads (1 is fastest for small MLPs)"}
    )


# ---------------------------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------------------------


def default_hyperparams_path(algo: str) -> Path:
    """The shipped YAML file of ``algo``."""
    get_algo_class(algo)
    return HYPERPARAMS_DIR / f"{algo}.yml"


def load_hyperparams(algo: str, env_id: str, path: str | Path | None = None) -> dict[str, Any]:
    """The YAML entry of ``env_id`` (rl-zoo format; ``default`` entry as a fallback).

    Raises:
        FileNotFoundError: no such file.
        KeyError: the file has neither ``env_id`` nor ``default`` (names both and the ids).
    """
    file = Path(path) if path is not None else default_hyperparams_path(algo)
    if not file.is_file():
        raise FileNotFoundError(f"hyperparams={str(file)!r}: no such file")
    with open(file) as f:
        table = yaml.safe_load(f) or {}
    if env_id in table:
        entry = table[env_id]
    elif "default" in table:
        entry = table["default"]
    else:
        raise KeyError(
            f"no hyperparameters for env_id={env_id!r} in {file}; it has {sorted(table)}"
        )
    return dict(entry or {})


def check_hyperparam_keys(algo: str, hyperparams: Mapping[str, Any]) -> None:
    """Every key must be an rl-zoo key or a constructor argument of the algorithm.

    Raises:
        ValueError: naming the bad key(s), the algorithm and the allowed keys.
    """
    allowed = allowed_hyperparams(algo)
    bad = sorted(set(hyperparams) - allowed)
    if bad:
        raise ValueError(
            f"unknown hyperparameter(s) {bad} for algo={algo!r}; allowed keys are {sorted(allowed)}"
        )


def allowed_hyperparams(algo: str) -> set[str]:
    import inspect

    params = inspect.signature(get_algo_class(algo).__init__).parameters
    return (set(params) - _RESERVED) | _ZOO_KEYS


_EXPR_NAMES: dict[str, Any] = {"True": True, "False": False, "None": None}


def parse_expr(text: str, *, key: str) -> Any:
    """Evaluate an rl-zoo Python-literal string such as ``"dict(net_arch=[64, 64])"``.

    Allowed: literals, lists, tuples, dicts, ``dict(k=v)`` and torch names ``nn.X``,
    ``th.nn.X``, ``th.optim.X`` (activation functions, optimizers). Nothing is executed.

    Raises:
        ValueError: naming ``key`` and the part of ``text`` that is not allowed.
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"hyperparameter {key}={text!r}: not a Python expression") from exc

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return {ev(k): ev(v) for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Name) and node.id in _EXPR_NAMES:
            return _EXPR_NAMES[node.id]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "dict" and not node.args:
                return {kw.arg: ev(kw.value) for kw in node.keywords}
        if isinstance(node, ast.Attribute):
            dotted = ast.unparse(node)
            parts = dotted.split(".")
            if parts[0] in ("th", "torch"):
                parts = parts[1:]
            if len(parts) == 2 and parts[0] in ("nn", "optim"):
                module = th.nn if parts[0] == "nn" else th.optim
                if hasattr(module, parts[1]):
                    return getattr(module, parts[1])
        raise ValueError(
            f"hyperparameter {key}={text!r}: {ast.unparse(node)!r} is not allowed "
            "(use literals, dict(...), nn.<Name>, th.optim.<Name>)"
        )

    return ev(tree.body)


def _schedule(value: Any, key: str) -> Any:
    """rl-zoo schedules: ``lin_<x>`` decays linearly from x to 0; numbers stay constant."""
    if isinstance(value, str):
        kind, _, start = value.partition("_")
        if kind != "lin":
            raise ValueError(f"hyperparameter {key}={value!r}: schedule must be lin_<value>")
        try:
            return LinearSchedule(float(start), 0.0, 1.0)
        except ValueError as exc:
            raise ValueError(f"hyperparameter {key}={value!r}: bad number") from exc
    return value


@dataclass
class ResolvedHyperparams:
    """Hyperparameters split into what the trainer uses and what the algorithm gets."""

    n_timesteps: int
    n_envs: int
    normalize_kwargs: dict[str, Any] | None  # None: no VecNormalize
    policy: str
    model_kwargs: dict[str, Any]


def resolve_hyperparams(
    algo: str, hp: Mapping[str, Any], action_space: spaces.Space
) -> ResolvedHyperparams:
    """Turn a (validated) rl-zoo entry into constructor keyword arguments."""
    check_hyperparam_keys(algo, hp)
    hp = dict(hp)
    n_timesteps = int(float(hp.pop("n_timesteps", 0)))
    n_envs = int(hp.pop("n_envs", 1))
    policy = hp.pop("policy", "MlpPolicy")
    normalize = hp.pop("normalize", False)
    if isinstance(normalize, str):
        normalize = parse_expr(normalize, key="normalize")
    if isinstance(normalize, Mapping):
        normalize_kwargs: dict[str, Any] | None = dict(normalize)
    elif isinstance(normalize, bool):
        normalize_kwargs = {} if normalize else None
    else:
        raise ValueError(f"hyperparameter normalize={normalize!r}: must be a bool or dict(...)")
    if normalize_kwargs is not None and "gamma" in hp:
        normalize_kwargs.setdefault("gamma", hp["gamma"])  # rl-zoo: reward discount = gamma
    for key in ("policy_kwargs", "replay_buffer_kwargs", "optimize_memory_usage"):
        if isinstance(hp.get(key), str):
            hp[key] = parse_expr(hp[key], key=key)
    for key in _SCHEDULED:
        if key in hp:
            hp[key] = _schedule(hp[key], key)
    if isinstance(hp.get("train_freq"), list):
        hp["train_freq"] = tuple(hp["train_freq"])
    noise_type = hp.pop("noise_type", None)
    noise_std = float(hp.pop("noise_std", 0.1))
    if noise_type is not None:
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"hyperparameter noise_type={noise_type!r}: needs a Box action space")
        n = int(np.prod(action_space.shape))
        if noise_type == "normal":
            hp["action_noise"] = NormalActionNoise(np.zeros(n), noise_std * np.ones(n))
        elif noise_type == "ornstein-uhlenbeck":
            hp["action_noise"] = OrnsteinUhlenbeckActionNoise(np.zeros(n), noise_std * np.ones(n))
        else:
            raise ValueError(
                f"hyperparameter noise_type={noise_type!r}: must be 'normal' or "
                "'ornstein-uhlenbeck'"
            )
    return ResolvedHyperparams(n_timesteps, n_envs, normalize_kwargs, policy, hp)


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


class MetricsMonitor(Monitor):
    """SB3 ``Monitor`` whose info-keyword columns hold per-episode aggregates.

    ``info_metrics`` maps info keys to ``"sum"``, ``"mean"`` or ``"last"`` (the env's
    ``metadata["info_metrics"]``); a key missing from a step's info is skipped for that step.
    """

    def __init__(
        self,
        env: gym.Env,
        filename: str | None,
        info_metrics: Mapping[str, str],
        override_existing: bool = True,
    ) -> None:
        super().__init__(
            env,
            filename=filename,
            info_keywords=tuple(info_metrics),
            override_existing=override_existing,
        )
        self.info_metrics = dict(info_metrics)
        self._sums = dict.fromkeys(self.info_metrics, 0.0)
        self._counts = dict.fromkeys(self.info_metrics, 0)
        self._last = dict.fromkeys(self.info_metrics, float("nan"))

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._sums = dict.fromkeys(self.info_metrics, 0.0)
        self._counts = dict.fromkeys(self.info_metrics, 0)
        self._last = dict.fromkeys(self.info_metrics, float("nan"))
        return super().reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self.needs_reset:
            raise RuntimeError("Tried to step environment that needs reset")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.rewards.append(float(reward))
        for k in self.info_metrics:
            if k in info:
                v = float(info[k])
                self._sums[k] += v
                self._counts[k] += 1
                self._last[k] = v
        if terminated or truncated:
            self.needs_reset = True
            ep_rew, ep_len = sum(self.rewards), len(self.rewards)
            elapsed = time.time() - self.t_start
            ep_info: dict[str, Any] = {"r": round(ep_rew, 6), "l": ep_len, "t": round(elapsed, 6)}
            for k, how in self.info_metrics.items():
                if how == "sum":
                    ep_info[k] = self._sums[k]
                elif how == "mean":
                    ep_info[k] = self._sums[k] / self._counts[k] if self._counts[k] else np.nan
                else:
                    ep_info[k] = self._last[k]
            self.episode_returns.append(ep_rew)
            self.episode_lengths.append(ep_len)
            self.episode_times.append(elapsed)
            ep_info.update(self.current_reset_info)
            if self.results_writer:
                self.results_writer.write_row(ep_info)
            info["episode"] = ep_info
        self.total_steps += 1
        return obs, reward, terminated, truncated, info


def _action_masks(env: gym.Env) -> np.ndarray:
    return np.asarray(env.unwrapped.action_masks(), dtype=bool)


def make_env(env_id: str, env_config: Mapping[str, Any] | None = None) -> gym.Env:
    """``gym.make`` with an optional config mapping (passed as ``config=``)."""
    import mei_envs  # noqa: F401  (registers the envs, also inside subprocess workers)

    if env_config:
        return gym.make(env_id, config=dict(env_config))
    return gym.make(env_id)


def env_info_metrics(env: gym.Env) -> dict[str, str]:
    """The env's ``metadata["info_metrics"]`` ({info key: "sum"|"mean"|"last"})."""
    return dict(env.unwrapped.metadata.get("info_metrics", {}) or {})


def _env_factory(
    env_id: str,
    env_config: Mapping[str, Any],
    monitor_file: str | None,
    info_metrics: Mapping[str, str],
    masked: bool,
    append: bool,
) -> Callable[[], gym.Env]:
    def _init() -> gym.Env:
        env = make_env(env_id, env_config)
        env = MetricsMonitor(env, monitor_file, info_metrics, override_existing=not append)
        if masked:
            env = ActionMasker(env, _action_masks)
        return env

    return _init


def make_vec_env(
    env_id: str,
    n_envs: int,
    *,
    env_config: Mapping[str, Any] | None = None,
    monitor_dir: Path | None = None,
    info_metrics: Mapping[str, str] | None = None,
    masked: bool = False,
    vec_env: str = "dummy",
    append_monitor: bool = False,
) -> VecEnv:
    """``n_envs`` monitored copies of the env (monitor files ``monitor_dir/<i>.monitor.csv``)."""
    if vec_env not in ("dummy", "subproc"):
        raise ValueError(f"vec_env={vec_env!r}: must be 'dummy' or 'subproc'")
    fns = [
        _env_factory(
            env_id,
            dict(env_config or {}),
            None if monitor_dir is None else str(monitor_dir / str(i)),
            dict(info_metrics or {}),
            masked,
            append_monitor,
        )
        for i in range(n_envs)
    ]
    return SubprocVecEnv(fns) if vec_env == "subproc" and n_envs > 1 else DummyVecEnv(fns)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


def _save_model(model: BaseAlgorithm, path: Path) -> None:
    buf = io.BytesIO()
    model.save(buf)
    _atomic_write_bytes(path, buf.getvalue())


def _save_vecnormalize(venv: VecNormalize, path: Path) -> None:
    # Pickle without the wrapped envs (as VecNormalize.save does via __getstate__).
    _atomic_write_bytes(path, pickle.dumps(venv))


def _save_replay_buffer(model: BaseAlgorithm, path: Path) -> None:
    buf = io.BytesIO()
    model.save_replay_buffer(buf)
    _atomic_write_bytes(path, buf.getvalue())


class _ResumableCSV(CSVOutputFormat):
    """SB3's CSV writer that continues an existing file and orders new columns by name.

    SB3 appends the keys first seen in a dump in ``set`` order, which follows the string hash
    (random per process unless PYTHONHASHSEED is set): the same run got its columns in a
    different order each time, e.g. ``train/...`` first in one process, ``eval/...`` in the
    next. Here new keys are added sorted, so the header depends only on what was logged.
    """

    def __init__(self, filename: str) -> None:  # noqa: D107
        path = Path(filename)
        if not path.is_file() or path.stat().st_size == 0:
            super().__init__(filename)
            return
        text = path.read_text()
        if not text.endswith("\n"):  # drop a row cut short by a kill
            text = text[: text.rfind("\n") + 1]
        path.write_text(text)
        self.file = open(filename, "r+")  # noqa: SIM115
        self.file.seek(0, os.SEEK_END)
        header = text.split("\n", 1)[0]
        self.keys = [k for k in header.split(",") if k] if header else []
        self.separator = ","
        self.quotechar = '"'

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
    ) -> None:
        """Add this dump's new keys as sorted columns (old rows padded), then write the row."""
        shown = filter_excluded_keys(key_values, key_excluded, "csv")
        new = sorted(k for k in shown if k not in self.keys)
        if new:
            self.file.seek(0)
            rows = self.file.readlines()[1:]
            self.keys.extend(new)
            self.file.seek(0)
            self.file.write(self.separator.join(self.keys) + "\n")
            for row in rows:
                self.file.write(row.rstrip("\n") + self.separator * len(new) + "\n")
            self.file.truncate()
        super().write(key_values, key_excluded, step)  # finds no new key: writes the row only


def _make_logger(run_dir: Path, tensorboard: bool, verbose: int) -> Logger:
    formats: list[KVWriter] = [_ResumableCSV(str(run_dir / "progress.csv"))]
    if tensorboard:
        (run_dir / "tb").mkdir(exist_ok=True)
        formats.append(TensorBoardOutputFormat(str(run_dir / "tb")))
    if verbose > 0:
        formats.append(HumanOutputFormat(sys.stdout))
    return Logger(folder=str(run_dir), output_formats=formats)


# ---------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------


class EvalCallback(BaseCallback):
    """Evaluate every ``eval_freq`` env steps on the same seeded episodes; write an npz.

    The npz has EvalCallback's arrays (``timesteps``, ``results``, ``ep_lengths``, each row one
    evaluation) and ``metric_<key>`` for every info metric. Rows already in the file are kept
    when a run resumes.
    """

    def __init__(
        self,
        eval_env: VecEnv,
        *,
        eval_freq: int,
        n_episodes: int,
        eval_seed: int,
        path: Path,
        info_metrics: Mapping[str, str],
        masked: bool,
    ) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        self.eval_seed = eval_seed
        self.path = path
        self.info_metrics = list(info_metrics)
        self.masked = masked
        self.data: dict[str, list] = {"timesteps": [], "results": [], "ep_lengths": []}
        self.data.update({f"metric_{k}": [] for k in self.info_metrics})
        if path.is_file():
            with np.load(path) as old:
                for k in self.data:
                    if k in old:
                        self.data[k] = list(old[k])
        self._next = 0

    def _on_training_start(self) -> None:
        done = [t for t in self.data["timesteps"] if t <= self.num_timesteps]
        self.data = {k: v[: len(done)] for k, v in self.data.items()}
        self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self.evaluate()
            self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        return True

    def evaluate(self) -> None:
        if isinstance(self.eval_env, VecNormalize):
            train_env = self.model.get_vec_normalize_env()
            if train_env is not None:
                self.eval_env.obs_rms = train_env.obs_rms.copy()
        self.eval_env.seed(self.eval_seed)
        metrics: dict[str, list[float]] = {k: [] for k in self.info_metrics}

        def collect(local: dict[str, Any], _: dict[str, Any]) -> None:
            info = local["info"]
            if local["done"] and "episode" in info:
                for k in self.info_metrics:
                    metrics[k].append(float(info["episode"].get(k, np.nan)))

        fn = maskable_evaluate_policy if self.masked else evaluate_policy
        returns, lengths = fn(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_episodes,
            deterministic=True,
            return_episode_rewards=True,
            callback=collect,
        )
        self.data["timesteps"].append(self.num_timesteps)
        self.data["results"].append(np.asarray(returns, dtype=np.float64))
        self.data["ep_lengths"].append(np.asarray(lengths, dtype=np.int64))
        for k in self.info_metrics:
            self.data[f"metric_{k}"].append(np.asarray(metrics[k][: self.n_episodes]))
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in self.data.items()})
        _atomic_write_bytes(self.path, buf.getvalue())
        self.logger.record("eval/mean_reward", float(np.mean(returns)))
        self.logger.record("eval/mean_ep_length", float(np.mean(lengths)))
        for k in self.info_metrics:
            if metrics[k]:
                self.logger.record(f"eval/{k}", float(np.mean(metrics[k])))
        self.logger.dump(self.num_timesteps)


class CheckpointCallback(BaseCallback):
    """Every ``save_freq`` env steps write a complete checkpoint, model file last.

    Files: ``vecnormalize_<n>_steps.pkl``, ``replay_buffer_<n>_steps.pkl`` (off-policy; older
    replay buffers are deleted), then ``model_<n>_steps.zip``. Each is written to a temporary
    file and renamed, so a kill leaves either a whole checkpoint or none.
    """

    def __init__(self, save_freq: int, path: Path, save_replay_buffer: bool) -> None:
        super().__init__()
        self.save_freq = save_freq
        self.path = path
        self.save_replay_buffer = save_replay_buffer
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            save_checkpoint(self.model, self.path, self.save_replay_buffer)
            self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq
        return True


class EpisodeMetricsLogger(BaseCallback):
    """Log the mean of each info metric over finished training episodes (``rollout/<key>``)."""

    def __init__(self, info_metrics: Mapping[str, str]) -> None:
        super().__init__()
        self.keys = list(info_metrics)

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            ep = info.get("episode")
            if ep is not None:
                for k in self.keys:
                    if k in ep:
                        self.logger.record_mean(f"rollout/{k}", float(ep[k]))
        return True


def save_checkpoint(model: BaseAlgorithm, folder: Path, replay_buffer: bool) -> Path:
    """Write a checkpoint of ``model`` at its current step count; returns the model path."""
    folder.mkdir(parents=True, exist_ok=True)
    n = model.num_timesteps
    venv = model.get_vec_normalize_env()
    if venv is not None:
        _save_vecnormalize(venv, folder / f"vecnormalize_{n}_steps.pkl")
    if replay_buffer:
        _save_replay_buffer(model, folder / f"replay_buffer_{n}_steps.pkl")
    path = folder / f"model_{n}_steps.zip"
    _save_model(model, path)
    if replay_buffer:
        for old in folder.glob("replay_buffer_*_steps.pkl"):
            if old.name != f"replay_buffer_{n}_steps.pkl":
                old.unlink(missing_ok=True)
    return path


_CKPT_RE = re.compile(r"model_(\d+)_steps\.zip$")


def latest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The ``model_<n>_steps.zip`` with the largest n in ``folder`` (None when there is none)."""
    best: tuple[Path, int] | None = None
    for name in glob.glob(str(folder / "model_*_steps.zip")):
        m = _CKPT_RE.search(name)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (Path(name), int(m.group(1)))
    return best


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def env_slug(env_id: str) -> str:
    """A folder-safe name of an env id (``mei_envs/X-v0`` -> ``mei_envs-X-v0``, as rl-zoo)."""
    return re.sub(r"[/:\\]", "-", env_id)


def _check_args(args: TrainArgs) -> None:
    get_algo_class(args.algo)
    for name in ("eval_freq", "checkpoint_freq"):
        v = getattr(args, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}={v!r}: must be an integer >= 0")
    for name in ("eval_episodes", "torch_threads"):
        v = getattr(args, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}: must be an integer >= 1")
    for name in ("total_timesteps", "n_envs"):
        v = getattr(args, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name}={v!r}: must be an integer >= 1 or None")
    if args.vec_env not in ("dummy", "subproc"):
        raise ValueError(f"vec_env={args.vec_env!r}: must be 'dummy' or 'subproc'")
    if not isinstance(args.env_config, Mapping):
        raise ValueError(f"env_config={args.env_config!r}: must be a mapping")
    if not isinstance(args.hyperparams_override, Mapping):
        raise ValueError(f"hyperparams_override={args.hyperparams_override!r}: must be a mapping")


def resolve_config(args: TrainArgs) -> tuple[TrainArgs, dict[str, Any]]:
    """Fill the ``None`` fields of ``args`` from the hyperparameter file.

    Returns:
        The resolved args (total_timesteps, n_envs, normalize, hyperparams path set) and the
        rl-zoo hyperparameter entry with the overrides applied.
    """
    _check_args(args)
    path = Path(args.hyperparams) if args.hyperparams else default_hyperparams_path(args.algo)
    hp = load_hyperparams(args.algo, args.env_id, path)
    check_hyperparam_keys(args.algo, hp)
    check_hyperparam_keys(args.algo, args.hyperparams_override)
    hp.update(args.hyperparams_override)
    if args.n_envs is not None:
        hp["n_envs"] = args.n_envs
    if args.total_timesteps is not None:
        hp["n_timesteps"] = args.total_timesteps
    if args.normalize is False:
        hp["normalize"] = False
    elif args.normalize is True and not hp.get("normalize"):
        hp["normalize"] = True
    if "n_timesteps" not in hp:
        raise ValueError(
            f"total_timesteps is None and {path} has no n_timesteps for {args.env_id!r}"
        )
    resolved = dataclasses.replace(
        args,
        total_timesteps=int(float(hp["n_timesteps"])),
        n_envs=int(hp.get("n_envs", 1)),
        normalize=bool(hp.get("normalize", False)),
        hyperparams=str(path),
        env_config=dict(args.env_config),
        hyperparams_override=dict(args.hyperparams_override),
    )
    return resolved, hp


def _versions() -> dict[str, str]:
    import sb3_contrib
    import stable_baselines3

    versions = {
        "python": sys.version.split()[0],
        "mei_envs": mei_envs.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "torch": th.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "sb3_contrib": sb3_contrib.__version__,
    }
    return {k: str(v) for k, v in versions.items()}


def _yaml_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.yml`` of a run folder."""
    path = Path(run_dir) / "config.yml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (not a run folder?)")
    with open(path) as f:
        return yaml.safe_load(f)


def _prepare_run_dir(args: TrainArgs) -> tuple[Path, TrainArgs, dict[str, Any]]:
    """Create or reopen the run folder; on resume the saved config wins (timesteps may grow)."""
    if args.resume:
        if args.run_dir is None:
            raise ValueError("resume=True needs run_dir (the folder of the run to continue)")
        run_dir = Path(args.run_dir)
        saved = read_run_config(run_dir)
        old = saved["args"]
        for name in ("env_id", "algo"):
            if old[name] != getattr(args, name):
                raise ValueError(
                    f"resume: {name}={getattr(args, name)!r} but {run_dir}/config.yml has "
                    f"{old[name]!r}"
                )
        if args.total_timesteps is not None:
            old["total_timesteps"] = args.total_timesteps
        old.update(
            run_dir=str(run_dir),
            resume=True,
            progress_bar=args.progress_bar,
            verbose=args.verbose,
            device=args.device,
            vec_env=args.vec_env,
        )
        known = {f.name for f in dataclasses.fields(TrainArgs)}
        resolved = TrainArgs(**{k: v for k, v in old.items() if k in known})
        hp = dict(saved["hyperparams"])
        hp["n_timesteps"] = resolved.total_timesteps
        _check_args(resolved)
        return run_dir, resolved, hp
    resolved, hp = resolve_config(args)
    if args.run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / args.algo / f"{env_slug(args.env_id)}__{args.seed}__{stamp}"
    else:
        run_dir = Path(args.run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(
            f"run_dir={str(run_dir)!r} exists and is not empty; pass resume=True (--resume) "
            "to continue it, or choose another folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = dataclasses.replace(resolved, run_dir=str(run_dir))
    return run_dir, resolved, hp


def train(args: TrainArgs) -> Path:
    """Train (or, with ``args.resume``, continue) one agent; returns the run folder.

    Raises:
        ValueError: bad arguments, unknown hyperparameter keys, an algorithm that does not fit
            the env's action space, or (resume) an unreadable checkpoint, naming the file.
        FileNotFoundError: (resume) no config.yml or no checkpoint in the run folder.
    """
    if not args.resume:  # fail on a mismatched action space before reading any YAML
        _check_args(args)
        probe = make_env(args.env_id, args.env_config)
        try:
            check_algo_for_env(args.algo, probe)
        finally:
            probe.close()
    run_dir, args, hp = _prepare_run_dir(args)
    th.set_num_threads(args.torch_threads)
    if args.device == "cpu":
        th.use_deterministic_algorithms(True, warn_only=True)

    probe = make_env(args.env_id, args.env_config)
    try:
        check_algo_for_env(args.algo, probe)
        info_metrics = env_info_metrics(probe)
        action_space = probe.action_space
    finally:
        probe.close()
    rh = resolve_hyperparams(args.algo, hp, action_space)
    masked = args.algo in MASKABLE
    off_policy = args.algo in OFF_POLICY
    ckpt_dir = run_dir / "checkpoints"
    complete = run_dir / "COMPLETE"

    start: tuple[Path, int] | None = None
    if args.resume:
        start = latest_checkpoint(ckpt_dir)
        if start is None:
            raise FileNotFoundError(
                f"resume: no checkpoint {ckpt_dir}/model_<n>_steps.zip to continue from"
            )
        if start[1] >= rh.n_timesteps and complete.is_file():
            return run_dir
        complete.unlink(missing_ok=True)

    config = {
        "args": _yaml_safe(dataclasses.asdict(args)),
        "hyperparams": _yaml_safe(hp),
        "info_metrics": info_metrics,
        "versions": _versions(),
    }
    _atomic_write_text(run_dir / "config.yml", yaml.safe_dump(config, sort_keys=False))

    (run_dir / "monitor").mkdir(exist_ok=True)
    venv: VecEnv = make_vec_env(
        args.env_id,
        rh.n_envs,
        env_config=args.env_config,
        monitor_dir=run_dir / "monitor",
        info_metrics=info_metrics,
        masked=masked,
        vec_env=args.vec_env,
        append_monitor=args.resume,
    )
    cls = get_algo_class(args.algo)
    try:
        if start is None:
            if rh.normalize_kwargs is not None:
                venv = VecNormalize(venv, **rh.normalize_kwargs)
            set_random_seed(args.seed)
            model = cls(
                rh.policy,
                venv,
                seed=args.seed,
                device=args.device,
                verbose=args.verbose,
                **rh.model_kwargs,
            )
        else:
            venv, model = _load_checkpoint(cls, start, venv, rh, off_policy, args.device)
            model.set_random_seed(args.seed + model.num_timesteps)
        model.set_logger(_make_logger(run_dir, args.tensorboard, args.verbose))

        callbacks: list[BaseCallback] = [EpisodeMetricsLogger(info_metrics)]
        if args.checkpoint_freq > 0:
            callbacks.append(CheckpointCallback(args.checkpoint_freq, ckpt_dir, off_policy))
        eval_env = None
        if args.eval_freq > 0:
            eval_env = make_vec_env(
                args.env_id,
                1,
                env_config=args.env_config,
                info_metrics=info_metrics,
                masked=masked,
            )
            if rh.normalize_kwargs is not None:
                eval_env = VecNormalize(
                    eval_env,
                    training=False,
                    norm_reward=False,
                    **{k: v for k, v in rh.normalize_kwargs.items() if k != "norm_reward"},
                )
            callbacks.append(
                EvalCallback(
                    eval_env,
                    eval_freq=args.eval_freq,
                    n_episodes=args.eval_episodes,
                    eval_seed=args.eval_seed,
                    path=run_dir / "evaluations.npz",
                    info_metrics=info_metrics,
                    masked=masked,
                )
            )
        remaining = max(rh.n_timesteps - model.num_timesteps, 0)
        if remaining > 0:
            model.learn(
                total_timesteps=remaining,
                callback=CallbackList(callbacks),
                reset_num_timesteps=start is None,
                progress_bar=args.progress_bar,
            )
        _save_model(model, run_dir / "model.zip")
        vn = model.get_vec_normalize_env()
        if vn is not None:
            _save_vecnormalize(vn, run_dir / "vecnormalize.pkl")
        if args.checkpoint_freq > 0:
            save_checkpoint(model, ckpt_dir, off_policy)
        model.logger.close()
        if eval_env is not None:
            eval_env.close()
    finally:
        venv.close()
    marker = {"num_timesteps": int(model.num_timesteps), "finished": time.time()}
    _atomic_write_text(complete, yaml.safe_dump(marker))
    return run_dir


def _load_checkpoint(
    cls: type[BaseAlgorithm],
    start: tuple[Path, int],
    venv: VecEnv,
    rh: ResolvedHyperparams,
    off_policy: bool,
    device: str,
) -> tuple[VecEnv, BaseAlgorithm]:
    """Load a checkpoint's VecNormalize, model and replay buffer; errors name the file."""
    path, n = start
    if rh.normalize_kwargs is not None:
        vn_path = path.parent / f"vecnormalize_{n}_steps.pkl"
        if not vn_path.is_file():
            raise FileNotFoundError(f"resume: {vn_path} is missing (needed with normalize)")
        try:
            venv = VecNormalize.load(str(vn_path), venv)
        except Exception as exc:
            raise ValueError(f"resume: cannot read {vn_path}: {exc}") from exc
        venv.training = True
    try:
        model = cls.load(str(path), env=venv, device=device)
    except Exception as exc:
        raise ValueError(f"resume: checkpoint {path} is corrupt or unreadable: {exc}") from exc
    if off_policy:
        rb_path = path.parent / f"replay_buffer_{n}_steps.pkl"
        if not rb_path.is_file():
            raise FileNotFoundError(f"resume: {rb_path} is missing (needed by {cls.__name__})")
        try:
            model.load_replay_buffer(str(rb_path))
        except Exception as exc:
            raise ValueError(f"resume: cannot read {rb_path}: {exc}") from exc
    return venv, model


def main(argv: list[str] | None = None) -> int:
    """``python -m mei_envs.agents.train ...``: the same flags as ``mei-envs train``."""
    import argparse

    from mei_envs.agents.cli import add_train_parser

    parser = argparse.ArgumentParser(prog="python -m mei_envs.agents.train")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    ns = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return ns.func(ns)


if __name__ == "__main__":
    raise SystemExit(main())
