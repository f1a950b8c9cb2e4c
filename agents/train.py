"""Train a Stable-Baselines3 agent on a Gymnasium env: reproducible, logged and resumable.

Read top to bottom: the arguments (:class:`TrainArgs`, whose field metadata also generates
the ``mei-envs train`` flags), then :func:`train`. The topics live in their own modules, as
in rl-baselines3-zoo: :mod:`~mei_envs.agents.hyperparameters` (zoo YAML files),
:mod:`~mei_envs.agents.envs` (monitored, vectorised envs), :mod:`~mei_envs.agents.callbacks`
and :mod:`~mei_envs.agents.files` (checkpoints, logs, config.yml).

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
Training envs are the env's native vector version where it registers one (``vec_env="auto"``,
through :class:`~mei_envs.agents.vector.VectorEnvAdapter`) or single envs in SB3's
``DummyVecEnv`` (``vec_env="dummy"``); both collect the same rollouts for the same seed, so the
choice changes speed, not results. config.yml records the resolved choice as ``vec_env``.
Evaluation envs are seeded from ``eval_seed`` (far from training seeds), and every evaluation
replays the same episodes so the curve compares like with like.

Budget: on-policy algorithms (PPO, A2C) collect whole rollouts of ``n_steps * n_envs`` steps,
so a budget that is not a multiple of the rollout is rounded up to the next one (SB3's own
behaviour); :func:`planned_timesteps` gives the exact count, which config.yml records as
``planned_timesteps`` and the progress bar shows.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from mei_envs.agents.algos import OFF_POLICY, check_algo_for_env, get_algo_class
from mei_envs.agents.args import TrainArgs, check_train_args
from mei_envs.agents.callbacks import (
    EpisodeMetricsLogger,
    FullCheckpointCallback,
    SeededEvalCallback,
    StepProgress,
)
from mei_envs.agents.envs import env_info_metrics, make_env, make_vec_env, resolve_vec_env
from mei_envs.agents.files import (
    latest_checkpoint,
    make_logger,
    read_run_config,
    save_checkpoint,
    save_model,
    save_vecnormalize,
    trim_run_logs,
)
from mei_envs.agents.hint import HintSpec
from mei_envs.agents.hyperparameters import (
    ResolvedHyperparams,
    check_hyperparam_keys,
    default_hyperparams_path,
    load_hyperparams,
    parse_expr,
    resolve_hyperparams,
)
from mei_envs.experiments.io import package_versions, slug, write_text_atomic

MASKABLE = frozenset({"maskable_ppo"})
# Packages whose versions config.yml records.
_VERSIONED = ("gymnasium", "numpy", "torch", "stable_baselines3", "sb3_contrib")
# Re-exported: earlier code imported these from here.
__all__ = [
    "TrainArgs",
    "make_env",
    "parse_expr",
    "planned_timesteps",
    "read_run_config",
    "resolve_config",
    "train",
]


def _check_args(args: TrainArgs) -> None:
    get_algo_class(args.algo)
    check_train_args(args)


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


def _yaml_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


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
        run_dir = Path("runs") / args.algo / f"{slug(args.env_id)}__{args.seed}__{stamp}"
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
        probe = make_env(args.env_id, args.env_config)  # an unknown id or config: named here
        try:
            check_algo_for_env(args.algo, probe)
            hint = HintSpec.from_args(args)
            if hint is not None:  # an unknown policy or feature: named before any file
                hint.build(probe)
        finally:
            probe.close()
        chosen = resolve_config(args)[1].get("policy")
        if chosen == "HintResidualPolicy":
            _check_hint_residual(args, hint)
        elif chosen == "ItemScorerPolicy":
            _item_layout(args)
        # "native" without a vector env, or with a hint: say so now
        resolve_vec_env(args.env_id, args.vec_env, hint=args.obs_hint is not None)
    run_dir, args, hp = _prepare_run_dir(args)
    th.set_num_threads(args.torch_threads)
    if args.device == "cpu":
        th.use_deterministic_algorithms(True, warn_only=True)

    hint = HintSpec.from_args(args)
    probe = make_env(args.env_id, args.env_config)
    try:
        check_algo_for_env(args.algo, probe)
        info_metrics = env_info_metrics(probe)
        action_space = probe.action_space
    finally:
        probe.close()
    rh = resolve_hyperparams(args.algo, hp, action_space)
    policy: Any = rh.policy
    if policy == "HintResidualPolicy":  # mei_envs.agents.hint_policy
        policy = _hint_residual(args, hint, rh)
    elif policy == "ItemScorerPolicy":  # mei_envs.agents.item_policy
        policy = _item_scorer(args, rh)
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
        trim_run_logs(run_dir, start[1], rh.n_envs)
    cls = get_algo_class(args.algo)
    planned, note = planned_timesteps(cls, rh, start[1] if start else 0)
    vec_env = resolve_vec_env(args.env_id, args.vec_env, hint=hint is not None)

    config = {
        "args": _yaml_safe(dataclasses.asdict(args)),
        "hyperparams": _yaml_safe(hp),
        "vec_env": vec_env,  # args.vec_env resolved ("auto" -> native or dummy)
        "info_metrics": info_metrics,
        "planned_timesteps": planned,
        "versions": package_versions(_VERSIONED),
    }
    write_text_atomic(run_dir / "config.yml", yaml.safe_dump(config, sort_keys=False))

    (run_dir / "monitor").mkdir(exist_ok=True)
    venv: VecEnv = make_vec_env(
        args.env_id,
        rh.n_envs,
        env_config=args.env_config,
        monitor_dir=run_dir / "monitor",
        info_metrics=info_metrics,
        masked=masked,
        vec_env=vec_env,
        append_monitor=args.resume,
        hint=hint,
        step_info=False,  # native: per-step info keys unread (episode records kept)
    )
    try:
        if start is None:
            if rh.normalize_kwargs is not None:
                venv = VecNormalize(venv, **rh.normalize_kwargs)
            set_random_seed(args.seed)
            model = cls(
                policy,
                venv,
                seed=args.seed,
                device=args.device,
                verbose=args.verbose,
                **rh.model_kwargs,
            )
        else:
            venv, model = _load_checkpoint(cls, start, venv, rh, off_policy, args.device)
            model.set_random_seed(args.seed + model.num_timesteps)
        model.set_logger(make_logger(run_dir, args.tensorboard, args.verbose))

        callbacks: list[BaseCallback] = [EpisodeMetricsLogger(info_metrics)]
        if args.checkpoint_freq > 0:
            callbacks.append(FullCheckpointCallback(args.checkpoint_freq, ckpt_dir, off_policy))
        eval_env = None
        if args.eval_freq > 0:
            eval_env = make_vec_env(
                args.env_id,
                1,
                env_config=args.env_config,
                info_metrics=info_metrics,
                masked=masked,
                hint=hint,
            )
            if rh.normalize_kwargs is not None:
                eval_env = VecNormalize(
                    eval_env,
                    training=False,
                    norm_reward=False,
                    **{k: v for k, v in rh.normalize_kwargs.items() if k != "norm_reward"},
                )
            callbacks.append(
                SeededEvalCallback(
                    eval_env,
                    eval_freq=args.eval_freq,
                    n_episodes=args.eval_episodes,
                    eval_seed=args.eval_seed,
                    path=run_dir / "evaluations.npz",
                    info_metrics=info_metrics,
                    masked=masked,
                )
            )
        bar = sys.stderr.isatty() if args.progress_bar is None else args.progress_bar
        callbacks.append(StepProgress(planned, bar=bar, note=note))
        remaining = max(rh.n_timesteps - model.num_timesteps, 0)
        if remaining > 0:
            model.learn(
                total_timesteps=remaining,
                callback=CallbackList(callbacks),
                reset_num_timesteps=start is None,
            )
        save_model(model, run_dir / "model.zip")
        vn = model.get_vec_normalize_env()
        if vn is not None:
            save_vecnormalize(vn, run_dir / "vecnormalize.pkl")
        if args.checkpoint_freq > 0:
            save_checkpoint(model, ckpt_dir, off_policy)
        model.logger.close()
        if eval_env is not None:
            eval_env.close()
    finally:
        venv.close()
    marker = {"num_timesteps": int(model.num_timesteps), "finished": time.time()}
    write_text_atomic(complete, yaml.safe_dump(marker))
    return run_dir


def _check_hint_residual(args: TrainArgs, hint: HintSpec | None) -> None:
    if args.algo != "maskable_ppo" or hint is None or hint.features[0] != "action":
        raise ValueError(
            "policy=HintResidualPolicy: needs algo maskable_ppo and an obs_hint whose first "
            f"feature is 'action' (got algo={args.algo!r}, obs_hint={args.obs_hint!r}, "
            f"obs_hint_features={args.obs_hint_features!r})"
        )


def _hint_residual(args: TrainArgs, hint: HintSpec | None, rh: ResolvedHyperparams) -> type:
    """The :class:`~mei_envs.agents.hint_policy.HintResidualPolicy` class, with its
    ``hint_start``/``hint_size`` set in ``rh.model_kwargs["policy_kwargs"]`` from the env."""
    from mei_envs.agents.hint_policy import HintResidualPolicy

    _check_hint_residual(args, hint)
    probe = make_env(args.env_id, args.env_config)
    try:
        start, size = int(probe.observation_space.shape[0]), int(probe.action_space.n)
    finally:
        probe.close()
    kw = dict(rh.model_kwargs.get("policy_kwargs") or {})
    kw.setdefault("hint_start", start)
    kw.setdefault("hint_size", size)
    rh.model_kwargs["policy_kwargs"] = kw
    return HintResidualPolicy


def _item_layout(args: TrainArgs) -> dict[str, Any]:
    """The env's ``obs_item_layout()`` for :class:`ItemScorerPolicy`.

    Raises:
        ValueError: the algorithm is not maskable_ppo, the env has no item layout, or a hint
            is appended (its entries would be read as globals; use one or the other).
    """
    if args.algo != "maskable_ppo" or args.obs_hint is not None:
        raise ValueError(
            "policy=ItemScorerPolicy: needs algo maskable_ppo and no obs_hint (got "
            f"algo={args.algo!r}, obs_hint={args.obs_hint!r})"
        )
    probe = make_env(args.env_id, args.env_config)
    try:
        layout = getattr(probe.unwrapped, "obs_item_layout", None)
        if layout is None:
            raise ValueError(
                f"policy=ItemScorerPolicy: {args.env_id} has no obs_item_layout() (its "
                "observation is not a table of items); use MlpPolicy"
            )
        return dict(layout())
    finally:
        probe.close()


def _item_scorer(args: TrainArgs, rh: ResolvedHyperparams) -> type:
    """The :class:`~mei_envs.agents.item_policy.ItemScorerPolicy` class, with ``n_items``,
    ``n_features``, ``request_feature`` and ``item_blocks`` set in
    ``rh.model_kwargs["policy_kwargs"]`` from the env's ``obs_item_layout()``, and
    ``item_relation`` too when the policy kwargs say ``item_relation=True``."""
    from mei_envs.agents.item_policy import ItemScorerPolicy

    items = _item_layout(args)
    kw = dict(rh.model_kwargs.get("policy_kwargs") or {})
    for key in ("n_items", "n_features", "request_feature"):
        kw.setdefault(key, int(items[key]))
    kw.setdefault(
        "item_blocks", [[int(o), int(r)] for o, r in items.get("item_blocks", [])] or None
    )
    if kw.get("item_relation") is True:
        if "item_relation" not in items:
            raise ValueError(
                f"policy=ItemScorerPolicy: item_relation=True but {args.env_id}'s "
                "obs_item_layout() has no 'item_relation'; drop it or pass a matrix"
            )
        kw["item_relation"] = [[float(v) for v in row] for row in items["item_relation"]]
    elif kw.get("item_relation") is False:
        kw["item_relation"] = None
    rh.model_kwargs["policy_kwargs"] = kw
    return ItemScorerPolicy


def planned_timesteps(
    cls: type[BaseAlgorithm], rh: ResolvedHyperparams, start: int = 0
) -> tuple[int, str]:
    """The step count a run from ``start`` to ``rh.n_timesteps`` really reaches, and why.

    SB3 stops at the first whole rollout (on-policy: ``n_steps * n_envs``; off-policy with a
    step-based ``train_freq``: ``train_freq * n_envs``) that reaches the budget. Returns
    ``(steps, note)``; the note is empty when the budget is met exactly.
    """
    target = rh.n_timesteps
    if start >= target:
        return start, ""
    defaults = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    chunk, what = None, ""
    if issubclass(cls, OnPolicyAlgorithm):
        n_steps = int(rh.model_kwargs.get("n_steps", defaults.get("n_steps")))
        chunk, what = n_steps * rh.n_envs, f"rollouts of n_steps*n_envs = {n_steps}*{rh.n_envs}"
    elif "train_freq" in defaults or "train_freq" in rh.model_kwargs:
        freq = rh.model_kwargs.get("train_freq", defaults.get("train_freq"))
        if isinstance(freq, int):
            freq = (freq, "step")
        if isinstance(freq, (tuple, list)) and len(freq) == 2 and freq[1] == "step":
            chunk = int(freq[0]) * rh.n_envs
            what = f"collection chunks of train_freq*n_envs = {int(freq[0])}*{rh.n_envs}"
    if not chunk:
        return target, ""
    steps = start + -(-(target - start) // chunk) * chunk
    if steps == target:
        return steps, ""
    return steps, (
        f"budget {target:,} steps rounded up to {steps:,}: {cls.__name__} trains whole {what} steps"
    )


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
