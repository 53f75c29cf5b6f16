//! The Lua scripts of the Redis broker: each runs atomically in Redis, which is what orders
//! a channel's offsets and makes "append, then announce" one step.
//!
//! Per-channel keys exist only for channels that were published: a subscribe to a channel
//! with no state writes nothing and answers its position lazily, as the in-memory hub does
//! (`crate::hub`): a channel created now gets the epoch `<base>-<bucket>`, where `<base>` is
//! random per Redis data set (`<prefix>:base`, so a flushed or lost data set gives new
//! epochs) and the bucket is Redis' time divided by the channel-state TTL. A channel's state
//! expires only after a whole TTL without use, so its next incarnation falls in a later
//! bucket and has another epoch. Each app's live channels are a sorted set
//! (`<prefix>:c:<app>`, scored by expiry) bounding them by the app's quota.
//!
//! Failover and restarts (the rule that keeps "no duplicate, no silent loss" when Redis
//! loses acknowledged writes): replication is asynchronous, so a promoted replica or a
//! primary restarted from a snapshot may miss a channel's last publications and would then
//! hand out their offsets again. Every script therefore reads the primary's replication id
//! (`master_replid`, which changes on every promotion and restart) and:
//! - the epoch base is stored with the replication id it was written under
//!   (`<base> <replid>`), and renewed when it differs, so a channel created after a
//!   failover never gets an epoch handed out before it;
//! - a channel's state records the replication id it was written under (`run`); state
//!   written under another one is renewed (new epoch from the new base, offset 0, history
//!   dropped) the first time a script touches it, so offsets continue only where nothing
//!   can have been lost. Clients that recover across a failover get `recovered:false`;
//!   idempotency keys of an older epoch no longer count as repeats.
//!
//! This is conservative: a graceful failover, which loses nothing, renews too.
//!
//! This relies on Redis keeping keys until they expire: run it with
//! `maxmemory-policy noeviction` (docs/operations.md); an evicted channel state would
//! reuse its epoch within the bucket.

/// What every channel script starts with (after `state_ms`): `now`, the primary's
/// replication id `run`, `base()` (the epoch base of this replication id), and the
/// channel's `epoch` and last offset `top`, renewed (new epoch, offset 0) if written under
/// another replication id (module docs).
macro_rules! prelude {
    () => {
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local run = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or '-'
local function base()
  local b = redis.call('GET', KEYS[3])
  if b then
    local value, at = string.match(b, '^(%w+) (%w+)$')
    if at == run then return value end
  end
  redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. run)
  return ARGV[1]
end
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'run', 'top')
local epoch = meta[1]
local top = tonumber(meta[3] or '0')
if epoch and meta[2] ~= run then
  epoch = base() .. '-' .. tostring(math.floor(now / state_ms))
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0, 'run', run)
  redis.call('DEL', KEYS[2])
  top = 0
end
"
    };
}

/// Appends publications of one channel, in order; see the module docs. KEYS: meta, history,
/// base, the app's channel set, then the items' idempotency keys. ARGV: base candidate, app,
/// channel, history ttl (ms), max per channel, channel state ttl (s), pub/sub channel, the
/// app's channel quota, the announcing command (`PUBLISH`, or `SPUBLISH` on a cluster), then
/// per item its event, data, and the index in KEYS of its idempotency key (0: none).
/// Returns `{"<epoch> <offset>", status}` per item, flattened: status 0 published, 1 repeated
/// idempotency key, 2 the app's channel quota is reached (nothing written).
///
/// What it stored is announced in one message (`message.rs`): the single form for one
/// publication, `!pubs` for several. The channel's keys are written once per call, not
/// per item.
pub(super) const PUBLISH_LUA: &str = concat!(
    "local state_ms = tonumber(ARGV[6]) * 1000",
    prelude!(),
    r"
local n = (#ARGV - 9) / 3
local out = {}
if not epoch then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[8]) then
    for i = 1, n do out[2 * i - 1] = ''; out[2 * i] = 2 end
    return out
  end
  epoch = base() .. '-' .. tostring(math.floor(now / state_ms))
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0, 'run', run)
  redis.call('DEL', KEYS[2])
  top = 0
end
local first = top + 1
local entries, message = {}, {}
for i = 0, n - 1 do
  local event, data, k = ARGV[10 + 3 * i], ARGV[11 + 3 * i], tonumber(ARGV[12 + 3 * i])
  local prev = false
  if k > 0 then prev = redis.call('GET', KEYS[k]) end
  if prev and string.sub(prev, 1, #epoch + 1) == epoch .. ' ' then
    out[#out + 1] = prev
    out[#out + 1] = 1
  else
    top = top + 1
    local pos = epoch .. ' ' .. top
    if k > 0 then redis.call('SET', KEYS[k], pos, 'PX', ARGV[4]) end
    entries[#entries + 1] = now .. ' ' .. event .. ' ' .. data
    message[#message + 1] = event
    message[#message + 1] = data
    out[#out + 1] = pos
    out[#out + 1] = 0
  end
end
if #entries == 0 then return out end
redis.call('ZADD', KEYS[4], now + state_ms, ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[6])
redis.call('HSET', KEYS[1], 'top', top)
redis.call('RPUSH', KEYS[2], unpack(entries))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
local head = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. epoch .. ' ' .. first
if #entries == 1 then
  redis.call(ARGV[9], ARGV[7], head .. ' ' .. message[1] .. ' ' .. message[2])
else
  redis.call(ARGV[9], ARGV[7], '!pubs ' .. head .. ' ' .. #entries .. ' ' .. table.concat(message, ' '))
end
return out
"
);

/// A subscribe's read; see the module docs. KEYS: meta, history, base, the app's channel
/// set. ARGV: base candidate, channel state ttl (s), history ttl (ms), since epoch ('' for
/// none), since offset, channel. Returns `{epoch, top, status, entries...}`, status `live`,
/// `ok` (entries follow, the first at since + 1) or `gone`.
pub(super) const SUBSCRIBE_LUA: &str = concat!(
    "local state_ms = tonumber(ARGV[2]) * 1000",
    prelude!(),
    r"
local since = tonumber(ARGV[5])
if not epoch then
  epoch = base() .. '-' .. tostring(math.floor(now / state_ms))
  if ARGV[4] == '' then return {epoch, 0, 'live'} end
  if ARGV[4] == epoch and since == 0 then return {epoch, 0, 'ok'} end
  return {epoch, 0, 'gone'}
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[4], now + state_ms, ARGV[6])
redis.call('EXPIRE', KEYS[4], ARGV[2])
if ARGV[4] == '' then return {epoch, top, 'live'} end
if ARGV[4] ~= epoch or since == nil or since > top then return {epoch, top, 'gone'} end
if since == top then return {epoch, top, 'ok'} end
local len = redis.call('LLEN', KEYS[2])
local first = top - len + 1
if since + 1 < first then return {epoch, top, 'gone'} end
local entries = redis.call('LRANGE', KEYS[2], since + 1 - first, -1)
local stored = tonumber(string.match(entries[1], '^(%d+)'))
if stored == nil or stored + tonumber(ARGV[3]) <= now then return {epoch, top, 'gone'} end
local out = {epoch, top, 'ok'}
for i = 1, #entries do out[#out + 1] = entries[i] end
return out
"
);

/// Stores a revocation (keeping the later `until`) and announces it. KEYS: the revocation.
/// ARGV: until (unix seconds), pub/sub channel, message, command (`PUBLISH`/`SPUBLISH`).
pub(super) const REVOKE_LUA: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[1]) end
redis.call(ARGV[4], ARGV[2], ARGV[3])
return 1
";
