"""One shard: BatchGameService over the shard's GamePools (servicer.py, games.py), open-seat
play (seats.py), seats the shard plays itself (roles.py), delta views, and the server process."""
