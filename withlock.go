package rediskit

import (
	"context"
	"errors"
	"fmt"

	"time"
)

// LockOption configures one call of [Locker.WithLock].
type LockOption interface {
	applyLock(*lockConfig)
}

type lockConfig struct {
	ttl  time.Duration
	wait time.Duration
	err  error
}

// WithLockTTL returns a LockOption that sets the TTL of the lock WithLock
// takes. The lock is refreshed every third of it while fn runs, so the TTL
// bounds how long the lock outlives a crashed holder, not how long fn may
// run. The default is 10 seconds; a ttl below 10 milliseconds, too short to
// refresh across the clock-drift allowance, is invalid.
func WithLockTTL(ttl time.Duration) LockOption { return lockTTLOption(ttl) }

type lockTTLOption time.Duration

func (o lockTTLOption) applyLock(c *lockConfig) {
	if time.Duration(o) < 10*time.Millisecond {
		c.err = fmt.Errorf("option WithLockTTL(%v): %w", time.Duration(o), ErrInvalidArgument)
		return
	}
	c.ttl = time.Duration(o)
}
func (o lockTTLOption) String() string { return fmt.Sprintf("WithLockTTL(%v)", time.Duration(o)) }

// WithLockWait returns a LockOption that makes WithLock wait up to timeout
// for the lock, as [Locker.AcquireWithTimeout] does, instead of failing at
// once with [ErrNotObtained]. The default is 0, a single attempt; a negative
// timeout is invalid.
func WithLockWait(timeout time.Duration) LockOption { return lockWaitOption(timeout) }

type lockWaitOption time.Duration

func (o lockWaitOption) applyLock(c *lockConfig) {
	if o < 0 {
		c.err = fmt.Errorf("option WithLockWait(%v): %w", time.Duration(o), ErrInvalidArgument)
		return
	}
	c.wait = time.Duration(o)
}
func (o lockWaitOption) String() string { return fmt.Sprintf("WithLockWait(%v)", time.Duration(o)) }

// WithLock runs fn while holding the lock on key. It takes the lock with a
// single attempt (see [WithLockWait] to wait), refreshes it every third of
// its TTL while fn runs (see [WithLockTTL]), and releases it when fn returns
// or panics; in the latter case the panic continues after the release. The
// release uses a context that survives the cancellation of ctx, bounded by
// the lock's TTL.
//
// A lock handed over by another process's release (see
// [Locker.AcquireWithTimeout]) is set for 2 s at most. When the
// hand-over's message is what tells the waiter (Redis's key tracking may
// wake it first, and then it confirms as AcquireWithTimeout does),
// WithLock calls fn without the round trip that confirms the lock for its
// TTL, and the watchdog refreshes it as it would a lock of 2 s TTL, a
// third of the way, which extends it to its TTL; until a refresh succeeds,
// the lock's validity is those 2 s, counted from the waiter's last
// attempt.
//
// fn's context is a child of ctx. If a refresh finds the lock gone, or
// refreshes fail until the lock may have expired (a TTL after the last
// successful refresh, or the acquisition, was sent, less 1% of the TTL and
// 2 ms for the clocks' drift), fn's context is cancelled at once with a
// cause wrapping [ErrLockNotHeld] (see [context.Cause]), and WithLock's
// error wraps ErrLockNotHeld too.
//
// WithLock returns fn's error, joined with the error of losing or releasing
// the lock, if any. It returns an error wrapping [ErrNotObtained] if the lock
// is held by another owner, without calling fn, and [ErrInvalidArgument] for
// a nil fn, an empty key or an invalid option. No goroutine it starts
// outlives the call.
func (l *Locker) WithLock(ctx context.Context, key string, fn func(ctx context.Context) error, opts ...LockOption) (err error) {
	lc := lockConfig{ttl: 10 * time.Second}
	for _, o := range opts {
		if o != nil {
			o.applyLock(&lc)
		}
	}
	if lc.err != nil {
		return fmt.Errorf("rediskit: with lock %q: %w", key, lc.err)
	}
	if fn == nil {
		return fmt.Errorf("rediskit: with lock %q: nil func: %w", key, ErrInvalidArgument)
	}
	lk, err := l.acquire(ctx, key, lc.ttl, lc.wait, true)
	if err != nil {
		return err
	}

	fnCtx, cancel := context.WithCancelCause(ctx)
	w := startWatchdog(ctx, lk, lc.ttl, cancel)
	defer func() {
		lost := w.stop()
		cancel(nil)
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), lc.ttl)
		rerr := lk.Release(rctx)
		rcancel()
		switch {
		case lost != nil && errors.Is(rerr, ErrLockNotHeld):
			rerr = nil // already said, by lost
		case errors.Is(rerr, context.DeadlineExceeded) && ctx.Err() == nil:
			// The release's own bound, not the caller's deadline.
			rerr = fmt.Errorf("rediskit: release %q: no reply within %v; the lock expires by itself", key, lc.ttl)
		}
		err = errors.Join(err, lost, rerr)
	}()
	return fn(fnCtx)
}

// watchdog refreshes a lock every third of its TTL until stopped, and
// cancels the holder's context when the lock is lost.
type watchdog struct {
	cancel context.CancelFunc // ends the refresh context and the loop
	start  *time.Timer        // runs the loop, when the first refresh is due
	done   chan struct{}      // closed when the loop has returned
	lost   error
}

// startWatchdog has the loop run, on a goroutine of its own, from when
// the lock's first refresh is due: a lock released before that (the
// common case) costs a timer, not a goroutine.
func startWatchdog(ctx context.Context, lk *Lock, ttl time.Duration, cancelFn context.CancelCauseFunc) *watchdog {
	// Refreshes must go on when ctx is cancelled, until fn has returned and
	// the lock is released; they stop with the watchdog.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &watchdog{cancel: cancel, done: make(chan struct{})}
	w.start = time.AfterFunc(time.Until(firstRefresh(lk, ttl)), func() {
		defer close(w.done)
		w.lost = w.loop(rctx, lk, ttl, func(lost error) {
			// At once, before waiting for any refresh in flight.
			cancelFn(lost)
			lk.l.cfg.emit(&lk.l.stats, Event{Kind: EventLost, Key: lk.key, Err: lost})
		})
	})
	return w
}

// firstRefresh returns when a lock's first refresh is due: an interval
// after the acquisition was sent, not after its reply came (on a slow link
// the difference is what lets it land in time). A lock handed over by
// another process for the claim bound, shorter than ttl (see
// acquireQueued), is refreshed first as a lock of that TTL would be: a
// third of the way. The first refresh always comes before the lock's
// validity ends: a third of a TTL is less than its validity.
func firstRefresh(lk *Lock, ttl time.Duration) time.Time {
	first := ttl
	if lk.setFor > 0 && lk.setFor < ttl {
		first = lk.setFor
	}
	sent := lk.validUntil.Add(-validity(first))
	return sent.Add(first / 3)
}

// refreshRetry is the pause before retrying a refresh that failed without
// saying the lock is gone: soon, so that two passing errors cannot use up
// the lock's remaining validity, but not in a tight loop.
func refreshRetry(interval time.Duration) time.Duration {
	if d := interval / 4; d < 50*time.Millisecond {
		return d
	}
	return 50 * time.Millisecond
}

// maxRefreshes bounds the refreshes a watchdog has in flight: a slow one is
// not given up, since it may still confirm the lock, but one more starts
// beside it, on another connection, in case the first is stuck.
const maxRefreshes = 2

// refreshResult is what one refresh said, and when it was sent.
type refreshResult struct {
	sent time.Time
	err  error
}

// loop refreshes until ctx ends, and returns the error that lost the lock:
// a refresh that found it gone, or refreshes failing until the moment the
// lock may have expired. It calls lost with that error as soon as it knows.
//
// The expiry timer is what keeps the holder safe, so it must never wait
// behind Redis: refreshes run on goroutines of their own and report back,
// and the loop only ever waits on timers and channels.
func (w *watchdog) loop(ctx context.Context, lk *Lock, ttl time.Duration, lost func(error)) (err error) {
	interval := ttl / 3
	// The lock is certain to be held until ttl after the last successful
	// refresh (or the acquisition) was sent, less the clocks' drift.
	heldUntil := lk.validUntil
	expiry := time.NewTimer(time.Until(heldUntil))
	defer expiry.Stop()
	next := time.NewTimer(time.Until(firstRefresh(lk, ttl))) // the next refresh
	defer next.Stop()

	rctx, cancel := context.WithCancel(ctx) // every refresh's
	results := make(chan refreshResult, maxRefreshes)
	inflight := 0
	defer func() {
		if err != nil {
			lost(err)
		}
		cancel()
		for ; inflight > 0; inflight-- {
			<-results // they return at once: Redis calls end with their ctx
		}
	}()
	var failure error // the last refresh's error
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-expiry.C:
			if failure == nil {
				return fmt.Errorf("rediskit: lock %q lost: not refreshed within its TTL: %w", lk.key, ErrLockNotHeld)
			}
			return fmt.Errorf("rediskit: lock %q lost: not refreshed within its TTL: %w: %w", lk.key, ErrLockNotHeld, failure)
		case <-next.C:
			if inflight < maxRefreshes {
				inflight++
				go func(sent time.Time) {
					results <- refreshResult{sent, lk.Refresh(rctx, ttl)}
				}(time.Now())
			}
			// The next one, should this one be slow, within what is left
			// of the validity: an interval, unless the lock is held for
			// less (a hand-over for the claim bound).
			next.Reset(max(min(interval, time.Until(heldUntil)/2), time.Millisecond))
		case r := <-results:
			inflight--
			switch {
			case r.err == nil:
				if until := validUntil(r.sent, ttl); until.After(heldUntil) {
					heldUntil = until
					resetTimer(expiry, time.Until(heldUntil))
					resetTimer(next, interval-time.Since(r.sent))
				}
				failure = nil
			case ctx.Err() != nil:
				return nil
			case errors.Is(r.err, ErrLockNotHeld):
				return fmt.Errorf("rediskit: lock %q lost: %w", lk.key, r.err)
			default:
				failure = r.err // the expiry timer decides
				resetTimer(next, refreshRetry(interval))
			}
		}
	}
}

// resetTimer sets t, which only the caller's goroutine receives from, to
// fire after d, dropping a tick it may have fired already.
func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}

// stop ends the loop, waits for its goroutine to exit if it started, and
// returns the error that lost the lock, if any.
func (w *watchdog) stop() error {
	w.cancel()
	if w.start.Stop() {
		return nil // never started: no refresh was due yet
	}
	<-w.done
	return w.lost
}
