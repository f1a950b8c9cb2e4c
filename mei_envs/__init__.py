"""mei-envs: Gymnasium environments for mobile edge intelligence for LLMs.

Importing this package registers every environment under the ``mei_envs/`` namespace.
It needs gymnasium and numpy only (no torch).
"""

from __future__ import annotations

from mei_envs.registration import ENV_IDS, register_envs

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "register_envs", "__version__"]

register_envs()
