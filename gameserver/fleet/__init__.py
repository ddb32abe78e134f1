"""Fleet state in Redis: the shard registry (registry.py, no engine: the operator uses it),
game records and the action log (store.py, records.py), durability strategies that wrap a
GamePool (durability.py), recovery, a shard's membership and the moves of games between shards."""
