package rediskit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// One load per key across processes. A process whose GetOrLoad misses
// takes the key's lease: a companion key in the same cluster slot, holding
// a random token and expiring after the lease's TTL. The process that took
// it loads; the others find it, wait for the value, and are woken by a
// message the holder publishes when it writes the value back (or gives up).
// The key itself stays absent meanwhile, so other programs (the Python
// seed) see a plain miss. The write-back happens only if the lease is still
// the holder's own, so a Delete during the load (which removes the lease)
// keeps the slow loader's stale value out, as memcache leases do; and only
// if the key is still absent, so a Set meanwhile wins. The holder refreshes
// its lease while it loads, so a crashed holder costs the others at most
// the lease's TTL; a wait is also bounded by the backoff, so a lost message
// costs a backoff sleep.

// leaseKey is the key of rkey's load lease.
func leaseKey(rkey string) string { return companionKey(rkey, ":lease") }

// leaseChannel is where a key's lease holder publishes that it is done.
func leaseChannel(rkey string) string { return companionKey(rkey, ":loaded") }

// leaseState is what readOrLease found.
type leaseState int

const (
	leaseValue leaseState = iota // the key holds a value: the reply's bytes
	leaseTaken                   // the key was absent: the lease is ours
	leaseHeld                    // another process holds a lease
)

// leaseReply is what readOrLease found.
type leaseReply struct {
	state leaseState
	// value is the key's bytes: the value with leaseValue; otherwise the
	// bytes of a value due for a load, if there was one, whose remaining
	// TTL is valueTTL.
	value    []byte
	valueTTL time.Duration
	leaseTTL time.Duration // with leaseHeld: the lease's remaining TTL
}

// neverDue is readOrLease's due for a value that is never due for a load.
const neverDue = -1

// readOrLease reads key and, if it is absent or due for a load (its
// remaining TTL at or below due, unless due is neverDue), takes its lease
// with token, in one round trip, bounded by wait. A lease taken by a call
// nobody waited for any more is dropped when its reply comes.
func (c *Cache[T]) readOrLease(ctx context.Context, rkey, token string, wait, due time.Duration) (leaseReply, error) {
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	dueMs := int64(neverDue)
	if due != neverDue {
		dueMs = due.Milliseconds()
	}
	reply, _, err := run(c.calls, rctx, func(ctx context.Context) ([]any, error) {
		// The reply is awaited past the caller's wait, so that a lease
		// taken for a caller who left is dropped (settle below).
		dl, _ := ctx.Deadline()
		ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), dl.Add(settleWait))
		defer cancel()
		return readOrLeaseScript.Run(ctx, c.client, []string{rkey, leaseKey(rkey)}, token, c.cfg.leaseTTL.Milliseconds(), dueMs).Slice()
	}, func(reply []any, err error) {
		taken := err == nil && len(reply) >= 2 && reply[0] == int64(1)
		if taken || inFlight(err) { // the token is this call's: dropping it is safe either way
			c.dropLease(context.Background(), rkey[len(c.cfg.prefix):], token)
		}
	})
	if err != nil {
		return leaseReply{}, err
	}
	if len(reply) != 2 && len(reply) != 4 {
		return leaseReply{}, fmt.Errorf("unexpected read-or-lease reply %v", reply)
	}
	state, _ := reply[0].(int64)
	var r leaseReply
	switch state {
	case 0:
		s, _ := reply[1].(string)
		return leaseReply{state: leaseValue, value: []byte(s)}, nil
	case 1:
		r.state = leaseTaken
	default:
		pttl, _ := reply[1].(int64)
		r.state, r.leaseTTL = leaseHeld, time.Duration(pttl)*time.Millisecond
		if pttl == 0 { // expiring this very millisecond: look again at once
			r.leaseTTL = time.Nanosecond
		}
	}
	if len(reply) == 4 {
		s, _ := reply[2].(string)
		pttl, _ := reply[3].(int64)
		r.value, r.valueTTL = []byte(s), time.Duration(pttl)*time.Millisecond
	}
	return r, nil
}

// awaitFleet is the cross-process part of a shared load: it finds the
// key's value when Redis has one not due for a load, waiting while another
// process loads it, or takes the lease this process must then load under.
// With neither (Redis failing or slow, ctx ended), the caller loads without
// a lease. Each read is bounded by wait.
func (c *Cache[T]) awaitFleet(ctx context.Context, key string, wait time.Duration) lookup[T] {
	token, err := newToken()
	if err != nil {
		return lookup[T]{}
	}
	rkey := c.cfg.prefix + key
	var w *waiter
	defer func() {
		if w != nil {
			c.notify.unwatch(w, false)
		}
	}()
	for retry := 1; ; retry++ {
		r, err := c.readOrLease(ctx, rkey, token, wait, c.staleDue())
		switch {
		case err != nil:
			if isWrongType(err) {
				err = fmt.Errorf("rediskit: get %q: %w: %w", key, ErrWrongType, err)
			}
			if ctx.Err() == nil {
				c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: err})
			}
			return lookup[T]{}
		case r.state == leaseTaken:
			seen := c.examineStale(key, r.value, r.valueTTL)
			seen.lease = token
			return seen
		case r.state == leaseValue:
			return c.examine(key, r.value)
		}
		pttl := r.leaseTTL
		// Another process loads. Subscribe, then look again at once: its
		// message may have gone out before the subscription.
		sleep := c.cfg.backoff.Next(retry)
		if pttl > 0 && sleep > pttl {
			sleep = pttl
		}
		if w == nil {
			// Waiting for the subscription's confirmation is bounded by
			// the sleep it replaces: the lease may be gone by then.
			wctx, cancel := context.WithTimeout(ctx, sleep)
			var joined bool
			w, joined = c.notify.watch(wctx, leaseChannel(rkey))
			cancel()
			if w != nil && !joined {
				continue
			}
		}
		if _, _, err := pause(ctx, sleep, w, nil); err != nil {
			return lookup[T]{}
		}
	}
}

// loadLeased calls load while keeping the lease alive, refreshing it every
// third of its TTL; stop ends the refreshes, at once. A lease lost (deleted
// with the key, or expired) is no reason to stop the load, whose value the
// callers still get; the write-back will know.
func (c *Cache[T]) loadLeased(ctx context.Context, key, lease string, load func(context.Context) (T, error)) (v T, stop func(), err error) {
	if lease == "" {
		v, err = callLoad(ctx, load)
		return v, func() {}, err
	}
	rkey := c.cfg.prefix + key
	// Refreshes are cut short when stopped, or after a third of the TTL,
	// on any client: stop must not wait behind Redis.
	qctx, quit := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(c.cfg.leaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-qctx.Done():
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(qctx, c.cfg.leaseTTL/3)
			n, _, err := run(c.calls, rctx, func(ctx context.Context) (int64, error) {
				return refreshScript.Run(ctx, c.client, []string{leaseKey(rkey)}, lease, c.cfg.leaseTTL.Milliseconds()).Int64()
			}, nil)
			cancel()
			if err == nil && n == 0 {
				return // gone
			}
		}
	}()
	v, err = callLoad(ctx, load)
	return v, func() {
		quit()
		<-done
	}, err
}

// writeLeased stores a loaded value and ends this process's lease, waking
// the processes waiting for it; a key whose lease is gone (deleted) or that
// was written meanwhile is left alone. The value replaces the bytes stale,
// if not nil (a value past its TTL, or undecodable), and otherwise only an
// absent key.
func (c *Cache[T]) writeLeased(ctx context.Context, key, lease string, b []byte, ttl time.Duration, stale []byte) (ok bool) {
	rkey := c.cfg.prefix + key
	replace := "0"
	if stale != nil {
		replace = "1"
	}
	_, err := leaseWriteScript.Run(ctx, c.client, []string{rkey, leaseKey(rkey)}, lease, b, ttl.Milliseconds(), c.notify.publish, leaseChannel(rkey), replace, stale).Int64()
	if err != nil {
		c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: fmt.Errorf("rediskit: write back %q: %w", key, err)})
		return false
	}
	c.wrote(ctx, key)
	return true
}

// dropLease removes this process's lease after a failed load and wakes the
// waiting processes, which then load themselves: errors are not shared
// across processes.
func (c *Cache[T]) dropLease(ctx context.Context, key, lease string) {
	rkey := c.cfg.prefix + key
	if err := releaseScript.Run(ctx, c.client, []string{leaseKey(rkey)}, lease, c.notify.publish, leaseChannel(rkey)).Err(); err != nil && !errors.Is(err, redis.Nil) {
		c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: fmt.Errorf("rediskit: drop lease %q: %w", key, err)})
	}
}
