"""The exact fast paths SplitFedAlloc-v0's speed-ups (issue 12) rely on, against the code
they replace: FiniteStateMarkovChannel.step_uniform against step's comparison, and the
unchecked macro path loss against path_loss_db."""

from __future__ import annotations

import numpy as np

from mei_envs import wireless


class _Fixed:
    """A generator whose ``random`` returns given numbers."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.values.reshape(shape)


def _chain(rng: np.random.Generator, n: int) -> wireless.FiniteStateMarkovChannel:
    p = rng.random((n, n)) ** 3
    p /= p.sum(axis=1, keepdims=True)
    snr = np.sort(rng.random(n)) + np.arange(n) + 0.1
    th = np.concatenate([[0.0], np.sqrt(snr[:-1] * snr[1:]), [np.inf]])
    return wireless.FiniteStateMarkovChannel(snr, p, th)


def test_fsmc_step_uniform_matches_step() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 12))
        ch = _chain(rng, n)
        st = rng.integers(0, n, size=(40, 7))
        u = rng.random((40, 7))
        np.testing.assert_array_equal(ch.step_uniform(st, u), ch.step(st, _Fixed(u)))
        # numbers that are not multiples of 2**-53 take the comparison
        v = u * (1.0 - 1e-17) + 1e-20
        np.testing.assert_array_equal(ch.step_uniform(st, v), ch.step(st, _Fixed(v)))


def test_fsmc_step_uniform_at_the_thresholds() -> None:
    """Draws on, just below and just above every cumulative threshold (a wrong rounding of
    the integer thresholds would move a state by one here)."""
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 8):
        ch = _chain(rng, n)
        vals = []
        for c in ch._cum.ravel():
            k = np.floor(c * 2.0**53)
            vals += [(k + d) / 2.0**53 for d in (-1.0, 0.0, 1.0)]
        u = np.clip(np.array(vals), 0.0, 1.0 - 2.0**-53)
        for s in range(n):
            st = np.full(u.shape, s)
            np.testing.assert_array_equal(ch.step_uniform(st, u), ch.step(st, _Fixed(u)))


def test_macro_path_loss_is_path_loss_db() -> None:
    d = np.random.default_rng(2).uniform(1.0, 5000.0, size=200)
    np.testing.assert_array_equal(wireless.macro_path_loss_db(d), wireless.path_loss_db(d))
