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
// fenceCounterLife in milliseconds, and LISTEN_US being listenWait in
// microseconds.
func newFenceScript(src string) *redis.Script {
	return redis.NewScript(strings.NewReplacer(
		"FENCE_LIFE_MS", strconv.FormatInt(fenceCounterLife.Milliseconds(), 10),
		"LISTEN_US", strconv.FormatInt(listenWait.Microseconds(), 10),
	).Replace(src))
}

// listenWait is how long after its arrival a waiter surely listens on its
// Locker's channel, if it can: the subscription is made after its first
// attempt, and waited for confirmWait at most.
const listenWait = 2 * confirmWait

// The Lua scripts run through redis.Script: EVALSHA, with EVAL as the
// fallback when the server answers NOSCRIPT (after a restart, a failover or
// SCRIPT FLUSH), so a call costs one round trip in the common case.

// fenceLua issues a fencing token: max(last + 1, the server's time in
// microseconds, us), written to the counter, which outlives the lock's TTL
// by fenceCounterLife. last is the counter's value, read before the
// script's first write of the lock (see acquireScript for why).
//
// The time term keeps fences increasing when the counter has expired or was
// lost in a failover, so the counter can expire instead of piling up one key
// per lock name forever.
const fenceLua = `
local function nextFence(last, us)
	last = tonumber(last)
	if last and last >= us then
		return last + 1
	end
	return us
end
local function setFence(counter, f, ttl)
	redis.call('SET', counter, string.format('%d', f), 'PX', tonumber(ttl) + FENCE_LIFE_MS)
	return f
end
local function fence(counter, last, us, ttl)
	return setFence(counter, nextFence(last, us), ttl)
end
`

// queueLua keeps the fleet's queue of waiting acquisitions of a lock, a
// sorted set in the lock's slot (KEYS[3]) holding two members per waiter:
// its entry, scored by the server time of its arrival in microseconds, and
// "~" and its entry, scored by the server time in milliseconds at which it
// is dropped unless its waiter comes back. Times in milliseconds are below
// 1e14 and in microseconds above it for millennia, so the arrivals sort
// after every deadline, in order. An entry is "TTL:PID:HAND": the TTL in
// milliseconds the waiter asks for, the id of its Locker (whose channel,
// the lock's companion + ":" + PID, wakes it), and the token a lock handed
// over to it holds.
//
// now returns the server's time in microseconds, asking once per script;
// head returns the first entry, after dropping those whose time is up;
// enqueue adds an entry at the tail, or keeps its place, and moves its
// time to now + life; enqueueAll does so for the entries in ARGV from
// index from to index to, in pairs with how long ago each came, in
// microseconds, which places a new one; dequeue removes one; parse splits
// one.
const queueLua = `
local us
local function now()
	if not us then
		local t = redis.call('TIME')
		us = tonumber(t[1]) * 1000000 + tonumber(t[2])
	end
	return us
end
local function first(q)
	return redis.call('ZRANGEBYSCORE', q, '100000000000000', '+inf', 'LIMIT', 0, 1)[1]
end
local function head(q)
	local h = first(q)
	if not h then
		return false
	end
	local dead = redis.call('ZRANGEBYSCORE', q, '-inf', math.floor(now() / 1000), 'LIMIT', 0, 100)
	if #dead == 0 then
		return h
	end
	for i = 1, #dead do
		dead[#dead + 1] = string.sub(dead[i], 2)
	end
	redis.call('ZREM', q, unpack(dead))
	return first(q) or false
end
local function enqueue(q, entry, life)
	redis.call('ZADD', q, 'NX', now(), entry)
	redis.call('ZADD', q, math.floor(now() / 1000) + life, '~' .. entry)
	redis.call('PEXPIRE', q, 2 * life)
end
local function enqueueAll(q, life, from, to)
	local arrivals, deadlines = {}, {}
	for i = from, to - 1, 2 do
		arrivals[#arrivals + 1] = now() - tonumber(ARGV[i + 1])
		arrivals[#arrivals + 1] = ARGV[i]
		deadlines[#deadlines + 1] = math.floor(now() / 1000) + life
		deadlines[#deadlines + 1] = '~' .. ARGV[i]
	end
	redis.call('ZADD', q, 'NX', unpack(arrivals))
	redis.call('ZADD', q, unpack(deadlines))
	redis.call('PEXPIRE', q, 2 * life)
end
local function dequeue(q, entry)
	redis.call('ZREM', q, entry, '~' .. entry)
end
local function parse(entry)
	return string.match(entry, '^(%d+):([^:]*):(.*)$')
end
`

// acquireScript takes a lock and issues its fencing token in one round
// trip.
//
// KEYS[1] the lock key; KEYS[2] its fencing counter (same cluster slot);
// KEYS[3] the lock's queue (see queueLua), which a Redlock node has none
// of. ARGV[1] the token; ARGV[2] the TTL in milliseconds; for an
// acquisition that waits, ARGV[3] the caller's queue entry and ARGV[4] its
// life in milliseconds, and, for a waiter's first attempt after it waited
// in process (see holds.go), ARGV[5] the token of the lock it waited
// behind, as its Locker knew it, or empty, then from ARGV[6] on, in pairs,
// its entry and the entries of its fellows, the waiters still in process
// behind the same lock, with how long ago each came, in microseconds,
// which places them (enqueueAll). The fellows are queued only while the
// key holds that token: then none of them has had the lock since the
// attempt was made (a waiter that takes it is a fellow no more), so an
// attempt that reaches Redis late does not queue a waiter that had it.
//
// With a queue, a free lock goes to the queue's head only: a caller that
// is not the head (a TryAcquire, or a waiter behind it) finds it reserved.
// A waiter that fails joins the queue, or keeps its place and renews its
// entry's life. A lock handed over to a waiter's entry (by releaseScript)
// counts as obtained by the waiter, under the entry's token.
//
// Reply: {1, fence} when obtained; {1, fence, 1} when it was handed over to
// the caller's entry; {0, pttl, place[, time]} when another owner holds the
// key, pttl being the holder's remaining TTL (-1 when it has none, -4 when
// not asked for: a waiter behind the head), or when the lock is free but
// reserved for the head of the queue (pttl -3); place is 0 for the head of
// the queue, 1 for a waiter behind it, -1 when not queued; time, for a
// waiter queued, is the server's time in microseconds when the script ran.
//
// A key that already holds the caller's token (a retried acquire whose
// first reply was lost) counts as obtained, with its TTL renewed, and so
// does one handed over to the caller's entry.
//
// The script is all-or-nothing as far as the lock goes: the commands that
// can fail on data (GET of a counter that is not a string, reads of a queue
// of another type) run before the first write of the lock or the queue
// (dropping dead waiters aside), and the writes themselves cannot fail once
// the first has succeeded (Redis checks for OOM once per script). So an
// error reply means the lock was not taken.
var acquireScript = newFenceScript(fenceLua + queueLua + `
local q, entry = KEYS[3], ARGV[3] or ''
local function join(cur)
	if ARGV[5] then
		local to = 7
		if cur == ARGV[5] then
			to = #ARGV
		end
		enqueueAll(q, tonumber(ARGV[4]), 6, to)
	else
		enqueue(q, entry, tonumber(ARGV[4]))
	end
end
local hand
if q and entry ~= '' then
	local _
	_, _, hand = parse(entry)
end
local cur = redis.pcall('GET', KEYS[1])
if cur and (cur == ARGV[1] or (hand and cur == hand)) then
	local last = redis.call('GET', KEYS[2])
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	if hand then
		dequeue(q, entry)
	end
	local f = fence(KEYS[2], last, now(), ARGV[2])
	if cur ~= ARGV[1] then
		return {1, f, 1}
	end
	return {1, f}
end
if cur then
	if not hand then
		return {0, redis.call('PTTL', KEYS[1]), -1}
	end
	-- Dead waiters matter once the lock is free: the head read here may
	-- be one, which makes this waiter come back later than the head would.
	join(cur)
	local h = first(q)
	if h ~= entry then
		return {0, -4, 1, now()}
	end
	return {0, redis.call('PTTL', KEYS[1]), 0, now()}
end
local h = false
if q then
	h = head(q)
end
if h and h ~= entry then
	if not hand then
		return {0, -3, -1}
	end
	join(false)
	if not ARGV[5] or first(q) ~= entry then
		return {0, -3, 1, now()}
	end
	-- It came before the head, though it had not queued yet (it waited in
	-- process): the lock is its.
	h = entry
end
local last = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if h then
	dequeue(q, entry)
end
return {1, fence(KEYS[2], last, now(), ARGV[2])}
`)

// releaseScript deletes a lock only if it still holds the caller's token,
// and then lets the next acquisition in.
//
// KEYS[1] the lock key; with a queue (see queueLua), KEYS[2] its fencing
// counter and KEYS[3] its queue. ARGV[1] the token; ARGV[2] the publish
// command (PUBLISH, SPUBLISH, or empty for none); ARGV[3] the lock's
// companion, in KEYS[1]'s slot (lockArgs), the channel of the rediskit
// waiters that keep no queue (Redlock, and earlier versions); with a queue,
// ARGV[4] the id of the caller's Locker, or empty; ARGV[5] a queue entry
// that leaves (a waiter giving up: the lock is also released if it was
// handed over to that entry), or empty; ARGV[6] the milliseconds that the
// life of a waiter's entry must have left for the lock to be handed over
// to it in another process (queueLife less handOverFresh); ARGV[7] the
// longest TTL, in milliseconds, a lock handed over to another process gets
// until its new holder confirms it (the claim bound), which is also the
// life of a waiter's entry; then, in pairs, the entries of the caller's
// Locker's waiters that wait in process (see holds.go), oldest first, and
// each one's age in microseconds.
//
// The caller's lock goes to the oldest of them (a lock that expired does
// not: a release naming them may be late) when it came before the head of the queue, measured
// in the server's time: the script's run less the waiter's age. Otherwise
// the waiters in process join the queue at the places their ages give
// them, and the head's turn comes as follows.
//
// Without a queue, or with an empty one, the release publishes an empty
// message on the companion. With a queue, the lock, once free, is handed
// over to the head of the queue (the key takes the head's token and TTL and
// a new fence is issued) when the head is a waiter of the caller's Locker,
// which tells it in process, or when its waiter came back lately and its
// Locker listens on its channel: the message "ENTRY FENCE TIME PX" there
// tells it, TIME being the server's time in microseconds and PX the TTL
// the lock got, the claim bound if that is shorter than the waiter's.
// A head whose Locker does not listen though it came listenWait ago or more
// is dropped (its process is gone), and the next one woken; a newer one
// keeps its place.
// Otherwise the head is woken on its Locker's channel, with its entry as
// the message; the head is woken too when the leaving entry was the head,
// and the lock is still held.
//
// Reply: 1 when deleted; 0 when the key is gone or holds another token;
// {2, fence, entry, deleted} when the lock was handed over to entry.
//
// The publish is a pcall: a server without SPUBLISH (before Redis 7) still
// releases, and its waiters fall back to polling.
var releaseScript = newFenceScript(fenceLua + queueLua + `
local function wake(channel, msg)
	if ARGV[2] == '' then
		return -1
	end
	local n = redis.pcall(ARGV[2], channel, msg)
	if type(n) ~= 'number' then
		return -1
	end
	return n
end
local cur = redis.pcall('GET', KEYS[1])
local q, leaving = KEYS[3], ARGV[5] or ''
local hand
if leaving ~= '' then
	local _
	_, _, hand = parse(leaving)
end
local mine = cur == ARGV[1] or (hand ~= nil and cur == hand)
if not q or (cur and not mine and leaving == '') then
	if not mine then
		return 0
	end
	redis.call('DEL', KEYS[1])
	wake(ARGV[3], '')
	return 1
end
local wasHead = false
if leaving ~= '' then
	wasHead = first(q) == leaving
	dequeue(q, leaving)
end
local h = head(q)
local deleted = 0
if mine then
	deleted = 1
elseif cur and not wasHead then
	return 0
end
if ARGV[8] and mine then
	if not h or tonumber(redis.call('ZSCORE', q, h)) > now() - tonumber(ARGV[9]) then
		local ttl, _, token = parse(ARGV[8])
		local last = redis.call('GET', KEYS[2])
		redis.call('SET', KEYS[1], token, 'PX', ttl)
		if h then
			-- An earlier release may have queued it.
			dequeue(q, ARGV[8])
		end
		return {2, fence(KEYS[2], last, now(), ttl), ARGV[8], deleted}
	end
	enqueueAll(q, tonumber(ARGV[7]), 8, #ARGV)
end
if not h then
	if mine then
		redis.call('DEL', KEYS[1])
		wake(ARGV[3], '')
	end
	return deleted
end
local ttl, pid, token = parse(h)
local channel = ARGV[3] .. ':' .. pid
if mine or not cur then
	if ARGV[4] ~= '' and pid == ARGV[4] then
		local last = redis.call('GET', KEYS[2])
		redis.call('SET', KEYS[1], token, 'PX', ttl)
		dequeue(q, h)
		return {2, fence(KEYS[2], last, now(), ttl), h, deleted}
	end
	local life = tonumber(redis.call('ZSCORE', q, '~' .. h))
	if life and life >= math.floor(now() / 1000) + tonumber(ARGV[6]) then
		local last = redis.call('GET', KEYS[2])
		local f = nextFence(last, now())
		local px = math.min(tonumber(ttl), tonumber(ARGV[7]))
		local heard = wake(channel, h .. ' ' .. string.format('%d %d %d', f, now(), px))
		if heard > 0 then
			redis.call('SET', KEYS[1], token, 'PX', px)
			setFence(KEYS[2], f, ttl)
			dequeue(q, h)
			return deleted
		end
		if mine then
			redis.call('DEL', KEYS[1])
		end
		if heard < 0 or tonumber(redis.call('ZSCORE', q, h)) > now() - LISTEN_US then
			return deleted
		end
		dequeue(q, h)
		h = head(q)
		if not h then
			if mine then
				wake(ARGV[3], '')
			end
			return deleted
		end
		ttl, pid, token = parse(h)
		channel = ARGV[3] .. ':' .. pid
	elseif mine then
		redis.call('DEL', KEYS[1])
	end
end
wake(channel, h)
return deleted
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
