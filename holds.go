package rediskit

import (
	"slices"
	"strconv"
	"time"
)

// Waiting in process. While a Locker holds a lock, the goroutines of the
// same Locker that ask for it wait in process, behind it, instead of
// joining the fleet's queue in Redis: they make no request until their
// turn. The holder's release names the oldest of them (maxNamed at most)
// with their ages, and the release script gives the lock to the oldest,
// unless a waiter in the fleet's queue came earlier, measured in the
// server's time (its arrival there, against the release's run less the
// waiter's age); then the lock goes to that one, and the named waiters
// join the queue at the places their ages give them. So a contended
// hand-off between goroutines of one process costs the release's round
// trip alone, and the fleet's arrival order holds (a local waiter's
// arrival is estimated late by at most the release's trip to Redis).
//
// A local waiter makes attempts of its own, as any waiter does, once the
// lock leaves the Locker (the release says so, failed, or was never
// sent), or when the holder's lock may have expired without a release (its
// validity, as of its acquisition, ran out), or after queueBeat, or at the
// end of its wait: so a holder stuck past its TTL, a release whose reply
// is slow, or a lock another program deleted, costs its local waiters
// queueBeat at most. Its first attempt carries its age, and the ages of the
// waiters still in process behind the same hold, measured at one instant:
// the first such attempt to reach Redis queues them all, at the places
// their arrivals give them and in their order. It queues the others only
// while the lock they waited behind still holds the key, so that an
// attempt reaching Redis late does not queue again a waiter that has had
// the lock since; and once it is done, the waiters it carried that gave
// up meanwhile leave the queue again. A lock handed over to the entry of a
// waiter of this Locker that gave up, which a script reaching Redis later
// still may have queued again, is released as soon as the Locker hears of
// it: by its own release's reply, or by the message on its channel.

// maxNamed bounds the local waiters a release names: if the lock leaves,
// those behind them join the fleet's queue by their own attempts, at the
// places their arrivals give them, as each estimates it (late by its
// attempt's trip: arrivals closer together than that may swap), and the
// lock may go, that once, to a waiter of another process that came after
// them.
const maxNamed = 16

// hold is a lock a Locker holds, as its local waiters see it.
type hold struct {
	token string    // the holding Lock's
	until time.Time // until when it is sure to be held, as of its acquisition
	// waiters wait in process for it, oldest first.
	waiters []*waiter
}

// held notes that a Lock of this Locker holds the lock on key under
// token, surely until until, taken by the waiter of entry, if not "": it
// waits in process no more, so no fellow's attempt carries it.
func (n *notifier) held(key, token string, until time.Time, entry string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.heldLocked(key, token, until)
	if entry == "" {
		return
	}
	if w := n.entries[entry]; w != nil {
		n.unqueueLocked(w)
	}
}

func (n *notifier) heldLocked(key, token string, until time.Time) {
	if n.closed {
		return
	}
	h, ok := n.holds[key]
	if !ok && len(n.holds) >= n.sweepAt {
		n.sweepHolds()
	}
	h.token, h.until = token, until
	n.holds[key] = h
}

// sweepHolds forgets the locks that nobody waits for in process and whose
// validity ran out: lost, or left to expire. The caller holds n.mu.
func (n *notifier) sweepHolds() {
	now := time.Now()
	for key, h := range n.holds {
		if len(h.waiters) == 0 && !now.Before(h.until) {
			delete(n.holds, key)
		}
	}
	n.sweepAt = max(64, 2*len(n.holds))
}

// waitLocal makes w, a waiter for the lock on key, wait in process if this
// Locker holds the lock, and reports whether it does.
func (n *notifier) waitLocal(key string, w *waiter) bool {
	if w == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.holds[key]
	if !ok || n.closed {
		return false
	}
	if !time.Now().Before(h.until) && len(h.waiters) == 0 {
		delete(n.holds, key) // lost, or released by a call that never ended
		return false
	}
	w.holdKey, w.arrived, w.local = key, time.Now(), true
	h.waiters = append(h.waiters, w)
	n.holds[key] = h
	return true
}

// localUntil reports whether w still waits in process, and until when the
// lock it waits for is sure to be held.
func (n *notifier) localUntil(w *waiter) (until time.Time, local bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !w.local {
		return time.Time{}, false
	}
	return n.holds[w.holdKey].until, true
}

// endLocal makes w, waiting in process, make attempts of its own from now
// on, even while a release in progress names it: an attempt that finds the
// lock handed over to w's entry takes it, and a release that finds w's
// entry queued takes it out as it hands the lock over to w. Until its
// first attempt is done (joined), w stays among the hold's waiters, so
// that the first attempt of any of them queues them all, in their order.
func (n *notifier) endLocal(w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w.local {
		w.local, w.joining = false, true
	}
}

// joined notes that w's first attempt after it waited in process is done,
// that attempt having carried fellows (see group). It returns the entries
// of the fellows that gave up before it was done: the attempt may have put
// them in the queue after they left it, and the caller takes them out
// again. (One that gives up later takes its entry out itself, in a script
// that runs after the attempt's, unless the attempt had no reply and
// reaches Redis later still: then its entry may stay in the queue for its
// life, and a lock handed over to it goes on as soon as this Locker hears
// of it: see departLocked.)
func (n *notifier) joined(w *waiter, fellows []*waiter) (gone []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unqueueLocked(w)
	for _, f := range fellows {
		if f.failed {
			gone = append(gone, f.entry)
		}
	}
	return gone
}

// group returns the acquire script's arguments for w's first attempt after
// it waited in process: the token of the lock it waited behind, as far as
// the Locker knows, then w's entry and its fellows', the oldest waiters
// still among the same hold's (maxNamed in all), with their ages in
// microseconds, measured at one instant, so that whichever attempt comes
// first queues them in the order they came. It returns the fellows too.
func (n *notifier) group(w *waiter) (args []any, fellows []*waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	list := []*waiter{w}
	h, ok := n.holds[w.holdKey]
	if ok && w.joining {
		for _, o := range h.waiters {
			if o != w && len(list) < maxNamed {
				list = append(list, o)
			}
		}
	}
	return append([]any{h.token}, agePairs(list, w)...), list[1:]
}

// unqueueLocked takes w off its hold's waiters. The caller holds n.mu.
func (n *notifier) unqueueLocked(w *waiter) {
	if !w.local && !w.joining {
		return
	}
	w.local, w.joining = false, false
	if h, ok := n.holds[w.holdKey]; ok {
		h.waiters = slices.DeleteFunc(h.waiters, func(o *waiter) bool { return o == w })
		n.holds[w.holdKey] = h
	}
}

// named returns the release script's arguments naming the oldest local
// waiters for the lock on key, if the Lock releasing it under token holds
// it: each one's entry and age in microseconds.
func (n *notifier) named(key, token string) (args []any, named []*waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.holds[key]
	if h.token != token || len(h.waiters) == 0 {
		return nil, nil
	}
	named = slices.Clone(h.waiters[:min(len(h.waiters), maxNamed)])
	return agePairs(named, nil), named
}

// agePairs returns the script arguments for the waiters ws: each one's
// entry and age in microseconds, measured at one instant. Their entries
// may be queued by others from then on, but caller's, if it is one of
// them: it makes the attempt, and leaves as it gives up. The caller holds
// n.mu.
func agePairs(ws []*waiter, caller *waiter) []any {
	now := time.Now()
	args := make([]any, 0, 2*len(ws))
	for _, w := range ws {
		w.mayBeQueued = w.mayBeQueued || w != caller
		args = append(args, w.entry, strconv.FormatInt(now.Sub(w.arrived).Microseconds(), 10))
	}
	return args
}

// kickLocked ends the wait in process of h's waiters, which make attempts
// of their own. The caller holds n.mu, and has taken h out of n.holds.
func (n *notifier) kickLocked(h hold) {
	for _, w := range h.waiters {
		w.local, w.joining = false, false
		w.signal()
	}
}

// released takes note of the end of a release of the lock on key under
// token that named the local waiters named: when to is not "" and its
// waiter is there, the lock was handed over to the entry to of this
// Locker, which holds it from now on until g.validUntil, and g is
// delivered to its waiter; otherwise the lock left the Locker, or may
// have, and its local waiters make attempts of their own. Only a release
// of the Locker's hold changes the hold: a late reply to an earlier one
// does not bring back a lock that has moved on since.
//
// It returns the entries of the named waiters that left without the lock
// before the reply came: the release may have handed the lock over to one
// of them, or put them in the queue after they left it, and the caller
// takes them out again. (A waiter the release did not name was in the
// queue when the script ran: leaving, it takes its entry out and releases
// a lock handed over to it, in a script that runs after this one.) A named
// waiter that left with a lock took this one, by an attempt that found it
// handed over.
func (n *notifier) released(key, token string, named []*waiter, to string, g grant) (gone []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, w := range named {
		if w.failed {
			gone = append(gone, w.entry)
		}
	}
	if _, ok := n.departed[to]; to != "" && ok {
		// Handed over to a waiter that gave up, its entry queued again
		// by a script that reached Redis late.
		delete(n.departed, to)
		if !slices.Contains(gone, to) {
			gone = append(gone, to)
		}
	}
	h, ok := n.holds[key]
	mine := ok && h.token == token // the Locker's hold is the releaser's
	if w := n.entries[to]; to != "" && w != nil {
		if mine || !ok {
			n.heldLocked(key, entryToken(to), g.validUntil)
		}
		n.unqueueLocked(w)
		handed := g // only here on the heap: g is on every release's path
		w.handed = &handed
		w.signal()
		return gone
	}
	// The lock left the Locker, may have, or went to a waiter that left:
	// nobody here holds it.
	if !mine {
		return gone
	}
	delete(n.holds, key)
	n.kickLocked(h)
	return gone
}

// departure is a waiter that gave up while a release or a fellow's
// attempt may have put its entry in the queue: the lock's key, the entry,
// and when it gave up.
type departure struct {
	key, entry string
	at         time.Time
}

// departedFor is how long a departure is remembered: a script carrying
// its entry that reaches Redis later than that is not expected; if one
// does, a lock handed over to the entry ends within the claim bound, or
// its TTL if this Locker's release handed it over.
const departedFor = time.Minute

// departLocked remembers w, which gave up while its entry may have been
// queued by others, and forgets the departures older than departedFor,
// sweeping them as the departures double (so that many waiters giving up
// cost each a constant time). A waiter that gave up never holds a lock
// under its entry's token, so one handed over to it may be released. The
// caller holds n.mu.
func (n *notifier) departLocked(w *waiter) {
	now := time.Now()
	if len(n.departed) >= n.departSweepAt {
		for e, d := range n.departed {
			if now.Sub(d.at) >= departedFor {
				delete(n.departed, e)
			}
		}
		n.departSweepAt = max(64, 2*len(n.departed))
	}
	n.departed[w.entry] = departure{w.holdKey, w.entry, now}
}

// mustLeave reports whether w, which made no attempt, must leave the queue
// as it gives up: a release named it, or a fellow waiter's attempt carried
// its age, and may have put its entry in the queue, or a release handed
// the lock over to it. Call it after deregister.
func (n *notifier) mustLeave(w *waiter) bool {
	if w == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return w.mayBeQueued || w.handed != nil
}
