"""The arguments of one training run (:class:`TrainArgs`), importable without torch.

Experiment configs and the sweep hold a :class:`TrainArgs` per job; ``mei-envs train``'s flags
are generated from its field metadata (:func:`mei_envs.cli.add_dataclass_flags`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Values of TrainArgs.vec_env: "auto" is "native" where the env registers a vector_entry_point,
# else "dummy" (mei_envs.agents.envs.resolve_vec_env).
VEC_ENV_CHOICES = ("auto", "native", "dummy", "subproc")


@dataclass
class TrainArgs:
    """Arguments of one training run.

    Each field's metadata carries its ``help`` text and, where the flag differs from
    ``--field-name``, its ``flag``; :func:`mei_envs.agents.cli.add_train_parser` builds the
    ``mei-envs train`` flags from them (CleanRL's dataclass-with-help style).
    """

    env_id: str = field(
        metadata={"help": "Gymnasium env id, e.g. mei_envs/EarlyExitUpload-v1", "flag": "--env"}
    )
    algo: str = field(
        default="ppo",
        metadata={
            "help": "ppo | a2c | dqn | sac | td3 | maskable_ppo (default ppo; with --resume: "
            "the run's)",
            "cli_default": None,
        },
    )
    total_timesteps: int | None = field(
        default=None,
        metadata={
            "help": "env steps in total (default: the YAML n_timesteps)",
            "flag": "--timesteps",
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of RNGs and training envs"})
    n_envs: int | None = field(
        default=None, metadata={"help": "parallel training envs (default: YAML n_envs or 1)"}
    )
    vec_env: str = field(
        default="auto",
        metadata={
            "help": "how the training envs are vectorised: native (the env's vector version "
            "through the SB3 adapter), dummy or subproc (SB3's DummyVecEnv/SubprocVecEnv over "
            "single envs), auto (native where the env registers one, else dummy); native and "
            "dummy give the same rollouts",
            "choices": VEC_ENV_CHOICES,
        },
    )
    obs_hint: str | None = field(
        default=None,
        metadata={
            "help": "append a registered heuristic's advice to the observation (e.g. "
            "knapsack_greedy: one-hot of its action and its keep set; mei_envs.agents.hint); "
            "the native vector env is then replaced by dummy",
            "flag": "--hint",
        },
    )
    obs_hint_params: dict = field(
        default_factory=dict,
        metadata={
            "help": "parameter of the --hint policy (e.g. refresh=1)",
            "flag": "--hint-param",
        },
    )
    obs_hint_features: str = field(
        default="action,keep",
        metadata={
            "help": "comma-separated hint features: action (one-hot of its action), keep (its "
            "keep set per model)",
            "flag": "--hint-features",
        },
    )
    normalize: bool | None = field(
        default=None, metadata={"help": "wrap in VecNormalize (default: as the YAML says)"}
    )
    env_config: dict = field(
        default_factory=dict,
        metadata={
            "help": "env config value (gym.make(id, config=...))",
            "flag": "--set",
        },
    )
    hyperparams: str | None = field(
        default=None, metadata={"help": "YAML hyperparameter file (default: the shipped one)"}
    )
    hyperparams_override: dict = field(
        default_factory=dict,
        metadata={"help": "hyperparameter replacing the YAML one", "flag": "--hp"},
    )
    run_dir: str | None = field(
        default=None, metadata={"help": "run folder (default runs/ALGO/ENV__SEED__TIME)"}
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
        default=False, metadata={"help": "continue --run-dir from its latest checkpoint"}
    )
    progress_bar: bool | None = field(
        default=None,
        metadata={"help": "show a progress bar (default: when stderr is a terminal)"},
    )
    tensorboard: bool = field(default=True, metadata={"help": "log to RUN_DIR/tb"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    verbose: int = field(
        default=0, metadata={"help": "0 quiet, 1 SB3 logs to stdout", "short": "-v"}
    )
    torch_threads: int = field(
        default=1, metadata={"help": "torch CPU threads (1 is fastest for small MLPs)"}
    )


def check_train_args(args: TrainArgs) -> None:
    """Check the plain fields of ``args`` (the algorithm and env are checked by ``train``).

    Raises:
        ValueError: naming the field, its value and what is allowed.
    """
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
    if args.vec_env not in VEC_ENV_CHOICES:
        raise ValueError(f"vec_env={args.vec_env!r}: must be one of {list(VEC_ENV_CHOICES)}")
    if not isinstance(args.env_config, Mapping):
        raise ValueError(f"env_config={args.env_config!r}: must be a mapping")
    if not isinstance(args.hyperparams_override, Mapping):
        raise ValueError(f"hyperparams_override={args.hyperparams_override!r}: must be a mapping")
    if args.obs_hint is not None and (not isinstance(args.obs_hint, str) or not args.obs_hint):
        raise ValueError(f"obs_hint={args.obs_hint!r}: must be a registered policy name or None")
    if not isinstance(args.obs_hint_params, Mapping):
        raise ValueError(f"obs_hint_params={args.obs_hint_params!r}: must be a mapping")
    if not isinstance(args.obs_hint_features, str) or not hint_features(args.obs_hint_features):
        raise ValueError(
            f"obs_hint_features={args.obs_hint_features!r}: must be a comma-separated list "
            "such as 'action,keep'"
        )
    if args.progress_bar is not None and not isinstance(args.progress_bar, bool):
        raise ValueError(f"progress_bar={args.progress_bar!r}: must be true, false or None")


def hint_features(text: str) -> tuple[str, ...]:
    """``"action,keep"`` -> ``("action", "keep")`` (blanks dropped)."""
    return tuple(p.strip() for p in str(text).split(",") if p.strip())
