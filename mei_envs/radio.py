"""UE radio power: named, sourced power profiles and broadcastable energy functions.

A :class:`RadioProfile` is the power model of a UE modem in the form of Huang et al.
(MobiSys 2012): while sending, the power is linear in the uplink rate,
``P = alpha_u * rate + beta``; after a burst the modem stays in a high-power **tail**
(``tail_power_w`` for ``tail_s``, the inactivity timer); afterwards it sleeps (DRX / RRC
idle, ``sleep_power_w``), and leaving sleep costs a **wake-up** (promotion) of ``wake_s`` at
``wake_power_w``. The tail is why batching uploads saves energy.

The energy functions below are written with arithmetic only, so the same code evaluates
Python scalars in an env's ``step``, broadcast numpy arrays in a dynamic program and batches
in a vector env. Each takes ``p``, any object with the profile's attribute names: a
:class:`RadioProfile` or an env config that carries the same flat fields.

Presets (``PROFILES``, select by name with :func:`get_profile`):

* ``"nr_drx"``: an NR-style profile with a short DRX inactivity timer (3GPP TS 38.321
  section 5.7, ``drx-InactivityTimer``) and the relative sleep powers of the 3GPP TR 38.840
  UE power model; the transmit-power line is Huang et al.'s LTE fit. It is exactly
  EarlyExitUpload-v0's radio.
* ``"lte_huang2012"``: LTE as measured by Huang et al. 2012 (REFERENCE.md section 7): the
  RRC_CONNECTED tail of 11.576 s at ~1.06 W and a ~260 ms promotion at ~1.21 W.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

__all__ = [
    "PROFILES",
    "RadioParams",
    "RadioProfile",
    "background_power_w",
    "get_profile",
    "list_profiles",
    "transmit_energy_j",
    "transmit_power_w",
    "wake_energy_j",
]

# Huang et al., "A Close Examination of Performance and Power Characteristics of 4G LTE
# Networks", MobiSys 2012: uplink power P = alpha_u * throughput + beta (REFERENCE.md 7 [S]).
HUANG_ALPHA_U_W_PER_MBPS = 0.43839  # [W/Mbps]
HUANG_BETA_W = 1.288  # [W]
HUANG_TAIL_S = 11.576  # [s] RRC_CONNECTED inactivity tail (REFERENCE.md 7 [S])
HUANG_TAIL_POWER_W = 1.060  # [W] high-power tail after a burst (REFERENCE.md 7 [U])
HUANG_PROMOTION_S = 0.260  # [s] RRC_IDLE -> RRC_CONNECTED promotion (REFERENCE.md 7 [U])
HUANG_PROMOTION_POWER_W = 1.2107  # [W] during promotion (REFERENCE.md 7 [U])


class RadioParams(Protocol):
    """What the energy functions read (a :class:`RadioProfile` or an env config)."""

    alpha_u_w_per_mbps: float
    beta_w: float
    tail_s: float
    tail_power_w: float
    sleep_power_w: float
    wake_s: float
    wake_power_w: float


@dataclasses.dataclass(frozen=True)
class RadioProfile:
    """Power model of a UE modem (units in the field names).

    Attributes:
        name: preset name.
        alpha_u_w_per_mbps: transmit power slope in the uplink rate [W/Mbps].
        beta_w: transmit power at zero rate [W].
        tail_s: high-power tail after a burst (inactivity timer) [s].
        tail_power_w: power during the tail [W].
        sleep_power_w: power asleep (DRX sleep / RRC idle) [W].
        wake_s: time to leave sleep (scheduling request + grant, or RRC promotion) [s].
        wake_power_w: power while waking [W].
        source: where the figures come from, and which are unverified.
    """

    name: str
    alpha_u_w_per_mbps: float
    beta_w: float
    tail_s: float
    tail_power_w: float
    sleep_power_w: float
    wake_s: float
    wake_power_w: float
    source: str = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name in ("name", "source"):
                continue
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0.0:
                raise ValueError(f"RadioProfile({self.name!r}).{f.name}={v!r}: must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The power fields (no name/source), as an env config's flat fields."""
        out = dataclasses.asdict(self)
        del out["name"], out["source"]
        return out


PROFILES: dict[str, RadioProfile] = {
    "nr_drx": RadioProfile(
        name="nr_drx",
        alpha_u_w_per_mbps=HUANG_ALPHA_U_W_PER_MBPS,
        beta_w=HUANG_BETA_W,
        # drx-InactivityTimer (3GPP TS 38.321 5.7; RRC allows up to 2.56 s): 100 ms of
        # PDCCH monitoring after a burst before DRX sleep. [U: a typical value, not a
        # measurement; Huang's T_i plays this role in LTE]
        tail_s=0.1,
        tail_power_w=HUANG_TAIL_POWER_W,
        # DRX sleep: tail power x 20/100, the TR 38.840 ratio of light sleep (20) to
        # PDCCH-only monitoring (100) in its relative-power UE model.
        sleep_power_w=0.212,
        # Scheduling request + grant to leave DRX sleep [U: order of a few slots].
        wake_s=0.01,
        wake_power_w=HUANG_PROMOTION_POWER_W,
        source=(
            "3GPP TS 38.321 (DRX), 3GPP TR 38.840 (relative UE power: light sleep 20 vs "
            "PDCCH-only 100); transmit line, tail and wake powers from Huang et al. MobiSys "
            "2012; tail_s and wake_s are typical values [U]"
        ),
    ),
    "lte_huang2012": RadioProfile(
        name="lte_huang2012",
        alpha_u_w_per_mbps=HUANG_ALPHA_U_W_PER_MBPS,
        beta_w=HUANG_BETA_W,
        tail_s=HUANG_TAIL_S,
        tail_power_w=HUANG_TAIL_POWER_W,
        # RRC_IDLE with paging DRX: a few tens of mW on average. [U: Huang et al.'s idle
        # figures were not read in the primary text; 31.1 mW is their idle-state average as
        # quoted secondhand. The idle power only matters before the first burst.]
        sleep_power_w=0.0311,
        wake_s=HUANG_PROMOTION_S,
        wake_power_w=HUANG_PROMOTION_POWER_W,
        source=(
            "Huang et al., MobiSys 2012 (4G LTE power model): alpha_u, beta and the 11.576 s "
            "tail [S]; tail power 1.06 W, promotion 260 ms at 1.21 W and idle power [U]"
        ),
    ),
}


def list_profiles() -> list[str]:
    """Names of the radio presets."""
    return list(PROFILES)


def get_profile(name: str) -> RadioProfile:
    """A radio preset by name.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in PROFILES:
        raise ValueError(f"radio profile {name!r}: unknown; known: {list(PROFILES)}")
    return PROFILES[name]


# ---- energy (broadcastable: scalars or numpy arrays) ------------------------------------
def transmit_power_w(p: RadioParams, rate_bps: Any) -> Any:
    """Power while sending at ``rate_bps``: ``alpha_u * rate[Mbps] + beta`` [W]."""
    return p.alpha_u_w_per_mbps * rate_bps * 1e-6 + p.beta_w


def transmit_energy_j(p: RadioParams, rate_bps: Any, airtime_s: Any) -> Any:
    """Energy of sending for ``airtime_s`` at ``rate_bps`` [J]."""
    return (p.alpha_u_w_per_mbps * rate_bps * 1e-6 + p.beta_w) * airtime_s


def background_power_w(p: RadioParams, asleep: Any) -> Any:
    """Power when not sending: sleep power if ``asleep`` (0/1 or bool), else tail power [W]."""
    return asleep * p.sleep_power_w + (1 - asleep) * p.tail_power_w


def wake_energy_j(p: RadioParams, wake: Any) -> Any:
    """Energy of ``wake`` (0/1 or a count of) wake-ups [J]."""
    return wake * p.wake_s * p.wake_power_w
