"""Analytic policies and oracles for every mei-envs environment, behind one registry."""

from __future__ import annotations

from mei_envs.baselines.registry import (
    Policy,
    PolicySpec,
    get_policy_spec,
    list_policies,
    make_policy,
    register_policy,
)

__all__ = [
    "Policy",
    "PolicySpec",
    "get_policy_spec",
    "list_policies",
    "make_policy",
    "register_policy",
]
