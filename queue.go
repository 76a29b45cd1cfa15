package rediskit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The fleet's queue. On one Redis (single node, Sentinel, Cluster, Ring),
// the acquisitions that wait for a lock queue in Redis, beside the lock and
// in its slot (see queueLua): every waiting goroutine of every process has
// an entry, in order of arrival, but for those that wait in process behind
// a lock their Locker holds (see holds.go). A free lock goes to the head
// of the queue only, so neither a releaser asking again nor a newcomer (TryAcquire
// included) takes it past a live waiter, and a release wakes the head
// alone, on its Locker's channel, instead of every process: one retry per
// release, not one per process.
//
// The release script hands the lock over to the head at once (the key
// takes the waiter's token, its TTL and a new fence), so that the next
// holder needs no round trip of its own:
//
//   - when the head is a waiter of the releasing Locker, which gives it the
//     lock in process once the reply comes. The lock is valid from the
//     release's send time: the script ran after it.
//   - when the head is a waiter of another process that made an attempt
//     within handOverFresh and whose Locker listens on its channel (the
//     script's PUBLISH counts a receiver), which tells it, fence, time and
//     TTL included. A process that died within handOverFresh before the
//     release without its connections closing (a machine gone, a network
//     cut) can be handed the lock, so the hand-over sets it for the claim
//     bound (queueLife) at most. A caller that counts on its TTL
//     (AcquireWithTimeout) confirms a lock set for less with an attempt,
//     which renews it and issues a new fence (the entry's token may by
//     then hold a later hand-over than the one the message announced);
//     WithLock, whose watchdog ends fn's context when the lock may have
//     expired, takes it as it is, unless an attempt of the waiter's since
//     its last queued one had no reply, and its watchdog extends it as it
//     would a lock of that TTL, a third of the way. Its clock cannot be
//     compared with the releaser's, so the waiter counts the hand-over's
//     validity from the send time of its own last attempt that found the
//     lock held: the hand-over ran after that attempt (the server's times
//     say so), or the attempt would have found the lock handed over; a
//     message about an older hand-over is stale, the lock it announced
//     gone. A head whose Locker does not listen though it came listenWait
//     ago or more is dropped: its process exited. Where no message can be published (a Ring), nobody is
//     dropped, and the head finds the lock free when it next comes back.
//
// Otherwise the head is woken on its Locker's channel, and makes the
// attempt that takes the lock.
//
// A waiter's entry lives queueLife from its last attempt; waiters sleep at
// most queueBeat between attempts, so an entry outlives its waiter (a
// process that crashed, or was cut off) by at most queueLife, and the next
// waiter notices within queueBeat more. A waiter that gives up leaves the
// queue, releasing a lock handed over to it (single.leave); an attempt that
// arrives after its waiter left is taken out again when its reply comes
// (settleAcquire).
// Plain SET NX locks of other programs still exclude ours and are
// excluded, but they do not queue: such a program may take the lock when
// it is free, and a waiter at the head of the queue hears of its release
// through Redis's key tracking or its backoff.
//
// A Redlock keeps no queue: its nodes would have to agree on one.

// Variables, not constants, so that tests can shorten them.
var (
	// queueLife is how long a waiter's entry stays in the queue after its
	// waiter's last attempt.
	queueLife = 2 * time.Second
	// queueBeat bounds a queued waiter's sleep between attempts.
	queueBeat = 500 * time.Millisecond
	// handOverFresh is how lately a waiter of another process must have
	// made an attempt for a release to hand the lock over to it.
	handOverFresh = 250 * time.Millisecond
)

// newEntry returns a queue entry for a waiter of the Locker pid asking for
// ttl: "TTL:PID:HAND", HAND being the token a lock handed over to the
// entry holds.
func newEntry(ttl time.Duration, pid string) (string, error) {
	hand, err := newToken()
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(ttl.Milliseconds(), 10) + ":" + pid + ":" + hand, nil
}

// entryTTL returns the TTL an entry asks for.
func entryTTL(entry string) (time.Duration, bool) {
	ms, _, ok := strings.Cut(entry, ":")
	n, err := strconv.ParseInt(ms, 10, 64)
	return time.Duration(n) * time.Millisecond, ok && err == nil
}

// entryToken returns the token of a lock handed over to an entry.
func entryToken(entry string) string {
	return entry[strings.LastIndexByte(entry, ':')+1:]
}

// acquireQueued is a waiting acquisition on a store that queues waiters:
// the first attempt joins the queue, and the next ones keep the place,
// until the lock is taken, handed over, or the wait ends (then the entry
// leaves the queue). actx bounds each attempt (see acquire).
func (l *Locker) acquireQueued(ctx, actx context.Context, key string, names *lockNames, ttl, timeout time.Duration, watched bool) (_ *Lock, err error) {
	start := time.Now()
	n := l.store.notifier()
	entry, err := newEntry(ttl, n.id)
	if err != nil {
		return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
	}
	// Known to the notifier before the first attempt, so that neither a
	// hand-over nor a wake-up that follows it can miss the waiter.
	w := n.register(entry)
	subscribed := false
	var last *lockArgs // the last attempt's
	kt := keyTracking{t: l.store.tracker(), rkey: names.key}
	// Behind a lock this Locker holds, the waiter waits in process, with
	// no attempt, until the lock is handed over to it or leaves the
	// Locker (see holds.go).
	local := n.waitLocal(names.key, w)
	waitedLocal := local
	defer func() {
		kt.stop()
		n.deregister(w, err != nil)
		if err == nil {
			return
		}
		if last == nil && n.mustLeave(w) {
			// Named by a release, or carried by a fellow waiter's
			// attempt, before the waiter made one: its entry may be in
			// the queue, or the lock handed over to it; both go as the
			// entry's leaving lets them.
			last = &lockArgs{}
			last.init(names, entryToken(entry), ttl, n, entry)
		}
		if last != nil {
			l.store.leave(ctx, last)
		}
	}()
	if local {
		l.cfg.emit(&l.stats, Event{Kind: EventContended, Key: key})
	}
	var lastErr error // the last attempt's error, if the wait is riding it out
	// The last attempt that left the waiter queued: when it was sent, and
	// when it ran, in the server's microseconds; and whether an attempt
	// made since has had no reply (it may have run, and taken a lock
	// handed over to the entry).
	var queuedAt time.Time
	var queuedRan int64
	unanswered := false
	for retry := 1; ; retry++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
		}
		if g := n.takeHanded(w); g != nil {
			held := ttl // what the lock was set for
			switch {
			case !g.validUntil.IsZero():
				// Handed over by this Locker's release.
			case queuedAt.IsZero() || g.at <= queuedRan:
				// Handed over by another process, before the waiter's last
				// attempt ran (both times are the server's): stale, since
				// that attempt did not find the lock handed over; it had
				// expired, or been deleted.
				g = nil
			case g.holderTTL < ttl && (!watched || unanswered):
				// Handed over for the claim bound only, to a caller that
				// counts on ttl, or after an attempt that had no reply
				// (the entry's token may have been handed a later lock
				// than the one this message announced): the attempt
				// below finds the lock handed over and confirms it for
				// ttl, with a new fence.
				g = nil
			default:
				// Handed over for holderTTL (ttl, or the claim bound to a
				// watched lock, which its watchdog extends), after the
				// waiter's last attempt, which was sent at queuedAt: held
				// for holderTTL from then, at least, and nobody held it in
				// between. The entry left the queue then, so no later
				// hand-over came to it.
				held = g.holderTTL
				g.validUntil = validUntil(queuedAt, held)
			}
			if g != nil && time.Until(g.validUntil) > validity(held)/2 {
				return l.acquired(key, names, entryToken(entry), ttl, held, *g, start), nil
			}
			// Too little of it left to count on: the attempt renews it.
		}
		if local {
			left := timeout - time.Since(start)
			until, ok := n.localUntil(w)
			switch {
			case !ok:
				local = false // handed over, or the lock left the Locker
			case left > 0 && time.Now().Before(until) && time.Since(start) < queueBeat:
				// Waiting in process still.
			default:
				// The last attempt at the wait's end; or the holder's lock
				// may have expired without a release, or Redis may have
				// changed behind the Locker's back: look.
				n.endLocal(w)
				local = false
			}
			if local {
				sleep := min(queueBeat-time.Since(start), left, time.Until(until))
				if !subscribed {
					// Listening already, should the lock leave the
					// Locker with the waiter queued in Redis in its
					// place (see releaseScript); not waiting for the
					// server to confirm it, which would hold up a
					// hand-over in process.
					subscribed, _ = n.attach(actx, w, names.companion+":"+n.id, true, false)
				}
				if _, _, err := pause(ctx, sleep, w, nil); err != nil {
					return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
				}
				retry--
				continue
			}
		}
		// A fresh token for every attempt, as in acquire.
		token, err := newToken()
		if err != nil {
			return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
		}
		lk := &Lock{l: l, key: key, ttl: ttl}
		lk.args.init(names, token, ttl, n, entry)
		first := last == nil && waitedLocal
		var fellows []*waiter
		if first {
			// Its first attempt, after it waited in process: it joins the
			// queue at the place its arrival gives it, and so do the
			// waiters still in process behind the same hold, in their
			// order (see group).
			var group []any
			group, fellows = n.group(w)
			lk.args.acquire = append(slices.Clip(lk.args.acquire), group...)
		}
		last = &lk.args
		// Sent before its subscription is confirmed, the attempt may be
		// followed by a release that meets the waiter at the head of the
		// queue and tells nobody: the confirmation then wakes it (below).
		unconfirmed := n.pendingConfirmation(w)
		sent := time.Now()
		g, err := l.store.obtain(actx, &lk.args, ttl)
		if first {
			l.store.leaveAgain(&lk.args, n.joined(w, fellows))
		}
		holderTTL, place := time.Duration(-1), int64(0)
		if err != nil {
			unanswered = true
		}
		switch {
		case err == nil && g.held && g.handed:
			return l.acquired(key, names, entryToken(entry), ttl, ttl, g, start), nil
		case err == nil && g.held:
			lk.fence, lk.validUntil = g.fence, g.validUntil
			l.cfg.emit(&l.stats, Event{Kind: EventAcquired, Key: key, Wait: time.Since(start)})
			return lk, nil
		case err == nil:
			l.cfg.emit(&l.stats, Event{Kind: EventContended, Key: key})
			holderTTL, place, lastErr = g.holderTTL, g.place, nil
			if place >= 0 {
				queuedAt, queuedRan, unanswered = sent, g.at, false
			}
		case ctx.Err() != nil:
			return nil, fmt.Errorf("rediskit: acquire %q: %w", key, ctx.Err())
		case actx.Err() != nil:
			if lastErr == nil {
				lastErr = fmt.Errorf("no reply within the wait of %v", timeout)
			}
		case errors.Is(err, errLateReply) || transient(err):
			lastErr = err
		default:
			return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
		}
		left := timeout - time.Since(start)
		if left <= 0 {
			return nil, l.notObtained(key, start, lastErr)
		}
		// The head polls the lock as a lone waiter would; the others only
		// keep their place, and are woken when their turn comes.
		sleep := queueBeat
		if place == 0 {
			sleep = min(sleep, l.cfg.backoff.Next(retry))
			if holderTTL > 0 {
				sleep = min(sleep, holderTTL)
			}
		}
		sleep = min(sleep, left)
		if w != nil && !subscribed {
			// Subscribe, then retry at once unless the channel's
			// subscription was confirmed already: a wake-up published
			// before the subscription reached Redis went to nobody, and a
			// release that met the waiter at the head of the queue then
			// left the lock free, with the waiter still at the head;
			// behind the head at the attempt, it would otherwise sleep
			// queueBeat for nothing. Waiting for the confirmation is
			// bounded by the sleep it replaces, and confirmWait.
			wctx, cancel := context.WithTimeout(actx, sleep)
			ok, joined := n.attach(wctx, w, names.companion+":"+n.id, true, true)
			cancel()
			subscribed = ok
			if ok && !joined {
				continue
			}
		}
		var changed <-chan struct{}
		began := time.Now()
		if place == 0 {
			if sleep >= trackSleep {
				kt.arm()
			}
			changed = kt.changed(ctx, sleep)
		} else {
			kt.stop()
			kt.armed = false
		}
		confirming := changed == nil && unconfirmed != nil
		if confirming {
			changed = unconfirmed
		}
		woken, fired, err := pause(ctx, max(sleep-time.Since(began), 0), w, changed)
		if confirming && fired {
			// Subscribed now, the waiter looks: a release since its
			// attempt may have left the lock free for it, and told
			// nobody.
			fired, woken = false, true
		}
		if err == nil && fired && !woken && w != nil && n.inRelease(names.key) {
			// A release of this Locker's changed the key: it may be
			// handing the lock over to this waiter, which then needs no
			// attempt of its own.
			woken, _, err = pause(ctx, max(sleep-time.Since(began), 0), w, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
		}
		if place == 0 {
			kt.after(woken || fired, fired)
		}
		if w != nil && n.moved(w) {
			// The channel's slot moved: subscribe again on its new node.
			n.detach(w)
			subscribed = false
		}
	}
}

// acquired returns the Lock that a grant handed over to the waiter's entry
// stands for: it holds the entry's token, set for setFor (see Lock).
func (l *Locker) acquired(key string, names *lockNames, token string, ttl, setFor time.Duration, g grant, start time.Time) *Lock {
	lk := &Lock{l: l, key: key, ttl: ttl, fence: g.fence, validUntil: g.validUntil, setFor: setFor}
	lk.args.init(names, token, ttl, l.store.notifier(), "")
	l.store.notifier().held(names.key, token, g.validUntil, "")
	l.cfg.emit(&l.stats, Event{Kind: EventAcquired, Key: key, Wait: time.Since(start)})
	return lk
}
