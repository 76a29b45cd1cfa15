package rediskit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"time"
)

// Stale serving and early refresh. A Cache with a stale window writes
// values with a Redis TTL of their TTL plus the window, so that the last
// window of a value's Redis TTL is its stale period, and values stay plain
// bytes that other programs read and write as they are. GetOrLoad reads a
// value and its remaining TTL in one round trip, and then serves it fresh,
// serves it stale while one background load refreshes it, or loads as on a
// miss, falling back on it if the load fails.

// staleDue is when a value is due for a load in a shared load's read: in
// its stale period, or never without a stale window.
func (c *Cache[T]) staleDue() time.Duration {
	if w := c.cfg.staleWindow(); w > 0 {
		return w
	}
	return neverDue
}

// storeTTL is the Redis TTL a value written for ttl gets: ttl, jittered,
// plus the stale window.
func (c *Cache[T]) storeTTL(ttl time.Duration) time.Duration {
	return c.jittered(ttl) + c.cfg.staleWindow()
}

// readWithTTL reads key's bytes and remaining TTL, returning when ctx ends
// on any client; an absent key gives redis.Nil.
func (c *Cache[T]) readWithTTL(ctx context.Context, key string) ([]byte, time.Duration, error) {
	reply, _, err := run(c.calls, ctx, func(ctx context.Context) ([]any, error) {
		return readFreshScript.Run(ctx, c.client, []string{c.cfg.prefix + key}).Slice()
	}, nil)
	if err != nil {
		return nil, 0, err
	}
	if len(reply) != 2 {
		return nil, 0, fmt.Errorf("unexpected read reply %v", reply)
	}
	s, _ := reply[0].(string)
	pttl, _ := reply[1].(int64)
	return []byte(s), time.Duration(pttl) * time.Millisecond, nil
}

// pastTTL says how long ago a value with remaining Redis TTL pttl reached
// its TTL: zero or less while fresh (minus the time left), and positive in
// its stale period. A value without expiry is never past.
func (c *Cache[T]) pastTTL(pttl time.Duration) time.Duration {
	if pttl < 0 {
		return math.MinInt64
	}
	return c.cfg.staleWindow() - pttl
}

// examineStale turns the bytes of a value due for a load into the load's
// lookup: bytes for the write-back to replace, and the value to fall back
// on if the load fails, within the stale-if-error window.
func (c *Cache[T]) examineStale(key string, b []byte, pttl time.Duration) lookup[T] {
	if b == nil {
		return lookup[T]{}
	}
	seen := lookup[T]{stale: b}
	if c.cfg.staleError > 0 && c.pastTTL(pttl) <= c.cfg.staleError {
		var v T
		if c.cfg.codec.Unmarshal(b, &v) == nil {
			seen.fallback = &v
		}
	}
	return seen
}

// refreshEarly decides, by XFetch, whether a read of a fresh value with
// left before its TTL runs out refreshes it.
func (c *Cache[T]) refreshEarly(left time.Duration) bool {
	if c.cfg.earlyBeta == 0 || left <= 0 {
		return false
	}
	delta := time.Duration(c.loadTime.Load())
	if delta <= 0 {
		delta = unmeasuredLoad
	}
	return float64(delta)*c.cfg.earlyBeta*-math.Log(1-rand.Float64()) >= float64(left)
}

// unmeasuredLoad is the load time early refresh assumes until the Cache
// has timed a load of its own: a process that only reads values others
// loaded (behind their leases) still refreshes hot keys before expiry.
const unmeasuredLoad = 100 * time.Millisecond

// recordLoad folds a load's duration into the Cache's moving average, which
// early refresh weighs.
func (c *Cache[T]) recordLoad(d time.Duration) {
	old := c.loadTime.Load()
	if old == 0 {
		c.loadTime.Store(int64(d))
		return
	}
	c.loadTime.Store(old + (int64(d)-old)/8) // a lost update is harmless
}

// refresh starts a background load of key, whose bytes b (with remaining
// Redis TTL pttl) were just served: one per key in this process, and one in
// the fleet with leases. It runs on a goroutine that Close waits for and
// cancels, bounded by WithLoadTimeout like any load.
func (c *Cache[T]) refresh(ctx context.Context, key string, b []byte, pttl, ttl time.Duration, load func(context.Context) (T, error)) {
	if !c.flights.startRefresh(key) {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.flights.endRefresh(key)
		return
	}
	c.loads.Add(1)
	c.mu.Unlock()
	c.cfg.emit(&c.stats, Event{Kind: EventRefresh, Key: key})
	go func() {
		defer c.loads.Done()
		defer c.flights.endRefresh(key)
		c.runRefresh(ctx, key, b, pttl, ttl, load)
	}()
}

// runRefresh is one background refresh. With leases, it first takes the
// key's lease, in the same round trip as it checks that the value is still
// the one served (nobody refreshed it since: its remaining TTL is no
// longer than it was); another process's lease means that process
// refreshes. The loaded value replaces the served bytes only: a Set or
// Delete meanwhile wins.
func (c *Cache[T]) runRefresh(ctx context.Context, key string, b []byte, pttl, ttl time.Duration, load func(context.Context) (T, error)) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.loadTimeout)
	defer cancel()
	defer context.AfterFunc(c.lifetime, cancel)()

	lease := ""
	if c.cfg.leaseTTL > 0 {
		token, err := newToken()
		if err != nil {
			return
		}
		r, err := c.readOrLease(lctx, c.cfg.prefix+key, token, maxReadWait, max(pttl, 0))
		switch {
		case err != nil:
			if lctx.Err() == nil {
				c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: fmt.Errorf("rediskit: refresh %q: %w", key, err)})
			}
			return
		case r.state != leaseTaken:
			return // refreshed already, or being refreshed by another process
		}
		lease, b = token, r.value
	}
	start := time.Now()
	v, stopRefresh, err := c.loadLeased(lctx, key, lease, load)
	stopRefresh()
	var enc []byte // what replaces b; nil: nothing
	storeTTL := c.storeTTL(c.resolveTTL(ttl))
	gone := false // the value no longer exists: b goes
	switch {
	case errors.Is(err, ErrNotFound):
		c.cfg.emit(&c.stats, Event{Kind: EventLoad, Key: key, Wait: time.Since(start)})
		c.recordLoad(time.Since(start))
		if c.cfg.negativeTTL > 0 {
			enc, storeTTL = []byte(notFoundMarker), c.cfg.negativeTTL
		} else {
			gone = true
		}
	case err != nil:
		err = fmt.Errorf("rediskit: refresh %q: %w", key, err)
		c.cfg.emit(&c.stats, Event{Kind: EventLoadError, Key: key, Err: err})
	default:
		c.cfg.emit(&c.stats, Event{Kind: EventLoad, Key: key, Wait: time.Since(start)})
		c.recordLoad(time.Since(start))
		enc, _ = c.encode("refresh", key, v) // nil on error: the stale value stays
	}
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(lctx), writeBackTimeout)
	defer wcancel()
	switch {
	case gone:
		// Deleted where it came from: the stale bytes go, unless written
		// over meanwhile, and the next read misses.
		if err := deleteIfScript.Run(wctx, c.client, []string{c.cfg.prefix + key}, b).Err(); err != nil {
			c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: fmt.Errorf("rediskit: refresh %q: %w", key, err)})
		}
		c.wrote(wctx, key)
		if lease != "" {
			c.dropLease(wctx, key, lease)
		}
	case enc == nil && lease != "":
		c.dropLease(wctx, key, lease) // the stale value stays until its window ends
	case enc == nil:
	case lease != "":
		c.writeLeased(wctx, key, lease, enc, storeTTL, b)
	default:
		c.writeBack(wctx, key, enc, storeTTL, b)
	}
}

// resolveTTL is a GetOrLoad's TTL, checked on entry: 0 is the default.
func (c *Cache[T]) resolveTTL(ttl time.Duration) time.Duration {
	ttl, _ = c.ttl("get or load", "", ttl)
	return ttl
}
