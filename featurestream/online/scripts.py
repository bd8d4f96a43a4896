"""Lua scripts that update one entity's state atomically, fenced by the last applied offset.

Each script touches a single key, so exactly-once needs no cross-key
transaction and works unchanged on Redis Cluster.
"""

from __future__ import annotations

# KEYS[1]: the state hash.
# ARGV[1]: expiry in ms; ARGV[2]: retention cutoff (tiles ending at or before it are dropped);
# ARGV[3]: how far the cutoff must advance before the hash is scanned again.
# Then segments, one per source partition:
#   offset field, first offset, last offset, number of ops, ops...
# An op is `i|f field delta` (integer / float add), `< field v` / `> field v` (keep min / max),
# or `l field value keyfield orderkey` (keep the value with the greatest fixed-width order key).
# Returns one status per segment: 0 applied, 1 already applied (skipped), 2 partly applied
# (the caller resends that segment event by event).
TILE_MERGE = """
local key = KEYS[1]
local statuses = {}
local i = 4
while i <= #ARGV do
  local ofield = ARGV[i]
  local first = tonumber(ARGV[i + 1])
  local last = tonumber(ARGV[i + 2])
  local nops = tonumber(ARGV[i + 3])
  i = i + 4
  local stored = tonumber(redis.call('HGET', key, ofield) or '-1')
  local status = 0
  if stored >= last then status = 1 elseif stored >= first then status = 2 end
  for _ = 1, nops do
    local op = ARGV[i]
    if op == 'l' then
      if status == 0 then
        local old = redis.call('HGET', key, ARGV[i + 3])
        if (not old) or old < ARGV[i + 4] then
          redis.call('HSET', key, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
        end
      end
      i = i + 5
    else
      if status == 0 then
        local field = ARGV[i + 1]
        local value = ARGV[i + 2]
        if op == 'i' then
          redis.call('HINCRBY', key, field, value)
        elseif op == 'f' then
          redis.call('HINCRBYFLOAT', key, field, value)
        else
          local old = redis.call('HGET', key, field)
          if (not old) or (op == '<' and tonumber(value) < tonumber(old))
              or (op == '>' and tonumber(value) > tonumber(old)) then
            redis.call('HSET', key, field, value)
          end
        end
      end
      i = i + 3
    end
  end
  if status == 0 then redis.call('HSET', key, ofield, last) end
  statuses[#statuses + 1] = status
end
local cutoff = tonumber(ARGV[2])
local pruned = tonumber(redis.call('HGET', key, '_p') or '-1')
if cutoff > pruned + tonumber(ARGV[3]) then
  local drop = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    local slide, start = string.match(field, '^[^|]*|(%d+)|(%-?%d+)|')
    if slide and tonumber(start) + tonumber(slide) <= cutoff then drop[#drop + 1] = field end
    if #drop >= 4000 then redis.call('HDEL', key, unpack(drop)); drop = {} end
  end
  if #drop > 0 then redis.call('HDEL', key, unpack(drop)) end
  redis.call('HSET', key, '_p', cutoff)
end
redis.call('PEXPIRE', key, ARGV[1])
return statuses
"""

# KEYS[1]: the session hash. ARGV[1]: expected version ('' when the key did not exist);
# ARGV[2]: new encoded state; ARGV[3]: expiry in ms; then pairs of offset field, offset.
# Returns 1 when written, 0 when someone else wrote first (the caller re-reads and retries).
SESSION_CAS = """
local key = KEYS[1]
local version = redis.call('HGET', key, 'v') or ''
if version ~= ARGV[1] then return 0 end
redis.call('HSET', key, 's', ARGV[2])
redis.call('HINCRBY', key, 'v', 1)
for i = 4, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', key, ARGV[3])
return 1
"""
