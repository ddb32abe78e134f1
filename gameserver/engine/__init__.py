"""The generals.io rules as numba kernels over batches of games. Pure: no I/O, no gRPC.

The plain types (GameConfig, GameBatch, Observation, EngineStep) and the checks load at once;
the kernel functions (step, observe, generate, action_masks) load numba on first use, so the
client SDK and the wire codec import this package without compiling or loading any kernel.
"""

from typing import Any

from .buffers import EngineStep, Observation
from .checks import check_actions, check_slots, mask_bytes
from .config import GameConfig
from .state import GameBatch

_KERNEL_FUNCTIONS = ("action_masks", "generate", "observe", "step")

__all__ = [
    "EngineStep",
    "GameBatch",
    "GameConfig",
    "Observation",
    "action_masks",
    "check_actions",
    "check_slots",
    "generate",
    "mask_bytes",
    "observe",
    "step",
]


def __getattr__(name: str) -> Any:
    """The kernel functions, imported from api.py (and numba with them) when first asked for."""
    if name in _KERNEL_FUNCTIONS:
        from . import api

        globals().update({n: getattr(api, n) for n in _KERNEL_FUNCTIONS})  # later lookups: plain
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
