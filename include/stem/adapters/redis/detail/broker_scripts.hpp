// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// detail/broker_scripts.hpp — the Lua scripts of redis_broker: every change that touches
// several keys and must happen at once is one script, so it is atomic and costs one round
// trip (an ack is plain commands, the `ack` script only for an orphan: see
// redis_broker::state::ack_many).
//
// Keys (P is "{namespace}": one hash slot, so a script's keys always live together):
//   P:q:<queue>:<p>      stream of ready envelopes of priority p (0-9), fields v (visibility
//                        ms, 0 = the broker's default) and e (envelope JSON); group "stem"
//   P:leases:<queue>     sorted set of leases "<p>:<entry id>:<token>" scored by expiry (ms)
//   P:delayed:<queue>    sorted set of "<p>:<visibility ms>:<envelope>" scored by due time (ms)
//   P:dead:<queue>       sorted set of dead envelope ids scored by time of death (ms)
//   P:dead_all           the same for every queue
//   P:dead_data          hash: envelope id -> JSON {q, r, t, e} (queue, reason, ms, envelope)
//   P:queues             set of queue names ever published to
//   P:bc:<channel>       stream of broadcasts; one consumer group per subscriber
// Every script takes P as ARGV[1] and the current time in ms as ARGV[2] (the server's own
// clock is not used, so that producers and workers agree with their own clocks).
#pragma once

#include <string_view>

namespace stem::redis::detail::broker_lua {

/// Shared helpers (prepended to every script).
inline constexpr std::string_view prelude = R"lua(
local P, now = ARGV[1], tonumber(ARGV[2])
local function stream(q, p) return P .. ':q:' .. q .. ':' .. p end
local function fields(f)
  local v, e = 0, nil
  for i = 1, #f, 2 do
    if f[i] == 'v' then v = tonumber(f[i + 1]) elseif f[i] == 'e' then e = f[i + 1] end
  end
  return v, e
end
local function add_ready(q, p, vis, text)
  redis.call('XADD', stream(q, p), '*', 'v', vis, 'e', text)
end
-- Whether the delivery of entry id whose delivery count is token still has it though no
-- lease names it (an orphan: its lease was never written, or an ack stopped half way):
-- the entry is pending with that count. One delivered again has a higher count.
local function orphan(q, p, id, token)
  local e = redis.pcall('XPENDING', stream(q, p), 'stem', id, id, 1)
  return type(e) == 'table' and e[1] ~= nil and tonumber(e[1][4]) == tonumber(token)
end
-- Releases the lease "<p>:<id>:<token>" of q (or the orphan) and removes its entry; false
-- if this delivery no longer has it.
local function release(q, p, id, token)
  if redis.call('ZREM', P .. ':leases:' .. q, p .. ':' .. id .. ':' .. token) == 0 and not orphan(q, p, id, token) then
    return false
  end
  local s = stream(q, p)
  redis.call('XACK', s, 'stem', id)
  redis.call('XDEL', s, id)
  return true
end
)lua";

/// reclaim: ARGV[3] consumer, ARGV[4] max, ARGV[5] default visibility ms, ARGV[6..] queues.
/// Moves due delayed envelopes to their streams and takes up to max expired leases again
/// (same entry, token + 1), lowest score first across the queues: entries read beyond what
/// a consumer asked for are scored 9 - priority (highest priority first), leases that ran
/// out by their expiry. New entries are read by a plain XREADGROUP pipelined after it
/// (redis_broker.hpp): entries read in a script would cost far more server time. Returns
/// {next_ms, q_index, p, id, token, expires_ms, envelope, ...}; next_ms is the earliest due
/// time or lease expiry still ahead (-1: none).
inline constexpr std::string_view reclaim = R"lua(
local consumer, max, dvis = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out, nxt, expired = {-1}, -1, {}
local function later(t) if t > now and (nxt < 0 or t < nxt) then nxt = t end end
local function leases(qi) return P .. ':leases:' .. ARGV[qi + 5] end
for qi = 1, #ARGV - 5 do
  local q = ARGV[qi + 5]
  local delayed = P .. ':delayed:' .. q
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)) do
    local p, vis, text = string.match(m, '^(%d):(%d+):(.*)$')
    add_ready(q, p, vis, text)
    redis.call('ZREM', delayed, m)
  end
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] then later(tonumber(first[2])) end
  local got = redis.call('ZRANGEBYSCORE', leases(qi), '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)
  for i = 1, #got, 2 do expired[#expired + 1] = {tonumber(got[i + 1]), qi, got[i]} end
end
table.sort(expired, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)
local taken, renewed = {}, {}  -- per queue index: members removed; scores and members added
for k = 1, math.min(max, #expired) do
  local qi, m = expired[k][2], expired[k][3]
  taken[qi] = taken[qi] or {}
  table.insert(taken[qi], m)
  local p, id, token = string.match(m, '^(%d):([^:]+):(%d+)$')
  local got = redis.call('XCLAIM', stream(ARGV[qi + 5], p), 'stem', consumer, 0, id)
  if got[1] and got[1][2] then
    local vis, text = fields(got[1][2])
    if vis <= 0 then vis = dvis end
    local exp = now + vis
    token = tonumber(token) + 1
    renewed[qi] = renewed[qi] or {}
    table.insert(renewed[qi], exp)
    table.insert(renewed[qi], p .. ':' .. id .. ':' .. token)
    out[#out + 1] = qi; out[#out + 1] = tonumber(p); out[#out + 1] = id; out[#out + 1] = token
    out[#out + 1] = exp; out[#out + 1] = text
  end
end
for qi, ms in pairs(taken) do redis.call('ZREM', leases(qi), unpack(ms)) end
for qi = 1, #ARGV - 5 do
  local soon = redis.call('ZRANGE', leases(qi), 0, 0, 'WITHSCORES')
  if soon[2] then later(tonumber(soon[2])) end
end
for qi, l in pairs(renewed) do redis.call('ZADD', leases(qi), unpack(l)) end
out[1] = nxt
return out
)lua";

/// ensure: ARGV[3..] queues. Creates each queue's streams and their group (reading from
/// the start, so entries added before are kept).
inline constexpr std::string_view ensure = R"lua(
for i = 3, #ARGV do
  for p = 0, 9 do
    local r = redis.pcall('XGROUP', 'CREATE', stream(ARGV[i], p), 'stem', '0', 'MKSTREAM')
    if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP', 1, true) then return redis.error_reply(r.err) end
  end
  redis.call('SADD', P .. ':queues', ARGV[i])
end
return 1
)lua";

/// requeue: ARGV[3..6] queue, p, id, token. The envelope goes back to the tail of its stream.
inline constexpr std::string_view requeue = R"lua(
local q, p, id = ARGV[3], ARGV[4], ARGV[5]
local entry = redis.call('XRANGE', stream(q, p), id, id)
if not release(q, p, id, ARGV[6]) then return 0 end
if entry[1] then
  local vis, text = fields(entry[1][2])
  add_ready(q, p, vis, text)
end
return 1
)lua";

/// ack: ARGV[3..6] queue, p, id, token; ARGV[7] '1' when an earlier attempt of this ack may
/// have run. The ack of a delivery whose lease member the plain ZREM of
/// redis_broker::state::ack_many did not find (it may be an orphan of this delivery: its
/// ZADD lost, or this ack's own earlier attempt cut off after the ZREM), or one sent again.
/// An entry no longer pending counts as acknowledged when sent again.
inline constexpr std::string_view ack = R"lua(
local q, p, id = ARGV[3], ARGV[4], ARGV[5]
if release(q, p, id, ARGV[6]) then return 1 end
if ARGV[7] == '1' then
  local e = redis.pcall('XPENDING', stream(q, p), 'stem', id, id, 1)
  if type(e) == 'table' and not e.err and e[1] == nil then return 1 end
end
return 0
)lua";

/// extend: ARGV[3..6] queue, p, id, token, ARGV[7] new expiry ms. An orphan gets its lease.
inline constexpr std::string_view extend = R"lua(
local leases, m = P .. ':leases:' .. ARGV[3], ARGV[4] .. ':' .. ARGV[5] .. ':' .. ARGV[6]
if not redis.call('ZSCORE', leases, m) and not orphan(ARGV[3], ARGV[4], ARGV[5], ARGV[6]) then return 0 end
redis.call('ZADD', leases, ARGV[7], m)
return 1
)lua";

/// retry: ARGV[3..6] the lease (queue, p, id, token); ARGV[7..11] the next envelope's
/// queue, priority, visibility ms, due ms, JSON. Replaces the delivery in one step.
inline constexpr std::string_view retry = R"lua(
if not release(ARGV[3], ARGV[4], ARGV[5], ARGV[6]) then return 0 end
local q, p, vis, due, text = ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11]
if due > now then
  redis.call('ZADD', P .. ':delayed:' .. q, due, p .. ':' .. vis .. ':' .. text)
else
  add_ready(q, p, vis, text)
end
redis.call('SADD', P .. ':queues', q)
return 1
)lua";

/// dead: ARGV[3..6] the lease (queue, p, id, token; p = '' for a broadcast, nothing to
/// release), ARGV[7] envelope id, ARGV[8] reason, ARGV[9] JSON, ARGV[10] retention ms.
/// Also removes dead letters older than the retention.
inline constexpr std::string_view dead = R"lua(
local q = ARGV[3]
if ARGV[4] ~= '' and not release(q, ARGV[4], ARGV[5], ARGV[6]) then return 0 end
local id = ARGV[7]
redis.call('ZADD', P .. ':dead:' .. q, now, id)
redis.call('ZADD', P .. ':dead_all', now, id)
redis.call('HSET', P .. ':dead_data', id, cjson.encode({q = q, r = ARGV[8], t = now, e = ARGV[9]}))
local cutoff = now - tonumber(ARGV[10])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', P .. ':dead_all', '-inf', cutoff, 'LIMIT', 0, 100)) do
  local rec = redis.call('HGET', P .. ':dead_data', old)
  if rec then redis.call('ZREM', P .. ':dead:' .. cjson.decode(rec).q, old) end
  redis.call('HDEL', P .. ':dead_data', old)
  redis.call('ZREM', P .. ':dead_all', old)
end
return 1
)lua";

/// dead_page: ARGV[3] queue ('' = all), ARGV[4] offset, ARGV[5] limit (0: count only).
/// Returns {total, record, record, ...}, oldest first.
inline constexpr std::string_view dead_page = R"lua(
local idx = ARGV[3] == '' and (P .. ':dead_all') or (P .. ':dead:' .. ARGV[3])
local out = {redis.call('ZCARD', idx)}
local limit = tonumber(ARGV[5])
if limit > 0 then
  local off = tonumber(ARGV[4])
  for _, id in ipairs(redis.call('ZRANGE', idx, off, off + limit - 1)) do
    local rec = redis.call('HGET', P .. ':dead_data', id)
    if rec then out[#out + 1] = rec end
  end
end
return out
)lua";

/// replay_one: ARGV[3] envelope id, ARGV[4] the queue, ARGV[5] priority, ARGV[6] visibility
/// ms, ARGV[7] due ms, ARGV[8] the envelope to publish. Returns 0 if it was no longer dead.
inline constexpr std::string_view replay_one = R"lua(
local id, q = ARGV[3], ARGV[4]
local rec = redis.call('HGET', P .. ':dead_data', id)
if not rec then return 0 end
redis.call('HDEL', P .. ':dead_data', id)
redis.call('ZREM', P .. ':dead:' .. cjson.decode(rec).q, id)
redis.call('ZREM', P .. ':dead_all', id)
local due = tonumber(ARGV[7])
if due > now then
  redis.call('ZADD', P .. ':delayed:' .. q, due, ARGV[5] .. ':' .. ARGV[6] .. ':' .. ARGV[8])
else
  add_ready(q, ARGV[5], ARGV[6], ARGV[8])
end
return 1
)lua";

/// purge_dead: ARGV[3] queue ('' = all). Returns how many were removed.
inline constexpr std::string_view purge_dead = R"lua(
local idx = ARGV[3] == '' and (P .. ':dead_all') or (P .. ':dead:' .. ARGV[3])
local ids = redis.call('ZRANGE', idx, 0, -1)
for _, id in ipairs(ids) do
  local rec = redis.call('HGET', P .. ':dead_data', id)
  if rec then redis.call('ZREM', P .. ':dead:' .. cjson.decode(rec).q, id) end
  redis.call('HDEL', P .. ':dead_data', id)
  redis.call('ZREM', P .. ':dead_all', id)
end
return #ids
)lua";

/// purge: ARGV[3] queue. Removes entries not yet delivered (after the group's last
/// delivered id) and delayed ones; leased entries stay. Returns how many.
inline constexpr std::string_view purge = R"lua(
local q, removed = ARGV[3], 0
for p = 0, 9 do
  local s = stream(q, p)
  local last = '0-0'
  local groups = redis.pcall('XINFO', 'GROUPS', s)
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, lid
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then lid = g[i + 1] end
      end
      if name == 'stem' then last = lid end
    end
    while true do
      local batch = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', 500)
      if #batch == 0 then break end
      for _, e in ipairs(batch) do redis.call('XDEL', s, e[1]); last = e[1] end
      removed = removed + #batch
    end
  end
end
local delayed = P .. ':delayed:' .. q
removed = removed + redis.call('ZCARD', delayed)
redis.call('DEL', delayed)
return removed
)lua";

/// stats: ARGV[3] queue. Returns {pending, delayed, inflight, dead}.
inline constexpr std::string_view stats = R"lua(
local q, ready, inflight = ARGV[3], 0, 0
for p = 0, 9 do
  local s = stream(q, p)
  ready = ready + redis.call('XLEN', s)
  local pel = redis.pcall('XPENDING', s, 'stem')
  if type(pel) == 'table' and not pel.err then inflight = inflight + pel[1] end
end
return {ready - inflight, redis.call('ZCARD', P .. ':delayed:' .. q), inflight, redis.call('ZCARD', P .. ':dead:' .. q)}
)lua";

/// sweep: ARGV[3] idle ms, ARGV[4..] queues. An entry delivered by a read whose reader died
/// before leasing it, or whose ack died after releasing the lease and before XACK, has no
/// lease: give it one that has already expired.
inline constexpr std::string_view sweep = R"lua(
local idle, found = ARGV[3], 0
for i = 4, #ARGV do
  local q = ARGV[i]
  local leases = P .. ':leases:' .. q
  for p = 0, 9 do
    local pel = redis.pcall('XPENDING', stream(q, p), 'stem', 'IDLE', idle, '-', '+', 100)
    if type(pel) == 'table' and not pel.err then
      for _, e in ipairs(pel) do
        local m = p .. ':' .. e[1] .. ':' .. e[4]
        if not redis.call('ZSCORE', leases, m) then
          redis.call('ZADD', leases, 0, m)
          found = found + 1
        end
      end
    end
  end
end
return found
)lua";

/// broadcast_read: ARGV[3] consumer (its own group), ARGV[4] max, ARGV[5..] channels.
/// The first read of a channel by a consumer registers it (from then on). Returns
/// {channel index, envelope, ...}.
inline constexpr std::string_view broadcast_read = R"lua(
local consumer, max, out = ARGV[3], tonumber(ARGV[4]), {}
for i = 5, #ARGV do
  local s = P .. ':bc:' .. ARGV[i]
  local res = redis.pcall('XREADGROUP', 'GROUP', consumer, consumer, 'COUNT', max, 'NOACK', 'STREAMS', s, '>')
  if type(res) == 'table' and res.err then
    if not string.find(res.err, 'NOGROUP', 1, true) then return redis.error_reply(res.err) end
    redis.call('XGROUP', 'CREATE', s, consumer, '$', 'MKSTREAM')
  elseif res then
    for _, entry in ipairs(res[1][2]) do
      local vis, text = fields(entry[2])
      out[#out + 1] = i - 4
      out[#out + 1] = text
    end
  end
end
return out
)lua";

}  // namespace stem::redis::detail::broker_lua
