"""Training callbacks (their names do not reuse Stable-Baselines3's classes).

* :class:`SeededEvalCallback`: evaluates on the same seeded episodes every time and writes
  ``evaluations.npz`` (SB3's format plus ``metric_<key>`` arrays).
* :class:`FullCheckpointCallback`: model, VecNormalize statistics and replay buffer together.
* :class:`EpisodeMetricsLogger`: the env's info metrics as ``rollout/<key>``.
* :class:`StepProgress`: a progress bar on a terminal and/or progress reports to a sink
  (the compare/sweep parent prints them as one line per job).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from mei_envs.agents.files import save_checkpoint
from mei_envs.experiments.io import write_bytes_atomic


class SeededEvalCallback(BaseCallback):
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
            if train_env is not None and train_env.norm_obs:  # no obs_rms without norm_obs
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
        write_bytes_atomic(self.path, buf.getvalue())
        self.logger.record("time/total_timesteps", self.num_timesteps)
        self.logger.record("eval/mean_reward", float(np.mean(returns)))
        self.logger.record("eval/mean_ep_length", float(np.mean(lengths)))
        for k in self.info_metrics:
            if metrics[k]:
                self.logger.record(f"eval/{k}", float(np.mean(metrics[k])))
        self.logger.dump(self.num_timesteps)


class FullCheckpointCallback(BaseCallback):
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


# Where training progress goes besides a terminal bar: ``sink(label, steps, planned, rate)``.
# A compare/sweep worker process sets it (see mei_envs.experiments.sweep) so the parent can
# print one line per job; None in a plain ``train`` call.
_PROGRESS_SINK: Callable[[str, int, int, float], None] | None = None
_PROGRESS_LABEL = ""


def set_progress_sink(sink: Callable[[str, int, int, float], None] | None, label: str = "") -> None:
    """Send progress reports of the trainings in this process to ``sink`` (None: stop)."""
    global _PROGRESS_SINK, _PROGRESS_LABEL
    _PROGRESS_SINK, _PROGRESS_LABEL = sink, label


class StepProgress(BaseCallback):
    """A tqdm bar (``bar=True``) and/or reports to the progress sink every ``every_s`` seconds.

    ``planned`` is the step count the run will really reach (see
    :func:`mei_envs.agents.train.planned_timesteps`), so the bar ends at 100 %.
    """

    def __init__(self, planned: int, *, bar: bool, note: str = "", every_s: float = 5.0) -> None:
        super().__init__()
        self.planned = int(planned)
        self.bar = bar
        self.note = note
        self.every_s = every_s
        self.sink = _PROGRESS_SINK
        self.label = _PROGRESS_LABEL
        self._tqdm: Any = None
        self._t0 = self._last = 0.0
        self._start_steps = 0

    def _on_training_start(self) -> None:
        self._t0 = self._last = time.perf_counter()
        self._start_steps = self.num_timesteps
        if self.bar:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(
                total=self.planned,
                initial=self.num_timesteps,
                unit="step",
                unit_scale=True,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            if self.note:
                self._tqdm.write(self.note, file=sys.stderr)
        self._report()

    def _rate(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return (self.num_timesteps - self._start_steps) / elapsed if elapsed > 0 else 0.0

    def _report(self) -> None:
        if self.sink is not None:
            self.sink(self.label, int(self.num_timesteps), self.planned, self._rate())

    def _on_step(self) -> bool:
        if self._tqdm is not None:
            self._tqdm.update(self.num_timesteps - self._tqdm.n)
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            self._report()
        return True

    def _on_training_end(self) -> None:
        if self._tqdm is not None:
            self._tqdm.update(self.num_timesteps - self._tqdm.n)
            self._tqdm.close()
        self._report()
