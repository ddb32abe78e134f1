"""Consistent-hash placement of games on shards, shared by the router, the client and the operator.

A game id carries its placement: the high 32 bits are the hash of the placement key that
its CreateBatchGames call used (all games of one call share it), the low 32 bits tell the
games of that key apart (a shard starts each create's run of them at random:
pool.UnguessableIds). Anyone holding the ring can therefore route an id without asking
anyone, and when the ring changes (a shard joins or dies) the same arithmetic says where each
game lives now. Virtual nodes spread each shard over the ring so that adding or
removing one of N shards moves about 1/N of the keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

DEFAULT_VIRTUAL_NODES = 160
_MASK32 = np.uint64(0xFFFFFFFF)


def placement_hash(key: str) -> int:
    """Stable 32-bit hash of a placement key (blake2b: identical in every process and language)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")


def make_game_ids(key_hash: int, local_ids: np.ndarray) -> np.ndarray:
    """Game ids for games of one placement key: key hash in the high half, local id in the low half."""
    return (np.uint64(key_hash) << np.uint64(32)) | (np.asarray(local_ids, np.uint64) & _MASK32)


def key_hashes(game_ids: np.ndarray) -> np.ndarray:
    return np.asarray(game_ids, np.uint64) >> np.uint64(32)


def _ring_position(hashes32: np.ndarray) -> np.ndarray:
    """Spread 32-bit key hashes over the 64-bit ring (splitmix64 finaliser, vectorised)."""
    z = np.asarray(hashes32, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _node_position(shard: str, replica: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{shard}#{replica}".encode(), digest_size=8).digest(), "little")


class HashRing:
    """Shards on a hash ring with virtual nodes; lookups are vectorised (one searchsorted per batch)."""

    def __init__(self, shards: Sequence[str], virtual_nodes: int = DEFAULT_VIRTUAL_NODES) -> None:
        if not shards:
            raise ValueError("a hash ring needs at least one shard")
        if len(set(shards)) != len(shards):
            raise ValueError(f"shard names must be distinct: {list(shards)}")
        if virtual_nodes < 1:
            raise ValueError(f"virtual_nodes must be >= 1, got {virtual_nodes}")
        self.shards: tuple[str, ...] = tuple(shards)
        self.virtual_nodes = virtual_nodes
        positions = np.array(
            [_node_position(s, r) for s in self.shards for r in range(virtual_nodes)], dtype=np.uint64
        )
        owners = np.repeat(np.arange(len(self.shards), dtype=np.int32), virtual_nodes)
        order = np.argsort(positions, kind="stable")
        self._positions = positions[order]
        self._owners = owners[order]

    def shard_index_of_hashes(self, hashes32: np.ndarray) -> np.ndarray:
        """Index into `shards` of the owner of each 32-bit key hash: the first node clockwise."""
        at = np.searchsorted(self._positions, _ring_position(hashes32), side="left")
        return self._owners[at % self._positions.size]

    def shard_index_of_games(self, game_ids: np.ndarray) -> np.ndarray:
        return self.shard_index_of_hashes(key_hashes(game_ids))

    def shard_of_key(self, key: str) -> str:
        return self.shards[int(self.shard_index_of_hashes(np.array([placement_hash(key)]))[0])]

    def with_shards(self, shards: Sequence[str]) -> HashRing:
        """The ring for a new topology (same virtual node count)."""
        return HashRing(shards, self.virtual_nodes)

    def __repr__(self) -> str:
        return f"HashRing({list(self.shards)!r}, virtual_nodes={self.virtual_nodes})"
