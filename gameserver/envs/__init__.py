"""Gymnasium and PettingZoo adapters over games in process or on a fleet (RemoteBackend)."""

from .adapters import ENV_ID, Backend, GeneralsEnv, GeneralsParallelEnv, GeneralsVectorEnv, LocalBackend
from .remote import RemoteBackend

__all__ = [
    "ENV_ID",
    "Backend",
    "GeneralsEnv",
    "GeneralsParallelEnv",
    "GeneralsVectorEnv",
    "LocalBackend",
    "RemoteBackend",
]
