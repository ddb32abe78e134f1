"""Fencing: the Lua that lets a shard write only while it holds its slot, and the fleet's generation.

Every write of a shard's games (a log entry, a record's deletion) runs as one script that first
checks `holder:<shard>` against the writing process's token: Redis runs a script atomically, so
no write lands after another shard fenced this one (set the key to "fenced by ..." before taking
its games over). Records, megabytes a round, go in a transaction that WATCHes the holder instead
(store.put_games: the same guarantee without copying them through Lua). A write that finds the
key missing is refused too: Redis lost its data (or the fence expired), and only the generation
check (registry.py) may take the slot back.

`generation` (HASH id, started, lost) changes only when Redis loses the fleet's data: shards
remember its id, a shard that finds another id (or none) re-records its games, and nobody
fails a shard over until a generation is `dead_after` old (every live shard has heartbeat in it).
"""

from __future__ import annotations

FENCED = "FENCED"  # the reply's first word when another shard took this shard's games
NO_HOLDER = "NOHOLDER"  # the reply's first word when nobody holds the slot (Redis lost it)

_CHECK = """
local held = redis.call('GET', KEYS[1])
if not held then return redis.error_reply('NOHOLDER no holder of this shard in Redis') end
if held ~= ARGV[1] then return redis.error_reply('FENCED ' .. held) end
"""


# KEYS: holder, log. ARGV: token, ttl, then the entry's field/value pairs. Returns the entry id.
LOG_APPEND = (
    _CHECK
    + """
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return id
"""
)

# KEYS: holder, snap:<k1> .. snap:<kn>. ARGV: token, then (field count, fields...) per snap key.
DROP_RECORDS = (
    _CHECK
    + """
local at = 2
for i = 2, #KEYS do
  local count = tonumber(ARGV[at])
  for from = at + 1, at + count, 1000 do
    redis.call('HDEL', KEYS[i], unpack(ARGV, from, math.min(from + 999, at + count)))
  end
  at = at + count + 1
end
return #KEYS - 1
"""
)

# KEYS: holder. ARGV: token, ttl. Take the slot back after Redis lost it: only where nobody holds
# it (a fence, even an old one, stays). Returns 1 when taken.
RECLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return redis.call('GET', KEYS[1]) == ARGV[1] and 1 or 0
"""

# KEYS: generation. ARGV: a fresh id, "1" when the caller knew an earlier generation (Redis lost
# the fleet's data), ttl. Returns {id, started, lost, now}: started/now in Redis time (seconds).
GENERATION = """
local t = redis.call('TIME')
local now = t[1] + t[2] / 1e6
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'started', tostring(now), 'lost', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local g = redis.call('HMGET', KEYS[1], 'id', 'started', 'lost')
return {g[1], g[2], g[3], tostring(now)}
"""
