"""The generals.io rules as numba kernels over batches of games. Pure: no I/O, no gRPC."""

from .api import action_masks, check_slots, generate, mask_bytes, observe, step
from .buffers import Observation, StepResult
from .config import GameConfig
from .state import GameBatch

__all__ = [
    "GameBatch",
    "GameConfig",
    "Observation",
    "StepResult",
    "action_masks",
    "check_slots",
    "generate",
    "mask_bytes",
    "observe",
    "step",
]
