"""Lua scripts that update one entity's state atomically, fenced by the last applied offset.

Each script touches a single key, so exactly-once needs no cross-key
transaction and works unchanged on Redis Cluster.
"""

from __future__ import annotations

# Many entities per call (KEYS[1..n]); each key is updated atomically on its own, so callers
# may group keys freely on one Redis and by hash slot on Redis Cluster.
# ARGV[1]: expiry in ms; ARGV[2]: how far a key's newest event time must advance before its old
# tiles are dropped again; ARGV[3]: MessagePack map `column|slide` -> [span, slide, field suffixes]:
# a tile starting at or before newest event time minus span (retention + slide, ms) is dropped, and
# its fields are `column|slide|start|suffix`; ARGV[4]: MessagePack (one blob: packing is far
# cheaper than thousands of arguments), a list with per key, in KEYS order, one flat list (unpacking
# builds a Lua table per list: nested lists would cost one per op, and most of the script's time)
# [newest event time, number of segments, segment, segment, ...]; a segment, one per source
# partition, is offset field, first offset, last offset, the number of elements of its ops, ops.
# An op is i|f, field, delta (integer / float add; a float delta is a MessagePack double, exact),
# <|>, field, value (keep min / max; the value as a string, written as given) or
# l, field, value, keyfield, orderkey (keep the value with the greatest fixed-width order key).
# Returns per key a list of per-segment statuses: 0 applied, 1 already applied (skipped),
# 2 partly applied (the caller resends that segment event by event).
# Each redis.call costs more than the Lua around it, so a key costs one HMGET and one HSET (sums
# are added here, in doubles as Python adds them, written back in the shortest exact decimal), plus
# HDEL and PEXPIRE when it is due for pruning. Pruning deletes by name the tiles that left their
# window since the key's last pruning (event time `_p`): no scan of the hash. A scan (HKEYS and a
# match per field) runs at a key's first pruning, when more tiles may have left than the hash holds
# fields (a long gap, or a big batch of history), and once per longest span of event time: it also
# catches a tile written below an earlier pruning's bound, which only a lagging partition can leave.
TILE_MERGE = """
local expiry = ARGV[1]
local prune_every = tonumber(ARGV[2])
local keep = cmsgpack.unpack(ARGV[3])
local updates = cmsgpack.unpack(ARGV[4])
local format, tonumber, match, floor = string.format, tonumber, string.match, math.floor
local longest = 0
for _, spec in pairs(keep) do if spec[1] > longest then longest = spec[1] end end
local function decimal(x)
  local text = format('%.15g', x)
  if tonumber(text) ~= x then text = format('%.17g', x) end
  return text
end
local out = {}
for k = 1, #KEYS do
  local key = KEYS[k]
  local update = updates[k]
  local newest = update[1]
  -- One read for the fences, the prune mark and every value an op adds to or compares with.
  local fields = {'_p'}
  local starts = {}
  local p = 3
  for s = 1, update[2] do
    starts[s] = p
    fields[#fields + 1] = update[p]
    local stop = p + 4 + update[p + 3]
    p = p + 4
    while p < stop do
      fields[#fields + 1] = update[p + 1]
      if update[p] == 'l' then
        fields[#fields + 1] = update[p + 3]
        p = p + 5
      else
        p = p + 3
      end
    end
  end
  local read = redis.call('HMGET', key, unpack(fields))
  local current = {}
  for j, field in ipairs(fields) do current[field] = read[j] end
  local changed = {}
  local statuses = {}
  for s, start in ipairs(starts) do
    local ofield = update[start]
    local stored = tonumber(current[ofield] or '-1')
    local status = 0
    if stored >= update[start + 2] then status = 1 elseif stored >= update[start + 1] then status = 2 end
    if status == 0 then
      local p, stop = start + 4, start + 4 + update[start + 3]
      while p < stop do
        local kind, field, value = update[p], update[p + 1], update[p + 2]
        if kind == 'i' then
          current[field] = format('%d', (tonumber(current[field]) or 0) + value)
          changed[field] = true
        elseif kind == 'f' then
          current[field] = decimal((tonumber(current[field]) or 0) + value)
          changed[field] = true
        elseif kind == 'l' then
          local keyfield, order = update[p + 3], update[p + 4]
          local old = current[keyfield]
          if (not old) or old < order then
            current[field] = value; current[keyfield] = order
            changed[field] = true; changed[keyfield] = true
          end
          p = p + 2
        else
          local old = current[field]
          if (not old) or (kind == '<' and tonumber(value) < tonumber(old))
              or (kind == '>' and tonumber(value) > tonumber(old)) then
            current[field] = value
            changed[field] = true
          end
        end
        p = p + 3
      end
      current[ofield] = update[start + 2]
      changed[ofield] = true
    end
    statuses[s] = status
  end
  -- Old tiles go, and the expiry is renewed, each time the newest event time moves on by prune_every.
  local previous = tonumber(current['_p'] or '')
  local prune = newest > (previous or -1) + prune_every
  if prune then
    current['_p'] = newest
    changed['_p'] = true
  end
  local writes = {}
  for field in pairs(changed) do
    writes[#writes + 1] = field
    writes[#writes + 1] = current[field]
  end
  if #writes > 0 then redis.call('HSET', key, unpack(writes)) end
  if prune then
    local drop = {}
    local function gone(field)
      drop[#drop + 1] = field
      if #drop >= 4000 then redis.call('HDEL', key, unpack(drop)); drop = {} end
    end
    local by_name = previous ~= nil and floor(previous / longest) == floor(newest / longest)
    if by_name then  -- naming costs a field per tile that may have left; a scan, one per field held
      local names = 0
      for _, spec in pairs(keep) do names = names + (floor((newest - previous) / spec[2]) + 1) * #spec[3] end
      by_name = names <= redis.call('HLEN', key)
    end
    if by_name then
      for series, spec in pairs(keep) do
        local span, slide, suffixes = spec[1], spec[2], spec[3]
        local start = previous - span
        start = start - start % slide + slide
        while start <= newest - span do
          local prefix = series .. '|' .. format('%d', start) .. '|'
          for _, suffix in ipairs(suffixes) do gone(prefix .. suffix) end
          start = start + slide
        end
      end
    else
      for _, field in ipairs(redis.call('HKEYS', key)) do
        local series, start = match(field, '^([^|]*|%d+)|(%-?%d+)|')
        local spec = series and keep[series]
        if spec and tonumber(start) <= newest - spec[1] then gone(field) end
      end
    end
    if #drop > 0 then redis.call('HDEL', key, unpack(drop)) end
    redis.call('PEXPIRE', key, expiry)
  end
  out[k] = statuses
end
return out
"""

# Many entities per call (KEYS[1..n]), each compared-and-set on its own.
# ARGV[1]: expiry in ms; then per key: expected version ('' when the key did not exist), the
# version to store (a token unique to the writer and the write), new encoded state, number of
# offset pairs, then pairs of offset field, offset.
# Returns per key 1 when written, 0 when someone else wrote first (the caller re-reads and retries).
SESSION_CAS = """
local out = {}
local i = 2
for k = 1, #KEYS do
  local key = KEYS[k]
  local expected = ARGV[i]
  local npairs = tonumber(ARGV[i + 3])
  local first_pair = i + 4
  local fields = {'s', ARGV[i + 2], 'v', ARGV[i + 1]}
  i = first_pair + 2 * npairs
  if (redis.call('HGET', key, 'v') or '') == expected then
    for j = first_pair, i - 1 do fields[#fields + 1] = ARGV[j] end
    redis.call('HSET', key, unpack(fields))
    redis.call('PEXPIRE', key, ARGV[1])
    out[k] = 1
  else
    out[k] = 0
  end
end
return out
"""
