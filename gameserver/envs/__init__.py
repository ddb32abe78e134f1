"""Gymnasium and PettingZoo adapters over games in process (LocalBackend) or on a fleet
(RemoteBackend). Importing the package registers `ENV_ID` with Gymnasium; `MAKE_ID` names the
module too, so `gymnasium.make(MAKE_ID)` works in a process that imported only gymnasium
(Gymnasium 1.x loads no plugins by entry point). PettingZoo's usual names live in
`gameserver.envs.generals_v0` (`parallel_env()`, `env()`, `raw_env()`). RemoteBackend (and gRPC
with it) loads on first use, so in-process training never imports the client."""

from typing import Any

from .adapters import ENV_ID, Backend, GeneralsEnv, GeneralsParallelEnv, GeneralsVectorEnv, LocalBackend

MAKE_ID = f"{__name__}:{ENV_ID}"  # "gameserver.envs:GameFleet/Generals-v0": imports this package first

__all__ = [
    "ENV_ID",
    "MAKE_ID",
    "Backend",
    "GeneralsEnv",
    "GeneralsParallelEnv",
    "GeneralsVectorEnv",
    "LocalBackend",
    "RemoteBackend",
]


def __getattr__(name: str) -> Any:
    """RemoteBackend, imported from remote.py (with the client SDK and gRPC) when first asked for."""
    if name == "RemoteBackend":
        from .remote import RemoteBackend

        return RemoteBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
