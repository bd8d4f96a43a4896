"""The Lua script that writes one entity's state atomically, with the last applied offsets.

It touches each key on its own, so exactly-once needs no cross-key
transaction and works unchanged on Redis Cluster.
"""

from __future__ import annotations

# Many entities per call (KEYS[1..n]), each compared-and-set on its own.
# ARGV[1]: expiry in ms; ARGV[2]: the version to store (a token unique to the writer and the write);
# then per key: expected version ('' when the key did not exist), new encoded state, number of
# offset pairs, then pairs of offset field, offset.
# Returns per key 1 when written, 0 when someone else wrote first (the caller re-reads and retries).
STATE_CAS = """
local expiry, version = ARGV[1], ARGV[2]
local out = {}
local i = 3
for k = 1, #KEYS do
  local key = KEYS[k]
  local expected = ARGV[i]
  local fields = {'s', ARGV[i + 1], 'v', version}
  local first_pair = i + 3
  i = first_pair + 2 * tonumber(ARGV[i + 2])
  if (redis.call('HGET', key, 'v') or '') == expected then
    for j = first_pair, i - 1 do fields[#fields + 1] = ARGV[j] end
    redis.call('HSET', key, unpack(fields))
    redis.call('PEXPIRE', key, expiry)
    out[k] = 1
  else
    out[k] = 0
  end
end
return out
"""
