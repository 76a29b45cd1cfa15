package rediskit

import (
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// fenceCounterLife is how long a fencing counter outlives the TTL of the
// last lock that used it. Fences stay increasing after it expires, because
// they are also bounded below by the server's clock (see acquireScript).
const fenceCounterLife = 24 * time.Hour

// newFenceScript makes a script whose text counts on FENCE_LIFE_MS being
// fenceCounterLife in milliseconds.
func newFenceScript(src string) *redis.Script {
	return redis.NewScript(strings.ReplaceAll(src, "FENCE_LIFE_MS", strconv.FormatInt(fenceCounterLife.Milliseconds(), 10)))
}

// The Lua scripts run through redis.Script: EVALSHA, with EVAL as the
// fallback when the server answers NOSCRIPT (after a restart, a failover or
// SCRIPT FLUSH), so a call costs one round trip in the common case.

// acquireScript takes a lock and issues its fencing token in one round trip.
//
// KEYS[1] the lock key; KEYS[2] its fencing counter (same cluster slot).
// ARGV[1] the token; ARGV[2] the TTL in milliseconds. The counter outlives
// the lock by fenceCounterLife.
// Reply: {1, fence} when obtained; {0, pttl} when another owner holds the
// key, pttl being the holder's remaining TTL (-1 when it has none).
//
// The fence is max(last fence + 1, server time in microseconds). The time
// term keeps fences increasing when the counter has expired or was lost in a
// failover, so the counter can expire instead of piling up one key per lock
// name forever. A key that already holds this token (a retried acquire whose
// first reply was lost) counts as obtained, with its TTL renewed.
//
// The script is all-or-nothing: the one command that can fail on data (GET
// of a counter that is not a string) runs before the first write, and the
// writes themselves cannot fail once the first has succeeded (Redis checks
// for OOM once per script). So an error reply means nothing was written.
var acquireScript = newFenceScript(`
local last = redis.call('GET', KEYS[2])
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	local cur = redis.pcall('GET', KEYS[1])
	if cur ~= ARGV[1] then
		return {0, redis.call('PTTL', KEYS[1])}
	end
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local t = redis.call('TIME')
local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
last = tonumber(last)
if last and last >= fence then
	fence = last + 1
end
redis.call('SET', KEYS[2], string.format('%d', fence), 'PX', tonumber(ARGV[2]) + FENCE_LIFE_MS)
return {1, fence}
`)

// releaseScript deletes a lock only if it still holds the caller's token,
// and then publishes a wake-up for the acquisitions waiting on it.
//
// KEYS[1] the lock key. ARGV[1] the token; ARGV[2] the publish command
// (PUBLISH, SPUBLISH, or empty for none); ARGV[3] the channel, in KEYS[1]'s
// slot, named like the fencing counter (lockArgs).
// Reply: 1 when deleted; 0 when the key is gone or holds another token.
//
// The publish is a pcall: a server without SPUBLISH (before Redis 7) still
// releases, and its waiters fall back to backoff.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then
	redis.pcall(ARGV[2], ARGV[3], '')
end
return 1
`)

// refreshScript resets a lock's TTL only if it still holds the caller's
// token.
//
// KEYS[1] the lock key. ARGV[1] the token; ARGV[2] the TTL in milliseconds.
// Reply: 1 when refreshed; 0 when the key is gone or holds another token.
var refreshScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// pttlScript reads a lock's remaining TTL only if it still holds the
// caller's token.
//
// KEYS[1] the lock key. ARGV[1] the token.
// Reply: the PTTL in milliseconds (-1 when the key has no expiry); -3 when
// the key is gone or holds another token.
var pttlScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PTTL', KEYS[1])
end
return -3
`)

// raiseFenceScript raises a fencing counter to at least a given fence; a
// Redlock acquisition writes its fence to the nodes that granted it with a
// lower one.
//
// KEYS[1] the fencing counter. ARGV[1] the fence; ARGV[2] the lock's TTL in
// milliseconds, which the counter outlives by fenceCounterLife.
// Reply: 1 when raised, 0 when the counter was already at least the fence.
var raiseFenceScript = newFenceScript(`
local last = tonumber(redis.call('GET', KEYS[1]))
if last and last >= tonumber(ARGV[1]) then
	return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]) + FENCE_LIFE_MS)
return 1
`)

// writeBackScript stores a value GetOrLoad loaded without a lease, where
// the load found no value, or found bytes it could not decode and that are
// still there: a value written meanwhile is newer, and another program's
// data of another Redis type is not a cache's to replace.
//
// KEYS[1] the key. ARGV[1] the encoded value; ARGV[2] the TTL in
// milliseconds; ARGV[3] '1' to replace the bytes ARGV[4] only (an absent
// key was deleted meanwhile, and stays so), '0' to write only if the key
// is absent.
// Reply: 1 when stored; 0 when not; -1 when the key holds a type other
// than string.
var writeBackScript = redis.NewScript(`
local t = redis.call('TYPE', KEYS[1])
if type(t) == 'table' then t = t['ok'] end
if t ~= 'none' and t ~= 'string' then
	return -1
end
if ARGV[3] == '1' then
	if t == 'none' or redis.call('GET', KEYS[1]) ~= ARGV[4] then
		return 0
	end
elseif t ~= 'none' then
	return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// deleteIfScript deletes a key only if it still holds the given bytes.
//
// KEYS[1] the key. ARGV[1] the bytes. Reply: 1 when deleted, 0 when not.
var deleteIfScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)

// readOrLeaseScript reads a cache key and, if it is absent or due for a
// load, takes the key's load lease, so that one process of the fleet loads
// the value.
//
// KEYS[1] the key; KEYS[2] its lease key (same cluster slot). ARGV[1] the
// lease's token; ARGV[2] the lease's TTL in milliseconds; ARGV[3] the
// remaining TTL in milliseconds at or below which a value is due for a
// load (its stale window, or the TTL a caller saw, for an early refresh),
// or -1 for never.
// Reply: {0, bytes} when the key holds a value not due (or a not-found
// marker); {1, 0} when the lease was taken; {2, pttl} when another process
// holds it, pttl being the lease's. When the key held a value due for a
// load, the last two also carry its bytes and its remaining TTL. A key of
// another type gives WRONGTYPE, as GET would.
var readOrLeaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
local ttl = 0
if v then
	if ARGV[3] == '-1' then
		return {0, v}
	end
	ttl = redis.call('PTTL', KEYS[1])
	if ttl < 0 or ttl > tonumber(ARGV[3]) or string.byte(v, 1) == 0 then
		return {0, v}
	end
end
local r
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
	r = {1, 0}
else
	r = {2, redis.call('PTTL', KEYS[2])}
end
if v then
	r[3], r[4] = v, ttl
end
return r
`)

// readFreshScript reads a cache key and its remaining TTL in one round
// trip.
//
// KEYS[1] the key. Reply: {bytes, pttl}, or nil when the key is absent. A
// key of another type gives WRONGTYPE, as GET would.
var readFreshScript = redis.NewScript(readFreshSrc)

// readFreshSrc is readFreshScript's source, which GetMany sends whole
// (EVAL) in its pipelines: go-redis does not retry a pipelined EVALSHA
// that meets NOSCRIPT.
const readFreshSrc = `
local v = redis.call('GET', KEYS[1])
if not v then
	return false
end
return {v, redis.call('PTTL', KEYS[1])}
`

// leaseWriteScript ends a load lease: it writes the value loaded under it,
// unless the lease is gone (a Delete removed it: the value may be stale) or
// the key was written meanwhile (by a Set: newer), and wakes the processes
// waiting for the value.
//
// KEYS[1] the key; KEYS[2] its lease key. ARGV[1] the lease's token;
// ARGV[2] the value; ARGV[3] its TTL in milliseconds; ARGV[4] the publish
// command (PUBLISH, SPUBLISH, or empty for none); ARGV[5] the channel, in
// KEYS[1]'s slot; ARGV[6] '1' to replace the bytes ARGV[7] (stale, or
// undecodable), '0' to write only if the key is absent.
// Reply: 1 when written; 0 when not.
var leaseWriteScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
	return 0
end
local written = 0
local t = redis.call('TYPE', KEYS[1])
if type(t) == 'table' then t = t['ok'] end
if t == 'none' or (t == 'string' and ARGV[6] == '1' and redis.call('GET', KEYS[1]) == ARGV[7]) then
	redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
	written = 1
end
redis.call('DEL', KEYS[2])
if ARGV[4] ~= '' then
	redis.pcall(ARGV[4], ARGV[5], '')
end
return written
`)

// getManyScript reads keys with MGET, in one round trip, and tells a key
// holding another Redis type (for which MGET answers nil, as for an absent
// key) from an absent one, so that GetMany reports it as a Get would.
//
// KEYS the keys, all on one node. ARGV[1] '1' to read their remaining
// TTLs too. Reply: the keys' values (nil for absent), then the index (from
// 1) of the first key holding another type, or 0, then, if asked, the
// keys' PTTLs.
var getManyScript = redis.NewScript(`
local out, n = {}, #KEYS
for i = 1, n, 1000 do
	local vs = redis.call('MGET', unpack(KEYS, i, math.min(i + 999, n)))
	for j = 1, #vs do
		out[i + j - 1] = vs[j]
	end
end
local wrong = 0
for i = 1, n do
	if not out[i] then
		local t = redis.call('TYPE', KEYS[i])
		if type(t) == 'table' then t = t['ok'] end
		if t ~= 'none' then
			wrong = i
			break
		end
	end
end
out[n + 1] = wrong
if ARGV[1] == '1' then
	for i = 1, n do
		out[n + 1 + i] = out[i] and redis.call('PTTL', KEYS[i]) or -2
	end
end
return out
`)
