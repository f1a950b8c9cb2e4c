"""The ``mei-envs`` command line on small cases: output and error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mei_envs
from mei_envs.baselines.evaluation import run_episodes
from mei_envs.baselines.registry import list_policies
from mei_envs.cli import main

ENV_ID = "mei_envs/EarlyExitUpload-v1"


def test_list_json_names_every_env_and_policy(capsys) -> None:
    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [e["env_id"] for e in out] == list(mei_envs.ENV_IDS)
    for entry in out:
        names = {p["name"] for p in entry["policies"]}
        assert names == {s.name for s in list_policies(entry["env_id"])[entry["env_id"]]}
        assert any(p["kind"] == "oracle" for p in entry["policies"])


def test_list_text(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert ENV_ID in out and "dp_oracle" in out and "oracle" in out


def test_evaluate_json_matches_the_runner(capsys) -> None:
    argv = ["evaluate", "--env", ENV_ID, "--policy", "eager", "--episodes", "3", "--seed", "5"]
    assert main([*argv, "--set", "tokens=16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = run_episodes(ENV_ID, "eager", episodes=3, seed=5, env_config={"tokens": 16})
    assert out["summary"]["return"]["mean"] == pytest.approx(ref.returns.mean())
    assert out["summary"]["return"]["std"] == pytest.approx(ref.returns.std(ddof=1))
    assert out["summary"]["latency_s"]["mean"] == pytest.approx(ref.metrics["latency_s"].mean())
    assert out["config"] == {"tokens": 16}


def test_evaluate_text_table(capsys) -> None:
    argv = ["evaluate", "--env", ENV_ID, "--policy", "lazy", "--episodes", "2", "--seed", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for key in ("return", "latency_s", "energy_J", "seeds=0..1"):
        assert key in out


def test_evaluate_policy_parameter(capsys) -> None:
    argv = ["evaluate", "--env", ENV_ID, "--policy", "snr_threshold", "--episodes", "2"]
    assert main([*argv, "--param", "threshold_db=-100", "--json"]) == 0
    low = json.loads(capsys.readouterr().out)["summary"]["return"]["mean"]
    eager = run_episodes(ENV_ID, "eager", episodes=2, seed=0).returns.mean()
    assert low == pytest.approx(eager)  # threshold below every SNR: always upload


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["evaluate", "--env", "mei_envs/Nope-v0", "--policy", "eager"], "unknown env"),
        (["evaluate", "--env", ENV_ID, "--policy", "nope", "--episodes", "1"], "unknown policy"),
        (["evaluate", "--env", ENV_ID, "--policy", "eager", "--set", "bogus=1"], "bogus"),
        (["evaluate", "--env", ENV_ID, "--policy", "eager", "--set", "cut_layer=99"], "cut_layer"),
        (["evaluate", "--env", ENV_ID, "--policy", "eager", "--episodes", "0"], "episodes"),
        (["evaluate", "--env", ENV_ID, "--policy", "missing/model.zip"], "model.zip"),
        (["profile", "show", "gpt-5"], "gpt-5"),
    ],
)
def test_errors_name_the_culprit(argv, fragment, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err


def test_profile_list_json(capsys) -> None:
    assert main(["profile", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {d["name"]: d for d in data} if isinstance(data, list) else data
    assert "tinyllama-1.1b" in by_name


def test_console_script_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mei_envs.cli", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)[0]["env_id"] == ENV_ID


def test_train_flags_come_from_trainargs_metadata() -> None:
    """Every TrainArgs field is a flag with its help text; the old flag names still parse."""
    import argparse
    import dataclasses

    pytest.importorskip("stable_baselines3")
    from mei_envs.agents.args import TrainArgs
    from mei_envs.agents.cli import add_train_parser
    from mei_envs.cli import dataclass_from_flags

    parser = argparse.ArgumentParser()
    p = add_train_parser(parser.add_subparsers(dest="command"))
    dests = {a.dest: a for a in p._actions}
    for f in dataclasses.fields(TrainArgs):
        assert f.name in dests, f.name
        assert dests[f.name].help and f.metadata["help"] in dests[f.name].help
    argv = ["train", "--env", "E", "--timesteps", "64", "--n-envs", "2", "--no-normalize"]
    argv += ["--set", "a=1", "--hp", "n_steps=8", "--no-tensorboard", "-v", "1", "--resume"]
    argv += ["--progress-bar", "--eval-seed", "7", "--torch-threads", "2"]
    ns = parser.parse_args(argv)
    args = dataclass_from_flags(TrainArgs, ns)
    assert (args.env_id, args.total_timesteps, args.n_envs, args.normalize) == ("E", 64, 2, False)
    assert args.env_config == {"a": 1} and args.hyperparams_override == {"n_steps": 8}
    assert (args.tensorboard, args.verbose, args.resume, args.progress_bar) == (
        False,
        1,
        True,
        True,
    )
    assert (args.eval_seed, args.torch_threads) == (7, 2)
    assert parser.parse_args(["train", "--env", "E"]).algo is None  # resume reads the run's
