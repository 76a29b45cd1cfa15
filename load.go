package rediskit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// GetOrLoad returns the value stored under key or, on a miss, the value
// load returns, which it then stores for ttl (0 meaning the Cache's default
// TTL, as for Set).
//
// Misses of the same key in this process share one call of load, whatever
// their timing: the shared load reads Redis again before calling load, and
// a caller that comes while the loaded value is being written back gets
// that value without reading Redis. The load runs on a context detached
// from the callers' cancellation but keeping their values, bounded by
// [WithLoadTimeout] and ended by [Cache.Close]; each caller waits on its own
// ctx and may give up with its ctx's error while the others still get the
// value. load's error is returned to every waiter and is not cached, except
// an error wrapping [ErrNotFound] when negative caching is on
// ([WithNegativeCaching]). A panic in load is returned to the waiters as an
// error.
//
// Redis failing does not fail GetOrLoad, and does not make it late: each
// Redis read, the shared load's included, is given at most half the time
// left before the caller's deadline (the first caller's, for the shared
// load), and at most a second, even on a client that ignores deadlines
// during I/O; when it fails, GetOrLoad answers from load, and callers in
// this process that miss within the next second share that value. The
// loaded value goes to every waiter as soon as load returns, and is written
// back afterwards, off their path, only where the load found no value (or
// the bytes it could not decode): a Set meanwhile wins. With leases off
// ([WithLoadLease](0)), a Delete during the load cannot be told from the
// miss it started from, and the loaded value is written. Redis's errors are reported through the hook and
// [CacheStats].RedisErrors. Stored bytes that do not decode are reported
// the same way and replaced by the loaded value; a key holding another
// Redis type (a list, a hash) is not: GetOrLoad returns the loaded value
// and reports an error wrapping [ErrWrongType], leaving the other program's
// data as it is.
//
// It returns an error wrapping [ErrInvalidArgument] for an empty key, a nil
// load, a ttl below zero or a loaded value the codec cannot encode, and
// [ErrClosed] after Close.
func (c *Cache[T]) GetOrLoad(ctx context.Context, key string, ttl time.Duration, load func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if err := c.check("get or load", key); err != nil {
		return zero, err
	}
	if load == nil {
		return zero, fmt.Errorf("rediskit: get or load %q: nil load: %w", key, ErrInvalidArgument)
	}
	if _, err := c.ttl("get or load", key, ttl); err != nil {
		return zero, err
	}
	early := false // the local tier's entry is due for an early refresh
	if c.local != nil {
		if e, ok := c.local.get(key); ok {
			if c.cfg.earlyBeta == 0 || e.until.IsZero() || !c.refreshEarly(time.Until(e.until)) {
				return c.localHit(key, e)
			}
			early = true
		}
	}
	f := c.flights.current(key)
	if f == nil {
		v, b, pttl, err := c.read(ctx, key)
		var fallback *T
		if err == nil && c.cfg.readsExpiry() {
			switch past := c.pastTTL(pttl); {
			case past > 0 && past <= c.cfg.staleServe: // stale while revalidate
				c.cfg.emit(&c.stats, Event{Kind: EventStale, Key: key})
				c.refresh(ctx, key, b, pttl, ttl, load)
				return v, nil
			case past > 0: // load, as on a miss
				if past <= c.cfg.staleError {
					fallback = &v // stale if error
				}
				err = errDue
			case pttl >= 0 && (early || c.refreshEarly(-past)):
				c.refresh(ctx, key, b, pttl, ttl, load)
			}
		}
		switch {
		case err == nil, errors.Is(err, ErrNotFound):
			return v, err
		case ctx.Err() != nil:
			return zero, fmt.Errorf("rediskit: get or load %q: %w", key, ctx.Err())
		case !errors.Is(err, ErrCacheMiss) && err != errDue:
			c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: err})
		}
		// Redis answered (a miss, a value due for a load, bytes that do
		// not decode, another type): the load may ask it again. Otherwise
		// it loads at once.
		answered := errors.Is(err, ErrCacheMiss) || err == errDue || errors.Is(err, ErrDecode) || errors.Is(err, ErrWrongType)
		var started bool
		if f, started = c.flights.join(key); started {
			if !c.startLoad(ctx, f, key, ttl, load, answered, fallback) {
				return zero, fmt.Errorf("rediskit: get or load %q: %w", key, ErrClosed)
			}
		}
	}
	select {
	case <-f.done:
		return f.v, f.err
	case <-ctx.Done():
		return zero, fmt.Errorf("rediskit: get or load %q: %w", key, ctx.Err())
	}
}

// errDue says that GetOrLoad read a value past its TTL that it may not
// serve stale: it loads, as on a miss.
var errDue = errors.New("value due for a load")

// isMarker reports a not-found marker, which negative caching writes.
func isMarker(b []byte) bool { return string(b) == notFoundMarker }

// writeBackTimeout bounds the write-back of a loaded value on a client that
// honours deadlines.
const writeBackTimeout = time.Second

// maxReadWait bounds a Redis read of GetOrLoad when the caller's context
// has no deadline, or a later one.
const maxReadWait = time.Second

// readWait is GetOrLoad's share of the caller's time for one Redis read:
// half of what is left before ctx's deadline, and at most maxReadWait.
func readWait(ctx context.Context) time.Duration {
	wait := maxReadWait
	if dl, ok := ctx.Deadline(); ok {
		if half := time.Until(dl) / 2; half < wait {
			wait = half
		}
	}
	return wait
}

// read is GetOrLoad's Get, its wait bounded by GetOrLoad's share of the
// caller's time. When the Cache reads expiries (see readsExpiry), it also
// returns the value's bytes and remaining Redis TTL (negative for none),
// read in the same round trip.
func (c *Cache[T]) read(ctx context.Context, key string) (v T, b []byte, pttl time.Duration, err error) {
	wait := readWait(ctx)
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	switch {
	case c.local != nil:
		v, b, pttl, err = c.readThrough(rctx, key)
	case c.cfg.readsExpiry():
		b, pttl, err = c.readWithTTL(rctx, key)
		v, err = c.decode(key, b, err)
	default:
		v, err = c.Get(rctx, key)
	}
	if err != nil && ctx.Err() == nil && rctx.Err() != nil && !errors.Is(err, ErrCacheMiss) {
		// Redis's share of the time ran out, not the caller's.
		err = fmt.Errorf("rediskit: get %q: no reply within %v", key, wait)
	}
	return v, b, pttl, err
}

// startLoad starts f's load on a goroutine that Close waits for, and
// reports whether it could (not after Close). fallback is load's.
func (c *Cache[T]) startLoad(ctx context.Context, f *flight[T], key string, ttl time.Duration, load func(context.Context) (T, error), answered bool, fallback *T) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.flights.end(key, f, zeroOf[T](), fmt.Errorf("rediskit: get or load %q: %w", key, ErrClosed))
		return false
	}
	c.loads.Add(1)
	c.mu.Unlock()
	wait := readWait(ctx) // the starting caller's share, for the load's reads
	if !answered {
		wait = 0 // Redis did not answer the caller: load at once
	}
	go func() {
		defer c.loads.Done()
		c.load(ctx, f, key, ttl, load, wait, fallback)
	}()
	return true
}

func zeroOf[T any]() (zero T) { return zero }

// load runs one shared load: it asks Redis again, since a value may have
// been written between the callers' miss and now (and, with leases, waits
// for another process's load), each read bounded by wait (0: Redis is not
// asked); calls load; hands the result to the waiters; and then writes it
// back.
//
// fallback, if not nil, is a value past its TTL the starting caller read,
// within the stale-if-error window: the answer if load fails and the load's
// own read found none.
func (c *Cache[T]) load(ctx context.Context, f *flight[T], key string, ttl time.Duration, load func(context.Context) (T, error), wait time.Duration, fallback *T) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.loadTimeout)
	defer cancel()
	defer context.AfterFunc(c.lifetime, cancel)()

	var seen lookup[T] // nothing seen when Redis is not asked
	switch {
	case wait > 0 && c.cfg.leaseTTL > 0:
		seen = c.awaitFleet(lctx, key, wait)
	case wait > 0:
		seen = c.readRaw(lctx, key, wait)
	}
	if seen.found {
		c.flights.end(key, f, seen.v, seen.err)
		return
	}
	lease, stale := seen.lease, seen.stale
	start := time.Now()
	v, stopRefresh, err := c.loadLeased(lctx, key, lease, load)
	var b []byte // what to write back
	wbTTL := c.cfg.negativeTTL
	switch {
	case errors.Is(err, ErrNotFound):
		c.cfg.emit(&c.stats, Event{Kind: EventLoad, Key: key, Wait: time.Since(start)})
		err = fmt.Errorf("rediskit: load %q: %w", key, err)
		if wbTTL > 0 {
			b = []byte(notFoundMarker)
		}
	case err != nil:
		c.cfg.emit(&c.stats, Event{Kind: EventLoadError, Key: key, Err: err})
		err = fmt.Errorf("rediskit: load %q: %w", key, err)
		if fb := seen.fallback; fb != nil || fallback != nil {
			if fb == nil {
				fb = fallback
			}
			v, err = *fb, nil // stale if error: the failure went to the hook
			c.cfg.emit(&c.stats, Event{Kind: EventStale, Key: key})
		}
	default:
		c.cfg.emit(&c.stats, Event{Kind: EventLoad, Key: key, Wait: time.Since(start)})
		c.recordLoad(time.Since(start))
		if b, err = c.encode("get or load", key, v); err != nil {
			v = zeroOf[T]()
		}
		wbTTL = c.storeTTL(c.resolveTTL(ttl))
	}
	// The write-back, or the lease's removal, is made even when Close
	// has cancelled the load: a lease left behind would stall the other
	// processes for its TTL. It is one short call, bounded on its own.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(lctx), writeBackTimeout)
	defer wcancel()
	if b == nil {
		// Nothing to write back: an error is not cached, and the next
		// caller must load again, not share this one's failure.
		c.flights.end(key, f, v, err)
		stopRefresh()
		if lease != "" {
			c.dropLease(wctx, key, lease)
		}
		return
	}
	f.deliver(v, err) // before anything else that may wait on Redis
	stopRefresh()
	var stored bool
	if lease != "" {
		stored = c.writeLeased(wctx, key, lease, b, wbTTL, stale)
	} else {
		stored = c.writeBack(wctx, key, b, wbTTL, stale)
	}
	// Only now: until the value is in Redis, later callers take it from
	// the flight instead of missing and loading again. When Redis failed,
	// callers whose reads are still failing (for up to maxReadWait) take
	// it too, rather than load again.
	if stored {
		c.flights.remove(key, f)
	} else {
		time.AfterFunc(maxReadWait, func() { c.flights.remove(key, f) })
	}
}

// lookup is what a shared load found in Redis before loading.
type lookup[T any] struct {
	found bool // Redis had the answer: v, or err wrapping ErrNotFound
	v     T
	err   error
	lease string // the lease this process took, and loads under
	// stale are bytes for the write-back to replace: undecodable, or a
	// value past its TTL.
	stale []byte
	// fallback is that value, within the stale-if-error window: the answer
	// if the load fails.
	fallback *T
}

// examine turns bytes a load found into its lookup.
func (c *Cache[T]) examine(key string, b []byte) lookup[T] {
	v, err := c.decode(key, b, nil)
	if err != nil && !errors.Is(err, ErrNotFound) {
		// Undecodable, as the caller's own read found and reported:
		// load, and replace it.
		return lookup[T]{stale: b}
	}
	return lookup[T]{found: true, v: v, err: err}
}

// readRaw reads key for a load without a lease, bounded by wait. A miss,
// or Redis failing, finds nothing; a value past its TTL is found stale.
func (c *Cache[T]) readRaw(ctx context.Context, key string, wait time.Duration) lookup[T] {
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if c.cfg.staleWindow() > 0 {
		b, pttl, err := c.readWithTTL(rctx, key)
		switch {
		case err != nil:
			return lookup[T]{}
		case c.pastTTL(pttl) > 0 && !isMarker(b):
			return c.examineStale(key, b, pttl)
		}
		return c.examine(key, b)
	}
	b, _, err := run(c.calls, rctx, func(ctx context.Context) ([]byte, error) {
		return c.client.Get(ctx, c.cfg.prefix+key).Bytes()
	}, nil)
	if err != nil {
		return lookup[T]{}
	}
	return c.examine(key, b)
}

// writeBack stores a loaded value where the load found none, or found the
// stale bytes given: a value written meanwhile (by Set, or another program)
// is newer and stays, and so does a key of another Redis type, which is
// reported through the hook like any failure.
func (c *Cache[T]) writeBack(ctx context.Context, key string, b []byte, ttl time.Duration, stale []byte) (ok bool) {
	replace := "0"
	if stale != nil {
		replace = "1"
	}
	n, err := writeBackScript.Run(ctx, c.client, []string{c.cfg.prefix + key}, b, ttl.Milliseconds(), replace, stale).Int64()
	switch {
	case err != nil:
		err = fmt.Errorf("rediskit: write back %q: %w", key, err)
	case n < 0:
		err = fmt.Errorf("rediskit: write back %q: %w", key, ErrWrongType)
	default:
		c.wrote(ctx, key)
		return true
	}
	c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: err})
	return false
}

// flight is one shared load of a key. Its waiters get its result when done
// is closed; it stays in the Cache's flights until the result is written
// back.
type flight[T any] struct {
	done chan struct{}
	v    T
	err  error
}

func (f *flight[T]) deliver(v T, err error) {
	f.v, f.err = v, err
	close(f.done)
}

// flights are a Cache's loads in progress, by key. golang.org/x/sync's
// singleflight does not fit: it forgets a call when the call returns, but a
// load must stay joinable until its value is written back, after its
// waiters have been answered. Background refreshes are kept apart: nobody
// waits for them.
type flights[T any] struct {
	mu         sync.Mutex
	m          map[string]*flight[T]
	refreshing map[string]struct{}
}

// startRefresh marks key as being refreshed in the background, and reports
// false if it already was.
func (fs *flights[T]) startRefresh(key string) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if _, ok := fs.refreshing[key]; ok {
		return false
	}
	if fs.refreshing == nil {
		fs.refreshing = map[string]struct{}{}
	}
	fs.refreshing[key] = struct{}{}
	return true
}

// endRefresh unmarks key.
func (fs *flights[T]) endRefresh(key string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	delete(fs.refreshing, key)
}

// current returns the key's flight, if one is in progress.
func (fs *flights[T]) current(key string) *flight[T] {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.m[key]
}

// join returns the key's flight, starting one (started) if there is none.
func (fs *flights[T]) join(key string) (f *flight[T], started bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f = fs.m[key]; f != nil {
		return f, false
	}
	if fs.m == nil {
		fs.m = map[string]*flight[T]{}
	}
	f = &flight[T]{done: make(chan struct{})}
	fs.m[key] = f
	return f, true
}

// forget ends the key's flight, whichever it is: a Set or Delete made
// since it started makes its value old for later callers.
func (fs *flights[T]) forget(key string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	delete(fs.m, key)
}

// remove ends the key's flight f.
func (fs *flights[T]) remove(key string, f *flight[T]) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.m[key] == f {
		delete(fs.m, key)
	}
}

// end removes f and then delivers its result, so that a caller answered
// with it and calling again starts a new flight.
func (fs *flights[T]) end(key string, f *flight[T], v T, err error) {
	fs.remove(key, f)
	f.deliver(v, err)
}

// callLoad calls load, turning a panic into an error: it runs on a
// goroutine of its own, where a panic would crash the program.
func callLoad[T any](ctx context.Context, load func(context.Context) (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("load panicked: %v", r)
		}
	}()
	return load(ctx)
}

// Close cancels the context of the loads in progress, waits for them to
// return, and for the Redis reads their callers stopped waiting for, and
// makes later GetOrLoad misses fail with [ErrClosed]. Get, Set and the
// other methods keep working. It does not close the client. Close
// always returns nil.
func (c *Cache[T]) Close() error {
	if c == nil || c.cancel == nil {
		return nil
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.loads.Wait()
	if c.local != nil {
		c.local.close()
	}
	c.calls.close()
	if c.notify != nil {
		c.notify.close()
	}
	return nil
}
