"""PettingZoo's usual names for GameFleet's game, as PettingZoo's own environments expose them
(`from pettingzoo.butterfly import pistonball_v6`): `parallel_env()`, `env()`, `raw_env()`.

    from gameserver.envs import generals_v0
    env = generals_v0.parallel_env(obs_format="generals")   # every seat an agent

`parallel_env(**kwargs)` is `GeneralsParallelEnv(**kwargs)` (config, obs_format, action_format,
pad_to, backend); `raw_env` the same game as an AEC env (`parallel_to_aec`), and `env` that
wrapped in PettingZoo's order-enforcing wrapper.
"""

from __future__ import annotations

from typing import Any

from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec

from .adapters import GeneralsParallelEnv

__all__ = ["env", "parallel_env", "raw_env"]


def parallel_env(**kwargs: Any) -> GeneralsParallelEnv:
    """One game, every seat an agent (PettingZoo Parallel API)."""
    return GeneralsParallelEnv(**kwargs)


def raw_env(**kwargs: Any) -> Any:
    """The same game as a PettingZoo AEC env: agents act in turn, the game steps once all have."""
    return parallel_to_aec(parallel_env(**kwargs))


def env(**kwargs: Any) -> Any:
    """`raw_env` behind PettingZoo's OrderEnforcingWrapper (what its own `env()` functions return)."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))
