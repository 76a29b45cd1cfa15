package rediskit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrClosed is returned by Cache.GetOrLoad after [Cache.Close].
var ErrClosed = errors.New("rediskit: cache closed")

// GetOrLoad returns the value stored under key or, on a miss, the value
// load returns, which it then stores for ttl (0 meaning the Cache's default
// TTL, as for Set).
//
// Concurrent misses of the same key in this process share one call of load.
// The load runs on a context detached from the callers' cancellation but
// keeping their values, bounded by [WithLoadTimeout] and ended by
// [Cache.Close]; each caller waits on its own ctx and may give up with its
// ctx's error while the others still get the value. load's error is
// returned to every waiter and is not cached, except an error wrapping
// [ErrNotFound] when negative caching is on ([WithNegativeCaching]). A panic
// in load is returned to the waiters as an error.
//
// Redis failing does not fail GetOrLoad: when the read or the write fails,
// it still answers from load, and reports the Redis error through the hook
// and [CacheStats].RedisErrors. Stored bytes that do not decode are
// reported the same way and replaced by the loaded value.
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
	v, err := c.Get(ctx, key)
	switch {
	case err == nil, errors.Is(err, ErrNotFound):
		return v, err
	case ctx.Err() != nil:
		return zero, fmt.Errorf("rediskit: get or load %q: %w", key, ctx.Err())
	case !errors.Is(err, ErrCacheMiss):
		c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: err})
	}

	ch := c.group.DoChan(key, func() (any, error) {
		return c.load(ctx, key, ttl, load)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return zero, r.Err
		}
		v, _ := r.Val.(T) // always a T: c.load returns one
		return v, nil
	case <-ctx.Done():
		return zero, fmt.Errorf("rediskit: get or load %q: %w", key, ctx.Err())
	}
}

// load runs one shared load and stores its result.
func (c *Cache[T]) load(ctx context.Context, key string, ttl time.Duration, load func(context.Context) (T, error)) (any, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("rediskit: get or load %q: %w", key, ErrClosed)
	}
	c.loads.Add(1)
	c.mu.Unlock()
	defer c.loads.Done()

	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.loadTimeout)
	defer cancel()
	defer context.AfterFunc(c.lifetime, cancel)()

	start := time.Now()
	v, err := callLoad(lctx, load)
	if errors.Is(err, ErrNotFound) {
		c.cfg.emit(&c.stats, Event{Kind: EventLoad, Key: key, Wait: time.Since(start)})
		if c.cfg.negativeTTL > 0 {
			if werr := c.client.Set(lctx, c.cfg.prefix+key, notFoundMarker, c.cfg.negativeTTL).Err(); werr != nil {
				c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: werr})
			}
		}
		return nil, fmt.Errorf("rediskit: load %q: %w", key, err)
	}
	if err != nil {
		c.cfg.emit(&c.stats, Event{Kind: EventLoadError, Key: key, Err: err})
		return nil, fmt.Errorf("rediskit: load %q: %w", key, err)
	}
	c.cfg.emit(&c.stats, Event{Kind: EventLoad, Key: key, Wait: time.Since(start)})
	if err := c.Set(lctx, key, v, ttl); err != nil {
		if errors.Is(err, ErrInvalidArgument) {
			return nil, err
		}
		c.cfg.emit(&c.stats, Event{Kind: EventRedisError, Key: key, Err: err})
	}
	return v, nil
}

// callLoad calls load, turning a panic into an error: singleflight would
// otherwise re-panic it on a goroutine of its own, crashing the program.
func callLoad[T any](ctx context.Context, load func(context.Context) (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("load panicked: %v", r)
		}
	}()
	return load(ctx)
}

// Close cancels the context of the loads in progress, waits for them to
// return, and makes later GetOrLoad misses fail with [ErrClosed]. Get, Set
// and the other methods keep working. It does not close the client. Close
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
	return nil
}
