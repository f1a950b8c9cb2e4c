"""Every EarlyExitUpload config the validator accepts builds, resets and steps with finite
values; every config it rejects raises ConfigError naming a field (issue 9, item 1).

Each example draws EVERY field of the config, inside the validator's limits (wide,
log-scaled ranges; sizes mostly small but with the limits themselves, tokens=4096,
backlog_limit=1024, 64 FSMC states, among the draws) and, for about 1 field in 100, outside
them (negative, zero, NaN, inf, huge, unknown names, malformed lists), so that about two
configs in three are valid. Hypothesis drives the example seed; the field values are drawn
from it with fixed probabilities (hypothesis's own choice among many branches favours the
last one, which would make nearly every config invalid). The counts of drawn / accepted /
rejected configs are printed with ``pytest -s``; ``MEI_CONFIG_SPACE_EXAMPLES`` sets how
many (default 2000; ``benchmarks/`` runs more).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from mei_envs import hardware, radio, wireless
from mei_envs.config import ConfigError
from mei_envs.envs.early_exit_upload import EarlyExitUploadConfig, EarlyExitUploadEnv
from mei_envs.llm import catalog, costs

MAX_EXAMPLES = int(os.environ.get("MEI_CONFIG_SPACE_EXAMPLES", "2000"))
P_BAD = 0.01  # chance that a field is drawn outside the validator's limits
COUNTS: collections.Counter[str] = collections.Counter()
FIELDS = [f.name for f in dataclasses.fields(EarlyExitUploadConfig)]
Gen = np.random.Generator


def log_uniform(lo: float, hi: float) -> Callable[[Gen], float]:
    return lambda r: float(10.0 ** r.uniform(np.log10(lo), np.log10(hi)))


def uniform(lo: float, hi: float) -> Callable[[Gen], float]:
    return lambda r: float(r.uniform(lo, hi))


def size(lo: int, hi: int, small: int) -> Callable[[Gen], int]:
    """Mostly ``lo..small``; 3 in 100 anywhere in ``lo..hi``; 2 in 100 exactly ``hi``."""

    def draw(r: Gen) -> int:
        u = r.random()
        if u < 0.02:
            return hi
        if u < 0.05:
            return int(r.integers(lo, hi + 1))
        return int(r.integers(lo, small + 1))

    return draw


def choice(values: list[Any]) -> Callable[[Gen], Any]:
    return lambda r: values[int(r.integers(len(values)))]


def mix(*draws: Callable[[Gen], Any]) -> Callable[[Gen], Any]:
    return lambda r: draws[int(r.integers(len(draws)))](r)


BAD_NUMS = [-1.0, -1e-9, 1e12, -1e12, float("nan"), float("inf"), "3", True, None]
BAD_NUM = choice(BAD_NUMS)
# Powers [W] (and W/Mbps): anywhere in the validator's [0, 10], tiny ones, exactly 0 or 10.
POWER = mix(uniform(0.0, 10.0), log_uniform(1e-12, 10.0), choice([0.0, 10.0]), lambda r: None)
BAD_INT = choice([-1, 0, 10**7, 2.5, "8", True, None])
BAD_STR = choice(["no_such_choice", "", 3, None])


def fractions(r: Gen) -> list[float]:
    extra = r.uniform(0.0, 1.0, size=int(r.integers(0, 4))).tolist()
    return sorted({0.0, 1.0, *extra})


# field -> (draw inside the limits, draw outside them)
DRAWS: dict[str, tuple[Callable[[Gen], Any], Callable[[Gen], Any]]] = {
    "preset": (choice(list(getattr(EarlyExitUploadConfig, "PRESETS", {}) or ["default"])), BAD_STR),
    "model": (choice(catalog.list_models()), choice(["missing.json", "gpt-9", 7])),
    "cut_layer": (lambda r: 0, choice([0, 99, -1, 1.5])),  # redrawn from the model below
    "device": (choice(hardware.list_hardware()), BAD_STR),
    "server": (choice(hardware.list_hardware()), BAD_STR),
    "device_weight_precision": (choice(list(costs.PRECISION_BITS)), BAD_STR),
    "server_weight_precision": (choice(list(costs.PRECISION_BITS)), BAD_STR),
    "hidden_precision": (choice(list(costs.PRECISION_BITS)), BAD_STR),
    "kv_precision": (choice(list(costs.PRECISION_BITS)), BAD_STR),
    "tokens": (size(1, 4096, 48), BAD_INT),
    "prompt_tokens": (mix(size(0, 32768, 512), lambda r: 0), choice([-1, 10**6, 1.5])),
    "exit_prob": (uniform(1e-6, 1 - 1e-6), choice([0.0, 1.0, 1.5, -0.1])),
    "exit_correlation": (mix(uniform(0.0, 0.999), lambda r: 0.0), choice([1.0, -0.2])),
    "exit_threshold": (uniform(1e-6, 1 - 1e-6), choice([0.0, 1.0, 2.0])),
    "backlog_limit": (size(1, 1024, 24), BAD_INT),
    "channel": (choice(["fsmc", "gauss_markov"]), BAD_STR),
    "fsmc_states": (size(1, 64, 12), BAD_INT),
    "dp_channel_states": (size(1, 64, 12), BAD_INT),
    "snr_history": (size(1, 64, 8), BAD_INT),
    "bandwidth_hz": (log_uniform(1e3, 1e9), choice([999.0, 2e9, *BAD_NUMS])),
    "tx_power_w": (mix(log_uniform(1e-9, 10.0), lambda r: 10.0), BAD_NUM),
    "distance_m": (
        mix(*[log_uniform(10.0, 5000.0)] * 8, log_uniform(1.0, 1e5), choice([1.0, 1e5])),
        BAD_NUM,
    ),
    "noise_density_dbm_per_hz": (uniform(-220.0, -100.0), BAD_NUM),
    "noise_figure_db": (uniform(0.0, 30.0), BAD_NUM),
    "speed_mps": (mix(uniform(0.0, 150.0), log_uniform(1e-6, 150.0), lambda r: 0.0), BAD_NUM),
    "carrier_hz": (
        mix(*[log_uniform(0.5e9, 100e9)] * 8, log_uniform(1e8, 3e11), choice([1e8, 3e11])),
        BAD_NUM,
    ),
    "path_loss_model": (choice(list(wireless.UPLINK_PATH_LOSS_MODELS)), BAD_STR),
    "fsmc_rate": (choice(list(wireless.FSMC_RATES)), BAD_STR),
    "radio_profile": (choice(radio.list_profiles()), BAD_STR),
    "k_factor": (mix(*[lambda r: 0.0] * 3, log_uniform(1e-3, 1000.0)), BAD_NUM),
    "min_spectral_efficiency_bps_per_hz": (log_uniform(1e-3, 2.0), BAD_NUM),
    "max_spectral_efficiency_bps_per_hz": (log_uniform(1.0, 30.0), BAD_NUM),
    "alpha_u_w_per_mbps": (POWER, BAD_NUM),  # POWER includes None (= the profile's value)
    "beta_w": (POWER, BAD_NUM),
    "tail_s": (
        mix(uniform(0.0, 1.0), uniform(0.0, 60.0), choice([0.0, 60.0]), lambda r: None),
        BAD_NUM,
    ),
    "tail_power_w": (POWER, BAD_NUM),
    "sleep_power_w": (POWER, BAD_NUM),
    "wake_s": (mix(uniform(0.0, 1.0), uniform(0.0, 10.0), lambda r: None), BAD_NUM),
    "wake_power_w": (POWER, BAD_NUM),
    "initial_radio": (choice(["idle", "connected"]), BAD_STR),
    "upload_fractions": (
        fractions,
        choice([[0.0], [0.0, 0.5], [0.0, 1.0, 1.0], [0.0, 1.0, 2.0], "0,1", 1.0]),
    ),
    "lambda_energy": (mix(uniform(0.0, 10.0), log_uniform(1e-9, 1e6), lambda r: 1e6), BAD_NUM),
    "flush_at_end": (lambda r: bool(r.integers(2)), choice(["yes", 2, None])),
    "info": (choice(["full", "lean"]), BAD_STR),
}
DRAWS = {k: v for k, v in DRAWS.items() if k in FIELDS}


def draw_config(r: Gen) -> dict[str, Any]:
    cfg = {}
    for name, (good, bad) in DRAWS.items():
        cfg[name] = bad(r) if r.random() < P_BAD else good(r)
    if cfg["cut_layer"] == 0 and cfg["model"] in catalog.list_models():
        n_layers = catalog.get_architecture(cfg["model"]).n_layers
        cfg["cut_layer"] = int(r.integers(1, n_layers))
    return cfg


def test_draws_cover_every_field():
    assert sorted(DRAWS) == sorted(FIELDS)


_FIELD_IN_MESSAGE = re.compile(r"EarlyExitUploadConfig\.(\w+)=")


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(seed=st.integers(0, 2**63 - 1))
def test_whole_config_space(seed: int) -> None:
    r = np.random.default_rng(seed)
    cfg = draw_config(r)
    note(f"config={cfg!r}")
    COUNTS["drawn"] += 1
    try:
        config = EarlyExitUploadConfig.from_dict(cfg)
    except ConfigError as exc:
        COUNTS["rejected"] += 1
        match = _FIELD_IN_MESSAGE.search(str(exc))
        assert match and match.group(1) in FIELDS, str(exc)
        COUNTS[f"rejected:{match.group(1)}"] += 1
        return
    COUNTS["accepted"] += 1
    env = EarlyExitUploadEnv(config)
    obs, info = env.reset(seed=seed % 2**32)
    assert np.all(np.isfinite(obs)) and env.observation_space.contains(obs)
    for _ in range(min(config.tokens, 40)):
        obs, reward, term, trunc, info = env.step(int(r.integers(env.action_space.n)))
        assert np.all(np.isfinite(obs)) and env.observation_space.contains(obs)
        assert np.isfinite(reward)
        for key, value in info.items():
            if key != "action_mask":
                assert np.isfinite(value), (key, value)
        if term or trunc:
            break


def teardown_module() -> None:
    print(f"\nEarlyExitUpload config space: {dict(COUNTS)}")
