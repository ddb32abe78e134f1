"""Gymnasium and PettingZoo adapters over games in process (LocalBackend) or on a fleet
(RemoteBackend). Importing the package registers `ENV_ID` with Gymnasium; RemoteBackend (and
gRPC with it) loads on first use, so in-process training never imports the client."""

from typing import Any

from .adapters import ENV_ID, Backend, GeneralsEnv, GeneralsParallelEnv, GeneralsVectorEnv, LocalBackend

__all__ = [
    "ENV_ID",
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
