"""Bad input gets a clean error: exit code 2, a message naming the culprit, no traceback.

A table of command lines runs through ``mei_envs.cli.main`` in this process; the cases that
need a missing package or a closed pipe run in a subprocess. Each case also checks that no
run folder was started (errors are caught before any work).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import mei_envs
from mei_envs.cli import main
from mei_envs.config import ConfigError

pytest.importorskip("stable_baselines3")

REPO = Path(__file__).resolve().parents[1]
ENV = "mei_envs/EarlyExitUpload-v1"


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    """A tiny trained agent (64 steps) with VecNormalize statistics, trained on the default."""
    from mei_envs.agents.train import TrainArgs, train

    run = tmp_path_factory.mktemp("agent") / "run"
    args = TrainArgs(
        env_id=ENV,
        algo="a2c",
        total_timesteps=64,
        normalize=True,
        hyperparams_override={"n_envs": 1, "n_steps": 8},
        run_dir=str(run),
        eval_freq=0,
        checkpoint_freq=0,
        tensorboard=False,
    )
    return train(args)


def _bad_yaml(tmp: Path) -> str:
    path = tmp / "broken.yml"
    path.write_text("algos: [ppo\nseeds: {")
    return str(path)


def _corrupt_vecnormalize(tmp: Path, agent: Path) -> str:
    copy = tmp / "copy"
    copy.mkdir()
    (copy / "model.zip").write_bytes((agent / "model.zip").read_bytes())
    (copy / "config.yml").write_bytes((agent / "config.yml").read_bytes())
    (copy / "vecnormalize.pkl").write_bytes(b"not a pickle")
    return str(copy / "model.zip")


def _existing_sweep(tmp: Path) -> str:
    taken = tmp / "sweep" / "mei_envs-EarlyExitUpload-v1__a2c__default__s0"
    taken.mkdir(parents=True)
    (taken / "progress.csv").write_text("x\n")
    return str(tmp / "sweep")


OUT = ["--out-dir", "{tmp}/out"]
# (argv, exit code, fragments the message must contain)
CASES = [
    (["compare", "--config", "{bad_yaml}", *OUT], 2, ["broken.yml", "YAML"]),
    (["compare", "--config", "{tmp}/none.yml"], 2, ["none.yml"]),
    (["compare", "--set", 'algos=["sac"]', *OUT], 2, ["algos", "sac", "Box"]),
    (["compare", "--set", 'hyperparams_override={"ppo":{"n_stepz":8}}', *OUT], 2, ["n_stepz"]),
    (["compare", "--set", "env_config=[1,2]", *OUT], 2, ["env_config", "[1, 2]"]),
    (["compare", "--env-set", "no_such_key=1", *OUT], 2, ["no_such_key"]),
    (["compare", "--set", "seeds=[0,0]", *OUT], 2, ["seeds"]),
    (["compare", "--set", "workers=0", *OUT], 2, ["workers"]),
    (["compare", "--set", "oops", *OUT], 2, ["--set", "oops"]),
    (["compare", "--resume", "{tmp}"], 2, ["config.yml"]),
    (["evaluate", "--env", ENV, "--policy", "eager", "--param", "threshold=3"], 2,
     ["eager", "threshold"]),
    (["evaluate", "--env", ENV, "--policy", "snr_threshold", "--param", "threshold_db=abc"], 2,
     ["threshold_db", "abc"]),
    (["evaluate", "--env", ENV, "--policy", "nope"], 2, ["nope"]),
    (["evaluate", "--env", "mei_envs/Nope-v0", "--policy", "eager"], 2, ["Nope-v0"]),
    (["evaluate", "--env", ENV, "--policy", "eager", "--set", "speed_mpz=3"], 2, ["speed_mpz"]),
    (["evaluate", "--env", ENV, "--policy", "{corrupt_vn}"], 2, ["vecnormalize.pkl"]),
    (["evaluate", "--env", ENV, "--policy", "{agent}/model.zip", "--strict", "--set",
      "tokens=40"], 2, ["tokens", "strict"]),
    (["evaluate", "--env", ENV, "--policy", "{tmp}/missing.zip"], 2, ["missing.zip"]),
    (["train", "--env", "mei_envs/Nope-v0", "--run-dir", "{tmp}/t"], 2, ["Nope-v0"]),
    (["train", "--env", ENV, "--algo", "sac", "--run-dir", "{tmp}/t"], 2, ["sac", "Box"]),
    (["train", "--env", ENV, "--hp", "n_envz=2", "--run-dir", "{tmp}/t"], 2, ["n_envz"]),
    (["train", "--env", ENV, "--algo", "nope", "--run-dir", "{tmp}/t"], 2, ["nope"]),
    (["train", "--env", ENV, "--set", "oops", "--run-dir", "{tmp}/t"], 2, ["--set", "oops"]),
    (["train", "--env", ENV, "--resume", "--run-dir", "{tmp}/none"], 2, ["config.yml"]),
    (["sweep", "--env", ENV, "--algo", "a2c", "--out-dir", "{sweep}"], 2,
     ["--resume", "a2c__default__s0"]),
    (["sweep", "--env", ENV, "--algo", "sac", "--out-dir", "{tmp}/s"], 2, ["sac"]),
    (["sweep", "--env", ENV, "--grid", "tokens=5", "--out-dir", "{tmp}/s"], 2, ["--grid"]),
    (["plot", "{tmp}/none"], 2, ["none"]),
    (["plot", "{tmp}"], 1, ["incomplete", "MANIFEST"]),
    (["profile", "show", "no-such-model"], 2, ["no-such-model"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "code", "fragments"), CASES, ids=[" ".join(c[0][:4]) for c in CASES]
)
def test_cli_bad_input_table(argv, code, fragments, tmp_path, agent, capsys):
    subs = {
        "tmp": str(tmp_path),
        "bad_yaml": _bad_yaml(tmp_path),
        "agent": str(agent),
        "corrupt_vn": _corrupt_vecnormalize(tmp_path, agent) if "{corrupt_vn}" in argv else "",
        "sweep": _existing_sweep(tmp_path) if "{sweep}" in argv else "",
    }
    for key, value in subs.items():
        argv = [a.replace("{" + key + "}", value) for a in argv]
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, (argv, err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing started
    assert not (tmp_path / "t").exists() and not (tmp_path / "s").exists()


def _subprocess(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("blocked", "argv", "extra"),
    [
        (["torch", "stable_baselines3"], ["sweep", "--env", ENV, "--out-dir", "S"], "train"),
        (["torch", "stable_baselines3"], ["compare", "--out-dir", "S"], "train"),
        (["peft"], ["profile", "generate", "--models", "gpt2", "--out", "S"], "profile"),
    ],
)
def test_missing_package_names_the_extra_before_any_work(blocked, argv, extra, tmp_path):
    argv = [a.replace("S", str(tmp_path / "s")) for a in argv]
    code = (  # a core install: importing the blocked packages fails as if absent
        "import sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        f"from mei_envs.cli import main\nsys.exit(main({argv!r}))\n"
    )
    res = _subprocess(code)
    assert res.returncode == 2, res.stderr
    assert f"pip install 'mei-envs[{extra}]'" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.json"))


def test_list_json_into_a_closed_pipe_is_quiet():
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'mei_envs.cli', 'list', '--json'],"
        " stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "p.stdout.readline(); p.stdout.close()\n"
        "err = p.stderr.read().decode(); p.wait()\n"
        "print(err)\n"
    )
    res = _subprocess(code)
    assert "Traceback" not in res.stdout and "BrokenPipe" not in res.stdout, res.stdout


def test_config_values_accept_numpy_scalars_and_refuse_non_mappings():
    import gymnasium as gym

    env = gym.make(ENV, config={"tokens": np.int64(40), "speed_mps": np.float32(2.0)})
    assert env.unwrapped.config.tokens == 40 and isinstance(env.unwrapped.config.tokens, int)
    env.close()
    with pytest.raises(ConfigError, match=r"config=\[1, 2\]"):
        gym.make(ENV, config=[1, 2])


def test_agent_on_another_config_warns_naming_the_keys(agent):
    from mei_envs.baselines.evaluation import run_episodes

    with pytest.warns(UserWarning, match=r"tokens: trained=\d+, evaluated=40"):
        run_episodes(ENV, str(agent / "model.zip"), episodes=1, seed=0, env_config={"tokens": 40})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same config: no warning
        run_episodes(ENV, str(agent / "model.zip"), episodes=1, seed=0)


def test_result_files_follow_the_umask(tmp_path):
    from mei_envs.experiments.io import write_text_atomic

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "summary.md", "x")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert write_text_atomic(tmp_path / "private.md", "x").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    run = yaml.safe_load  # noqa: F841 - yaml imported for the agent fixture's config
    assert mei_envs.ENV_IDS
