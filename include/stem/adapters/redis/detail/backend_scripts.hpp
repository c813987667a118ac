// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// detail/backend_scripts.hpp — the Lua scripts of redis_backend.
//
// Keys (P is "{namespace}"):
//   P:s:<task id>     hash {s: state, n: task name, d: status JSON}, expires with its TTL
//   P:idx:<state>     sorted set of task ids in that state, scored by update time (ms)
//   P:idx:all         the same for every state
//   P:exp             sorted set of task ids scored by expiry (ms): what list/count prune
//   P:c:<task id>     pub/sub channel: every status written for the task (JSON)
//   P:g:<group id>    hash {ids, meta, created, claimed, n, r:<task id> -> status JSON}
//   P:hb:<worker id>  heartbeat JSON, expires with its TTL
//   P:workers         sorted set of worker ids scored by heartbeat expiry (ms)
// ARGV[1] is P and ARGV[2] the current time in ms in every script.
#pragma once

#include <string_view>

namespace stem::redis::detail::backend_lua {

inline constexpr std::string_view prelude = R"lua(
local P, now = ARGV[1], tonumber(ARGV[2])
local states = {'queued', 'running', 'retried', 'succeeded', 'failed', 'cancelled'}
-- Drops index entries of statuses that have expired (at most `max` of them).
local function prune(max)
  local gone = redis.call('ZRANGEBYSCORE', P .. ':exp', '-inf', now, 'LIMIT', 0, max)
  for _, id in ipairs(gone) do
    for _, st in ipairs(states) do redis.call('ZREM', P .. ':idx:' .. st, id) end
    redis.call('ZREM', P .. ':idx:all', id)
    redis.call('ZREM', P .. ':exp', id)
  end
  return #gone
end
)lua";

/// set: (id, state, name, JSON, ttl ms, updated ms) per status, in order.
inline constexpr std::string_view set = R"lua(
for i = 3, #ARGV, 6 do
  local id, st, ttl = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 4])
  local k = P .. ':s:' .. id
  local old = redis.call('HGET', k, 's')
  if old and old ~= st then redis.call('ZREM', P .. ':idx:' .. old, id) end
  redis.call('HSET', k, 's', st, 'n', ARGV[i + 2], 'd', ARGV[i + 3])
  redis.call('PEXPIRE', k, ttl)
  redis.call('ZADD', P .. ':idx:' .. st, ARGV[i + 5], id)
  redis.call('ZADD', P .. ':idx:all', ARGV[i + 5], id)
  redis.call('ZADD', P .. ':exp', now + ttl, id)
  redis.call('PUBLISH', P .. ':c:' .. id, ARGV[i + 3])
end
return 1
)lua";

/// list: ARGV[3] state ('' = any), ARGV[4] name ('' = any), ARGV[5] offset, ARGV[6] limit.
/// Returns status JSON documents, oldest update first.
inline constexpr std::string_view list = R"lua(
while prune(1000) == 1000 do end
local idx = P .. ':idx:' .. (ARGV[3] == '' and 'all' or ARGV[3])
local name, skip, limit = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local out, start = {}, 0
while #out < limit do
  local ids = redis.call('ZRANGE', idx, start, start + 499)
  if #ids == 0 then break end
  start = start + #ids
  for _, id in ipairs(ids) do
    local rec = redis.call('HMGET', P .. ':s:' .. id, 'n', 'd')
    if rec[2] and (name == '' or rec[1] == name) then
      if skip > 0 then skip = skip - 1
      elseif #out < limit then out[#out + 1] = rec[2] end
    end
  end
end
return out
)lua";

/// count: ARGV[3] state ('' = any).
inline constexpr std::string_view count = R"lua(
while prune(1000) == 1000 do end
return redis.call('ZCARD', P .. ':idx:' .. (ARGV[3] == '' and 'all' or ARGV[3]))
)lua";

/// group_init: ARGV[3] id, ARGV[4] ids JSON, ARGV[5] meta JSON, ARGV[6] ttl ms.
inline constexpr std::string_view group_init = R"lua(
local k = P .. ':g:' .. ARGV[3]
redis.call('DEL', k)
redis.call('HSET', k, 'ids', ARGV[4], 'meta', ARGV[5], 'created', now, 'claimed', 0, 'n', 0)
redis.call('PEXPIRE', k, ARGV[6])
return 1
)lua";

/// group_add: ARGV[3] group id, ARGV[4] task id, ARGV[5] status JSON. Returns how many
/// distinct children have finished, or -1 when the group does not exist.
inline constexpr std::string_view group_add = R"lua(
local k = P .. ':g:' .. ARGV[3]
if redis.call('EXISTS', k) == 0 then return -1 end
if redis.call('HSET', k, 'r:' .. ARGV[4], ARGV[5]) == 1 then return redis.call('HINCRBY', k, 'n', 1) end
return tonumber(redis.call('HGET', k, 'n'))
)lua";

/// group_claim: ARGV[3] group id. 1 exactly once per initialisation.
inline constexpr std::string_view group_claim = R"lua(
local k = P .. ':g:' .. ARGV[3]
if redis.call('HGET', k, 'claimed') ~= '0' then return 0 end
redis.call('HSET', k, 'claimed', 1)
return 1
)lua";

/// heartbeat: ARGV[3] worker id, ARGV[4] JSON, ARGV[5] ttl ms.
inline constexpr std::string_view heartbeat = R"lua(
redis.call('SET', P .. ':hb:' .. ARGV[3], ARGV[4], 'PX', ARGV[5])
redis.call('ZADD', P .. ':workers', now + tonumber(ARGV[5]), ARGV[3])
return 1
)lua";

/// heartbeats: every live heartbeat's JSON.
inline constexpr std::string_view heartbeats = R"lua(
redis.call('ZREMRANGEBYSCORE', P .. ':workers', '-inf', now)
local out = {}
for _, w in ipairs(redis.call('ZRANGE', P .. ':workers', 0, -1)) do
  local v = redis.call('GET', P .. ':hb:' .. w)
  if v then out[#out + 1] = v end
end
return out
)lua";

}  // namespace stem::redis::detail::backend_lua
