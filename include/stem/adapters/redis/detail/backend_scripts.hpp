// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// detail/backend_scripts.hpp — the Lua scripts of redis_backend. Status writes use none: they
// are one MULTI … EXEC per batch (redis_backend.hpp, write_many).
//
// Keys (P is "{namespace}"):
//   P:s:<task id>     string "<state>\0<task name>\0<status JSON>", expires with its TTL
//   P:idx:<state>     sorted set of the task ids in that state, scored by their expiry (ms):
//                     what has expired is cut off by score before listing or counting
//   P:c:<task id>     pub/sub channel: every status written for the task, as stored in P:s:<id>
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
-- Cuts expired statuses off the state indexes.
local function prune(st) redis.call('ZREMRANGEBYSCORE', P .. ':idx:' .. st, '-inf', now) end
)lua";

/// list: ARGV[3] state ('' = any), ARGV[4] name ('' = any), ARGV[5] offset, ARGV[6] limit.
/// Returns status JSON documents in index order (by expiry: oldest update first when the
/// TTLs are equal).
inline constexpr std::string_view list = R"lua(
local name, skip, limit = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local wanted = ARGV[3] == '' and states or {ARGV[3]}
-- Candidates from each index, merged by score.
local cands = {}
for _, st in ipairs(wanted) do
  prune(st)
  local start = 0
  local taken = 0
  while taken < skip + limit do
    local page = redis.call('ZRANGE', P .. ':idx:' .. st, start, start + 499, 'WITHSCORES')
    if #page == 0 then break end
    start = start + #page / 2
    for j = 1, #page, 2 do
      local v = redis.call('GET', P .. ':s:' .. page[j])
      if v then
        local _, n, doc = string.match(v, '^(%a+)%z(.-)%z(.*)$')
        if doc and (name == '' or n == name) then
          cands[#cands + 1] = {tonumber(page[j + 1]), doc}
          taken = taken + 1
        end
      end
    end
  end
end
table.sort(cands, function(a, b) return a[1] < b[1] end)
local out = {}
for k = skip + 1, math.min(#cands, skip + limit) do out[#out + 1] = cands[k][2] end
return out
)lua";

/// count: ARGV[3] state ('' = any).
inline constexpr std::string_view count = R"lua(
local wanted = ARGV[3] == '' and states or {ARGV[3]}
local n = 0
for _, st in ipairs(wanted) do
  prune(st)
  n = n + redis.call('ZCARD', P .. ':idx:' .. st)
end
return n
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
