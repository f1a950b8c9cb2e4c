"""The fitted training-progress model: provenance, fit error, inverse and additivity."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mei_envs import training
from mei_envs.experiments.fit_training_progress import curve_residuals

DATA = json.loads(training.TRAINING_PROGRESS_JSON.read_text())


def test_shipped_fit_has_provenance() -> None:
    for key in ("script", "command", "settings", "versions", "curves", "fit_error", "params"):
        assert key in DATA, key
    assert DATA["settings"]["seed"] == 0
    for lib in ("torch", "transformers", "peft", "scipy", "numpy"):
        assert DATA["versions"][lib]
    kinds = {(c["kind"], c["targets"]) for c in DATA["curves"]}
    assert kinds == {("central", "attention"), ("central", "all_linear"), ("fedavg", "all_linear")}
    assert {c["rank"] for c in DATA["curves"]} >= {1, 2, 4, 8, 16}
    assert {c["interval"] for c in DATA["curves"] if c["kind"] == "fedavg"} >= {1, 4, 16}


def test_shipped_fit_reproduces_the_raw_curves_within_its_stated_error() -> None:
    p = training.load_params()
    err = DATA["fit_error"]
    r = curve_residuals(p, DATA["curves"])
    assert np.abs(r).max() <= err["max_abs"] + 1e-9
    assert np.sqrt(np.mean(r**2)) == pytest.approx(err["rmse"], rel=1e-6)
    assert err["rmse"] < 0.05  # nats/token: the fit is informative, not a flat line
    # rank matters where the data say so: all-linear adapters gain from rank, more than
    # attention-only ones
    lin = training.floor_loss(p, 1, "all_linear") - training.floor_loss(p, 16, "all_linear")
    att = training.floor_loss(p, 1, "attention") - training.floor_loss(p, 16, "attention")
    assert lin > att > 0


def test_env_side_model_loads_without_torch() -> None:
    code = (
        "import sys, mei_envs.training as t, mei_envs.envs.split_fed_alloc as e; "
        "t.load_params(); e.SplitFedAllocEnv().reset(seed=0); "
        "bad = [m for m in ('torch', 'scipy', 'transformers', 'peft') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_inverse_and_additivity() -> None:
    p = training.load_params()
    u = np.array([10.0, 300.0, 5000.0])
    for targets in training.TARGET_CLASSES:
        for rank in (1, 4, 16):
            loss = training.loss_curve(p, u, rank, targets, batch_tokens=1e-9)
            np.testing.assert_allclose(
                training.tokens_to_loss(p, loss, rank, targets), u, rtol=1e-8
            )
            kw = dict(batch_tokens=512.0, interval=4, noniid=0.5, device_share=0.5)
            l0 = p.initial_loss
            two = training.advance(
                p, training.advance(p, l0, 300, rank, targets, **kw), 700, rank, targets, **kw
            )
            one = training.advance(p, l0, 1000, rank, targets, **kw)
            assert two == pytest.approx(one, rel=1e-10)
            assert one < l0
    # below a lower rank's floor the loss stays (never increases)
    low = training.floor_loss(p, 1, "all_linear") - 0.1
    assert training.advance(p, low, 1e6, 1, "all_linear", batch_tokens=1.0) == low
    # drift: longer intervals and more heterogeneity never help
    eff = training.drift_efficiency(p, np.array([1, 4, 16]), 1.0, 1.0)
    assert np.all(np.diff(eff) <= 0) and eff[0] <= 1.0


@pytest.mark.slow
def test_fit_run_gives_the_same_curves_in_parallel_workers() -> None:
    """The LoRA runs of the fitting script run in worker processes (each re-seeded, its
    batches drawn from generators seeded in the sequential order): the raw curves must be
    the same floats as one process's, or the shipped fit would not reproduce."""
    pytest.importorskip("peft")
    pytest.importorskip("transformers")
    from mei_envs.experiments import fit_training_progress as fit

    tiny = (
        "--pretrain_steps 3 --ft_steps 4 --ranks 1 2 --fed_rounds 4 --fed_intervals 1 2 "
        "--n_clients 2 --n_topics 2 --eval_every 2 --eval_batches 1 --batch 2 --seq_len 16"
    ).split()
    serial = fit.run(fit.parse_args([*tiny, "--workers", "1"]))["curves"]
    parallel = fit.run(fit.parse_args([*tiny, "--workers", "2"]))["curves"]
    assert [c["loss"] for c in parallel] == [c["loss"] for c in serial]
    assert parallel == serial
    assert len(serial) == 2 * 2 + 2 * 2
    # the runs differ from each other (a shared seed or data bug would make them equal)
    assert len({tuple(c["loss"][1:]) for c in serial}) == len(serial)
