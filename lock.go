package rediskit

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/redis/go-redis/v9"
)

// Locker hands out distributed locks kept in Redis. A lock is a key holding
// a random token, set only if absent and with a millisecond expiry, so it is
// compatible with the plain SET NX locks of other programs: theirs exclude
// ours and ours exclude theirs.
//
// A Locker is safe for concurrent use by multiple goroutines. It must not be
// copied after first use. It does not own the client: closing the client is
// the caller's business.
type Locker struct {
	store store // nil for a Locker not made by a constructor
	cfg   config
	stats counters
}

// NewLocker returns a Locker that keeps its locks in client, which may be
// any go-redis client: single node, Sentinel, Ring or Cluster. With a nil
// client or an invalid option, NewLocker does not panic; every method of the
// Locker returns an error wrapping [ErrInvalidArgument].
func NewLocker(client redis.UniversalClient, opts ...LockerOption) *Locker {
	l := &Locker{store: newSingle(client), cfg: newLockerConfig(opts)}
	if l.cfg.err == nil && isNilClient(client) {
		l.cfg.err = fmt.Errorf("nil client: %w", ErrInvalidArgument)
	}
	return l
}

// Close ends the Locker's pub/sub subscription, which it opens the first
// time an acquisition has to wait (a key's channel stays subscribed 30
// seconds after its last waiter left, and the connection closes 30 seconds
// after its last channel), and its key-tracking connections (see the package
// documentation), and waits for their goroutines to exit. It also waits for
// the Redis calls whose callers stopped waiting for them (their context
// ended first), which end within the client's own timeouts: a call whose
// reply comes after its caller gave up is settled then, for instance a lock
// nobody will use is released. Acquisitions waiting at the time, and later
// ones, go on with backoff alone, and their calls are no longer cut short
// by their context; locks already held are not affected. Close does not
// close the client. It always returns nil.
func (l *Locker) Close() error {
	if l != nil && l.store != nil {
		l.store.close()
	}
	return nil
}

// Stats returns the Locker's counters.
func (l *Locker) Stats() LockStats {
	return LockStats{
		Acquired:    l.stats.get(EventAcquired),
		Contended:   l.stats.get(EventContended),
		NotObtained: l.stats.get(EventNotObtained),
		Lost:        l.stats.get(EventLost),
		Released:    l.stats.get(EventReleased),
	}
}

// TryAcquire makes one attempt to lock key for ttl, in one round trip, and
// returns at once. It returns an error wrapping [ErrNotObtained] if another
// owner holds the key, or if acquisitions wait for it (the lock is theirs
// first, in the order they came: see [Locker.AcquireWithTimeout]), or if
// Redis granted the lock so late that its
// validity (ttl from when the request was sent, less the drift allowance
// of 1% of ttl plus 2 ms) had run out, in which case the grant is released;
// [ErrInvalidArgument] for an empty key or a ttl below [MinLockTTL]; or the
// context's or Redis's error. It returns within ctx's deadline even when
// Redis does not answer (see "Guarantees and failure modes" in the package
// documentation).
func (l *Locker) TryAcquire(ctx context.Context, key string, ttl time.Duration) (*Lock, error) {
	return l.acquire(ctx, key, ttl, 0, false)
}

// AcquireWithTimeout tries to lock key for ttl until it succeeds or timeout
// runs out. On one Redis (not a Redlock), a waiting acquisition joins the
// key's queue in Redis: acquisitions of every process get a free lock in
// the order they came, and a release wakes the head of the queue alone, on
// its Locker's channel (one subscription per Locker, see [Locker.Close]),
// or hands the lock over to it, so that it holds the lock without an
// attempt of its own (the release script gives it its token, its TTL and a
// new fence). A lock handed over is valid from the send time of the
// release, when the release was made by the same Locker; a lock handed over
// by another process is set for 2 s at most, so that a waiter that died
// does not keep it long, and, if ttl is longer, the waiter confirms it for
// ttl with an attempt (one round trip), which finds the lock handed over,
// renews it, and issues a new fence; it is valid from that attempt's send
// time. ([Locker.WithLock], whose watchdog guards a shorter validity, skips
// that round trip.) The
// acquisition comes back to Redis at least every 500 ms to keep its place,
// and leaves the queue when it returns without the lock. A Redlock's
// waiters keep no queue: a release wakes the longest-waiting goroutine of
// each process, which retries. Behind a lock held by this Locker, the
// acquisition waits in process, without a request, until the holder's
// release gives it the lock (if no waiter of another process came
// earlier) or the lock leaves the Locker (it then takes its place in the
// queue, by when it came), and for 500 ms at most, or until the holder's
// lock may have expired, before it looks for itself, keeping its place.
//
// It also retries when the Locker's [Backoff] says, never sleeping past the
// holder's remaining TTL (which each failed attempt returns) nor past the
// timeout, where it makes a last attempt; so a lost message, a holder that
// expires instead of releasing, or a release by another program (which
// publishes nothing) costs at most one backoff sleep, never more than the
// backoff's cap (512 ms by default), plus a round trip. Redis errors that
// go away by themselves (a broken or refused connection, a timeout,
// LOADING, TRYAGAIN, CLUSTERDOWN, a failover) are retried the same way
// until the timeout. A timeout of 0 makes one attempt, like TryAcquire.
//
// It returns within the timeout or ctx's deadline, whichever is first, plus
// a few milliseconds, even when Redis does not answer. It returns an error
// wrapping [ErrNotObtained] when the timeout runs out (wrapping also the
// last Redis error, if attempts failed), the context's error when ctx ends
// first (so errors.Is(err, context.Canceled) holds), [ErrInvalidArgument]
// for an empty key, a ttl below [MinLockTTL] or a negative timeout, or
// Redis's error when it is not one that a wait can outlast. On failure it
// leaves nothing in Redis: an attempt whose reply did not come is released
// by its token in the background, looking again for about 4.5 seconds in
// case the request is still on its way; a request held up in the network
// longer than that takes the lock for its TTL, which nobody then holds.
func (l *Locker) AcquireWithTimeout(ctx context.Context, key string, ttl, timeout time.Duration) (*Lock, error) {
	if timeout < 0 {
		return nil, fmt.Errorf("rediskit: acquire %q: negative timeout %v: %w", key, timeout, ErrInvalidArgument)
	}
	return l.acquire(ctx, key, ttl, timeout, false)
}

// lastAttemptGrace is how long the last attempt of a wait, made when the
// timeout runs out, may take past it.
const lastAttemptGrace = 20 * time.Millisecond

// acquire takes the lock on key for ttl, waiting up to timeout. watched
// says that the caller keeps the Lock under a watchdog, which ends the
// holder's context when the Lock's validity runs out unless a refresh
// extended it, and refreshes it as a lock of its setFor would be
// (WithLock): the wait may then return a lock handed over by another
// process for the claim bound only, without confirming it first.
func (l *Locker) acquire(ctx context.Context, key string, ttl, timeout time.Duration, watched bool) (*Lock, error) {
	if err := l.validate("acquire", key, ttl); err != nil {
		return nil, err
	}
	names := newLockNames(l.cfg.prefix+key, l.store.queues())
	companion := names.companion
	start := time.Now()
	actx := ctx // what each attempt runs on
	var w *waiter
	if timeout > 0 {
		// Each attempt is bounded by the wait, so that an attempt Redis
		// does not answer cannot hold the caller past it.
		end := start.Add(timeout + lastAttemptGrace)
		var cancel context.CancelFunc
		if dl, ok := ctx.Deadline(); ctx.Done() == nil || (ok && !dl.After(end)) {
			actx, cancel = context.WithDeadline(ctx, end)
		} else {
			// ctx can be cancelled before the wait ends: the wait's end
			// comes as a cancellation, not a deadline, so that no attempt
			// runs inline on a client that honours deadlines, where a
			// cancellation would go unnoticed until the deadline.
			actx, cancel = context.WithCancel(ctx)
			defer time.AfterFunc(time.Until(end), cancel).Stop()
		}
		defer cancel()
		if l.store.queues() {
			return l.acquireQueued(ctx, actx, key, &names, ttl, timeout, watched)
		}
		// Behind waiters of this process, wait for a turn instead of
		// snatching the lock from the one a release has just woken.
		w = l.store.notifier().queue(companion)
	}
	woken := false // a wake-up was taken and no attempt has used it yet
	defer func() {
		if w != nil {
			// A wake-up this call cannot use any more is the next
			// waiter's: the lock may be free.
			l.store.notifier().unwatch(w, woken)
		}
	}()
	var lastErr error // the last attempt's error, if a wait is riding it out
	kt := keyTracking{t: l.store.tracker(), rkey: names.key}
	defer kt.stop()
	for retry := 1; ; retry++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
		}
		holderTTL := time.Duration(-1) // unknown until an attempt says
		if retry > 1 || w == nil {
			// A fresh token, and Lock, for every attempt: an attempt that
			// failed may be undone later, in the background, by its token,
			// and must not undo this one's lock.
			token, err := newToken()
			if err != nil {
				return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
			}
			lk := &Lock{l: l, key: key, ttl: ttl}
			lk.args.init(&names, token, ttl, l.store.notifier(), "")
			g, err := l.store.obtain(actx, &lk.args, ttl)
			if err == nil {
				woken = false // the attempt saw the lock as it is
			}
			switch {
			case err == nil && g.held:
				if w != nil {
					l.store.notifier().took(w)
					woken = false
				}
				lk.fence, lk.validUntil = g.fence, g.validUntil
				l.cfg.emit(&l.stats, Event{Kind: EventAcquired, Key: key, Wait: time.Since(start)})
				return lk, nil
			case err == nil:
				l.cfg.emit(&l.stats, Event{Kind: EventContended, Key: key})
				holderTTL, lastErr = g.holderTTL, nil
			case ctx.Err() != nil:
				return nil, fmt.Errorf("rediskit: acquire %q: %w", key, ctx.Err())
			case timeout == 0:
				return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
			case actx.Err() != nil:
				// The wait's own bound, not the caller's deadline: no
				// context error may leak into what we say. An earlier
				// attempt's error says more than "no reply" does.
				if lastErr == nil {
					lastErr = fmt.Errorf("no reply within the wait of %v", timeout)
				}
			case errors.Is(err, errLateReply) || transient(err):
				lastErr = err
				if woken {
					// The lock may be free, and this call will sleep its
					// backoff before trying again: the next waiter tries
					// now.
					l.store.notifier().passOn(w)
					woken = false
				}
			default:
				return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
			}
		}
		left := timeout - time.Since(start)
		if left <= 0 {
			return nil, l.notObtained(key, start, lastErr)
		}
		sleep := l.cfg.backoff.Next(retry)
		if holderTTL > 0 && sleep > holderTTL {
			sleep = holderTTL
		}
		if sleep > left {
			sleep = left
		}
		if w == nil {
			// Subscribe, then retry at once unless another waiter
			// subscribed first: a release between the failed attempt and
			// the subscription published to nobody. Waiting for the
			// subscription's confirmation is bounded by the sleep it
			// replaces, so a server slow to confirm (or refusing) costs no
			// more than the backoff.
			wctx, cancel := context.WithTimeout(actx, sleep)
			var joined bool
			w, joined = l.store.notifier().watch(wctx, companion)
			cancel()
			if w != nil && !joined {
				continue
			}
		}
		var err error
		if woken, err = l.pause(ctx, sleep, start.Add(timeout), w, &kt); err != nil {
			return nil, fmt.Errorf("rediskit: acquire %q: %w", key, err)
		}
		if w != nil && woken && l.store.notifier().moved(w) {
			// Not a release: the channel's slot moved. Try, then watch
			// it again on its new node.
			l.store.notifier().unwatch(w, false)
			w, woken = nil, false
		}
	}
}

// notObtained reports a wait for key, begun at start, that ran out;
// lastErr is the last attempt's error, if the wait was riding it out.
func (l *Locker) notObtained(key string, start time.Time, lastErr error) error {
	l.cfg.emit(&l.stats, Event{Kind: EventNotObtained, Key: key, Wait: time.Since(start), Err: lastErr})
	if lastErr != nil {
		return fmt.Errorf("rediskit: acquire %q: %w, last error: %w", key, ErrNotObtained, lastErr)
	}
	return fmt.Errorf("rediskit: acquire %q: %w", key, ErrNotObtained)
}

// validate checks the Locker and the arguments every acquisition shares.
func (l *Locker) validate(op, key string, ttl time.Duration) error {
	if l == nil {
		return fmt.Errorf("rediskit: %s %q: nil Locker: %w", op, key, ErrInvalidArgument)
	}
	if l.cfg.err != nil {
		return fmt.Errorf("rediskit: %s %q: %w", op, key, l.cfg.err)
	}
	if l.store == nil {
		return fmt.Errorf("rediskit: %s %q: Locker not made by NewLocker or NewRedlock: %w", op, key, ErrInvalidArgument)
	}
	if key == "" {
		return fmt.Errorf("rediskit: %s: empty key: %w", op, ErrInvalidArgument)
	}
	return checkLockTTL(op, key, ttl, l.store.minTTL())
}

// MinLockTTL is the shortest TTL a lock may have: the drift allowance
// (1% of the TTL plus 2 ms) must leave the holder a useful validity.
// [NewRedlock] locks need more; see its documentation.
const MinLockTTL = 10 * time.Millisecond

func checkLockTTL(op, key string, ttl, min time.Duration) error {
	if ttl < min {
		return fmt.Errorf("rediskit: %s %q: ttl %v below %v: %w", op, key, ttl, min, ErrInvalidArgument)
	}
	return nil
}

// Lock is a lock obtained from a [Locker]. Its methods check the token in
// Redis, so a Lock that expired and was taken by another owner can never
// release or extend the new owner's lock.
//
// A Lock is safe for concurrent use by multiple goroutines.
type Lock struct {
	l          *Locker
	key        string        // as the caller gave it
	args       lockArgs      // its names and token, as its scripts take them
	ttl        time.Duration // as acquired
	fence      int64
	validUntil time.Time // when the lock is sure to be held until, as of acquisition
	// setFor is the TTL validUntil counts: ttl, or the claim bound for a
	// lock handed over by another process that WithLock took unconfirmed.
	setFor time.Duration
}

// Key returns the key the lock was taken on, without the key prefix.
func (lk *Lock) Key() string {
	if lk == nil {
		return ""
	}
	return lk.key
}

// Token returns the lock's random token, the value stored under its key:
// for logs, and for a process in another language that is handed the lock
// and releases it with the same compare-and-delete (GET, then DEL if the
// value is the token).
func (lk *Lock) Token() string {
	if lk == nil {
		return ""
	}
	return lk.args.token
}

// Fence returns the lock's fencing token: a number that is strictly greater
// than the fence of every earlier holder of the same key, including holders
// whose locks expired. Pass it to the storage the lock protects, and have
// that storage reject writes carrying a fence lower than one it has seen, so
// that a holder paused past its TTL cannot overwrite a newer holder's work.
func (lk *Lock) Fence() int64 {
	if lk == nil {
		return 0
	}
	return lk.fence
}

// Release deletes the lock if it is still held by this token, in one round
// trip. It returns an error wrapping [ErrLockNotHeld] if the lock expired or
// was released already; another owner's lock is never deleted.
func (lk *Lock) Release(ctx context.Context) error {
	if err := lk.check("release"); err != nil {
		return err
	}
	held, err := lk.l.store.release(ctx, &lk.args, lk.ttl)
	if err != nil {
		return fmt.Errorf("rediskit: release %q: %w", lk.key, err)
	}
	if !held {
		return fmt.Errorf("rediskit: release %q: %w", lk.key, ErrLockNotHeld)
	}
	lk.l.cfg.emit(&lk.l.stats, Event{Kind: EventReleased, Key: lk.key})
	return nil
}

// Refresh sets the lock to expire ttl from now, if it is still held by this
// token. It returns an error wrapping [ErrLockNotHeld] if the lock was lost
// (it never takes a lost lock again), or [ErrInvalidArgument] for a ttl below
// [MinLockTTL] ([MinRedlockTTL] for Redlock).
func (lk *Lock) Refresh(ctx context.Context, ttl time.Duration) error {
	if err := lk.check("refresh"); err != nil {
		return err
	}
	if err := checkLockTTL("refresh", lk.key, ttl, lk.l.store.minTTL()); err != nil {
		return err
	}
	held, err := lk.l.store.refresh(ctx, &lk.args, ttl)
	if err != nil {
		return fmt.Errorf("rediskit: refresh %q: %w", lk.key, err)
	}
	if !held {
		return fmt.Errorf("rediskit: refresh %q: %w", lk.key, ErrLockNotHeld)
	}
	return nil
}

// TTL returns the lock's remaining time to live, if it is still held by this
// token, or an error wrapping [ErrLockNotHeld]. A lock whose expiry was
// removed behind the package's back reports -1ns.
func (lk *Lock) TTL(ctx context.Context) (time.Duration, error) {
	if err := lk.check("ttl"); err != nil {
		return 0, err
	}
	ttl, held, err := lk.l.store.pttl(ctx, &lk.args, lk.ttl)
	if err != nil {
		return 0, fmt.Errorf("rediskit: ttl %q: %w", lk.key, err)
	}
	if !held {
		return 0, fmt.Errorf("rediskit: ttl %q: %w", lk.key, ErrLockNotHeld)
	}
	return ttl, nil
}

// check reports a nil Lock, or a zero one not obtained from a Locker.
func (lk *Lock) check(op string) error {
	if lk == nil || lk.l == nil || lk.args.token == "" {
		return fmt.Errorf("rediskit: %s: nil or zero Lock: %w", op, ErrInvalidArgument)
	}
	if err := lk.l.cfg.err; err != nil {
		return fmt.Errorf("rediskit: %s %q: %w", op, lk.key, err)
	}
	return nil
}

// validUntil returns the time until which a lock whose TTL was set to ttl
// by a request sent at sent is sure to be held: the key cannot have expired
// earlier, less an allowance for the client's and the server's clocks
// drifting apart (1% of ttl, plus 2 ms), as Redlock computes its validity.
func validUntil(sent time.Time, ttl time.Duration) time.Time {
	return sent.Add(validity(ttl))
}

// validity is how long a lock whose TTL was set to ttl is sure to be held
// from when the request was sent: ttl less the drift allowance.
func validity(ttl time.Duration) time.Duration { return ttl - ttl/100 - 2*time.Millisecond }

// newToken returns 16 random bytes from crypto/rand as 22 URL-safe
// characters.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// pause sleeps between a waiting acquisition's attempts: for d, like
// pause, when w is nil or its channel's oldest waiter; behind an older
// waiter of this process, which polls Redis for the lock on the process's
// behalf, until w is woken or its turn comes, and then for d, but never
// past until. The oldest waiter also wakes when kt says the key changed.
func (l *Locker) pause(ctx context.Context, d time.Duration, until time.Time, w *waiter, kt *keyTracking) (woken bool, err error) {
	n := l.store.notifier()
	if w != nil && n.behind(w) {
		woken, turn, err := n.awaitTurn(ctx, w, until)
		if err != nil || !turn {
			return woken, err
		}
		// The oldest waiter left. Unless it took the lock, poll when it
		// would have, so that a release made during its sleep is noticed
		// within that sleep.
		if due := n.pollDue(w); !due.IsZero() {
			d = min(d, max(time.Until(due), 0))
		}
		d = min(d, time.Until(until))
	}
	if w != nil {
		n.polling(w, time.Now().Add(d))
	}
	if d >= trackSleep {
		kt.arm()
	}
	start := time.Now()
	changed := kt.changed(ctx, d)
	woken, fired, err := pause(ctx, max(d-time.Since(start), 0), w, changed)
	kt.after(woken || fired, fired)
	return woken, err
}

// trackSleep is the sleep from which a waiter watches its key through
// Redis's tracking at once: one read on the tracked connection is cheap
// next to a sleep that long.
const trackSleep = 50 * time.Millisecond

// keyTracking is how a waiting acquisition hears, through Redis's
// tracking (see tracker), that its key changed whoever changed it: a
// release by a program that publishes no wake-up. It watches the key once
// a sleep has ended with no wake-up, or for a sleep of trackSleep or more,
// so that the short waits the Locker's own releases end cost no tracking
// read.
type keyTracking struct {
	t     *tracker
	rkey  string
	armed bool
	w     *keyWatch
}

// changed returns the channel closed when the key changes, or nil. Setting
// up a watch is bounded by d, the sleep it may cut short.
func (kt *keyTracking) changed(ctx context.Context, d time.Duration) <-chan struct{} {
	if !kt.armed {
		return nil
	}
	if kt.w == nil {
		wctx, cancel := context.WithTimeout(ctx, d)
		kt.w = kt.t.watch(wctx, kt.rkey)
		cancel()
		if kt.w == nil {
			kt.armed = false // unavailable: not asked again
			return nil
		}
	}
	return kt.w.changed
}

// after takes note of how a sleep ended: woken (by either means), or
// fired (Redis's tracking said the key changed: its watch is spent).
func (kt *keyTracking) after(woken, fired bool) {
	switch {
	case fired:
		kt.stop()
	case !woken:
		kt.arm()
	}
}

// arm makes the next sleeps watch the key, where the server can track it.
func (kt *keyTracking) arm() {
	if kt.t != nil && !kt.t.unavailable() {
		kt.armed = true
	}
}

// stop ends the watch, if any.
func (kt *keyTracking) stop() {
	if kt.w != nil {
		kt.t.unwatch(kt.w)
		kt.w = nil
	}
}

// pause sleeps for d, until w is woken (if w is not nil), until changed is
// closed (if not nil), or until ctx ends. It reports whether it took a
// wake-up, whether changed was closed, and ctx's error; when several happen
// at once, it may report several.
func pause(ctx context.Context, d time.Duration, w *waiter, changed <-chan struct{}) (woken, fired bool, err error) {
	var wake chan struct{} // nil: never ready
	if w != nil {
		wake = w.wake
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false, ctx.Err()
	case <-t.C:
	case <-wake:
		woken = true
	case <-changed:
		fired = true
	}
	return woken, fired, ctx.Err()
}

// isNilClient reports whether client is nil, including a nil pointer of a
// concrete client type, on which any call would panic.
func isNilClient(client redis.UniversalClient) bool {
	if client == nil {
		return true
	}
	v := reflect.ValueOf(client)
	return v.Kind() == reflect.Pointer && v.IsNil()
}
