package rediskit

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// notFoundMarker is what negative caching stores. JSON never starts with a
// NUL byte, so no encoded value can be mistaken for it.
const notFoundMarker = "\x00rediskit:not-found"

// Cache is a typed cache of values of type T kept in Redis, each stored
// under its key exactly as the [Codec] encodes it: plain JSON by default,
// readable and writable by other programs and languages.
//
// A Cache is safe for concurrent use by multiple goroutines. It must not be
// copied after first use. It does not own the client. Loads started by
// [Cache.GetOrLoad] run on goroutines that end with the load, bounded by
// [WithLoadTimeout], or with [Cache.Close]. A GetOrLoad that waits for
// another process's load (see [WithLoadLease]) opens the Cache's pub/sub
// subscription, whose goroutines end with Close or after 30 seconds without
// waiters.
type Cache[T any] struct {
	client  redis.UniversalClient
	cfg     config
	stats   counters
	flights flights[T]
	calls   *calls
	notify  *notifier // wake-ups from other processes' loads
	// loadTime is a moving average of the loads' durations, in
	// nanoseconds, for early refresh.
	loadTime atomic.Int64

	// lifetime is the Cache's own context, not a caller's: Close cancels it
	// to end the loads no caller is waiting for.
	lifetime context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex // guards closed and the Add side of loads
	closed   bool
	loads    sync.WaitGroup
}

// NewCache returns a Cache of values of type T kept in client, which may be
// any go-redis client: single node, Sentinel, Ring or Cluster. With a nil
// client or an invalid option, NewCache does not panic; every method of the
// Cache returns an error wrapping [ErrInvalidArgument].
func NewCache[T any](client redis.UniversalClient, opts ...Option) *Cache[T] {
	c := &Cache[T]{client: client, cfg: newConfig(opts), calls: newCalls(client)}
	if !isNilClient(client) {
		c.notify = newNotifier(client)
	}
	if c.cfg.err == nil && isNilClient(client) {
		c.cfg.err = fmt.Errorf("rediskit: nil client: %w", ErrInvalidArgument)
	}
	c.lifetime, c.cancel = context.WithCancel(context.Background())
	return c
}

// Stats returns the Cache's counters.
func (c *Cache[T]) Stats() CacheStats {
	return CacheStats{
		Hits:        c.stats.get(EventHit),
		Misses:      c.stats.get(EventMiss),
		Loads:       c.stats.get(EventLoad),
		LoadErrors:  c.stats.get(EventLoadError),
		RedisErrors: c.stats.get(EventRedisError),
		Stale:       c.stats.get(EventStale),
		Refreshes:   c.stats.get(EventRefresh),
	}
}

// Get returns the value stored under key, in one round trip, and within
// ctx's deadline even on a client that ignores deadlines during I/O. It
// returns an error wrapping [ErrCacheMiss] if the key is absent,
// [ErrNotFound] if negative caching remembers that the value does not
// exist, [ErrDecode] (and the codec's error) if the stored bytes do not
// decode into T, [ErrWrongType] if the key holds another Redis type,
// [ErrInvalidArgument] for an empty key, or the context's or Redis's error.
// On error the value is T's zero value.
//
// With the default JSON codec, JSON's rules apply: a stored null decodes to
// T's zero value (a nil pointer, slice or map) with a nil error, and an
// object's fields that T lacks are ignored, so an object with none of them
// decodes to T's zero value too; unexported fields of T are neither stored
// nor read. Use a [Codec] of your own for stricter rules.
func (c *Cache[T]) Get(ctx context.Context, key string) (T, error) {
	if err := c.check("get", key); err != nil {
		var zero T
		return zero, err
	}
	var b []byte
	var err error
	if c.calls.inline(ctx) {
		b, err = c.client.Get(ctx, c.cfg.prefix+key).Bytes()
	} else {
		b, _, err = run(c.calls, ctx, func(ctx context.Context) ([]byte, error) {
			return c.client.Get(ctx, c.cfg.prefix+key).Bytes()
		}, nil)
	}
	return c.decode(key, b, err)
}

// decode turns a GET reply into a value or an error.
func (c *Cache[T]) decode(key string, b []byte, err error) (T, error) {
	var v T
	switch {
	case errors.Is(err, redis.Nil):
		c.cfg.emit(&c.stats, Event{Kind: EventMiss, Key: key})
		return v, fmt.Errorf("rediskit: get %q: %w", key, ErrCacheMiss)
	case isWrongType(err):
		return v, fmt.Errorf("rediskit: get %q: %w: %w", key, ErrWrongType, err)
	case err != nil:
		return v, fmt.Errorf("rediskit: get %q: %w", key, err)
	case string(b) == notFoundMarker:
		c.cfg.emit(&c.stats, Event{Kind: EventHit, Key: key})
		return v, fmt.Errorf("rediskit: get %q: %w", key, ErrNotFound)
	}
	if err := c.cfg.codec.Unmarshal(b, &v); err != nil {
		var zero T
		return zero, fmt.Errorf("rediskit: get %q: %w: %w", key, ErrDecode, err)
	}
	c.cfg.emit(&c.stats, Event{Kind: EventHit, Key: key})
	return v, nil
}

// Set stores value under key for ttl, in one round trip. A ttl of 0 means the
// Cache's default TTL (see [WithDefaultTTL]); TTLs keep their milliseconds.
// It returns an error wrapping [ErrInvalidArgument] for an empty key, a
// negative ttl or one below a millisecond, or a value the codec cannot
// encode; nothing is written then.
func (c *Cache[T]) Set(ctx context.Context, key string, value T, ttl time.Duration) error {
	if err := c.check("set", key); err != nil {
		return err
	}
	ttl, err := c.ttl("set", key, ttl)
	if err != nil {
		return err
	}
	b, err := c.encode("set", key, value)
	if err != nil {
		return err
	}
	if err := c.client.Set(ctx, c.cfg.prefix+key, b, c.storeTTL(ttl)).Err(); err != nil {
		return fmt.Errorf("rediskit: set %q: %w", key, err)
	}
	c.flights.forget(key) // a load in progress here now has an older value
	return nil
}

// Delete removes keys, in one round trip; absent keys are not an error, and
// no keys is a no-op. It also ends the GetOrLoad loads of those keys in
// progress in any process (see [WithLoadLease]): their values, read before
// the Delete, are not written back. On Redis Cluster the keys may lie in any slots. It
// returns an error wrapping [ErrInvalidArgument] if a key is empty, and
// deletes nothing then.
func (c *Cache[T]) Delete(ctx context.Context, keys ...string) error {
	for _, key := range keys {
		if err := c.check("delete", key); err != nil {
			return err
		}
	}
	switch len(keys) {
	case 0:
		return nil
	case 1:
		rkey := c.cfg.prefix + keys[0]
		if err := c.client.Del(ctx, rkey, leaseKey(rkey)).Err(); err != nil {
			return fmt.Errorf("rediskit: delete %q: %w", keys[0], err)
		}
		c.flights.forget(keys[0])
		return nil
	}
	// One DEL per key, pipelined: a multi-key DEL fails with CROSSSLOT on a
	// cluster, and go-redis sends a pipeline to each node in parallel.
	_, err := c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, key := range keys {
			rkey := c.cfg.prefix + key
			p.Del(ctx, rkey, leaseKey(rkey)) // one slot: see leaseKey
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rediskit: delete %d keys: %w", len(keys), err)
	}
	for _, key := range keys {
		c.flights.forget(key)
	}
	return nil
}

// GetMany returns the values of the keys that are present, in one round
// trip: one MGET on a single node (Sentinel included), one pipeline of GETs
// per node on a Redis Cluster or Ring, in parallel, with keys in any slots.
// Absent keys are left out of the map. Keys whose bytes do not decode are
// left out too and reported in the error, wrapping [ErrDecode], while the
// others are still returned. A Redis error (a node down), or a key holding
// another Redis type (an error wrapping [ErrWrongType]), fails the whole
// call, with a nil map, whatever the keys' order; the error names the
// first such key. No keys returns an empty map.
func (c *Cache[T]) GetMany(ctx context.Context, keys ...string) (map[string]T, error) {
	for _, key := range keys {
		if err := c.check("get many", key); err != nil {
			return nil, err
		}
	}
	out := make(map[string]T, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	if _, ok := c.client.(*redis.Client); ok {
		return c.getManyOnOneNode(ctx, keys, out)
	}
	cmds := make([]*redis.StringCmd, len(keys))
	_, err := c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, key := range keys {
			cmds[i] = p.Get(ctx, c.cfg.prefix+key)
		}
		return nil
	})
	if err != nil {
		// Pipelined reports the first failed command only, a miss included;
		// which that is depends on the keys' order. Any key's Redis error
		// fails the call, whatever the order, and names the first such key
		// as given.
		for i, cmd := range cmds {
			if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
				if isWrongType(err) {
					err = fmt.Errorf("%w: %w", ErrWrongType, err)
				}
				return nil, fmt.Errorf("rediskit: get many: %q: %w", keys[i], err)
			}
		}
		if !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("rediskit: get many: %w", err)
		}
	}
	var errs []error
	for i, cmd := range cmds {
		b, err := cmd.Bytes()
		errs = c.collect(out, keys[i], b, err, errs)
	}
	return out, errors.Join(errs...)
}

// getManyOnOneNode is GetMany on a client of one node: one script running
// MGET, which also tells keys of another type from absent ones.
func (c *Cache[T]) getManyOnOneNode(ctx context.Context, keys []string, out map[string]T) (map[string]T, error) {
	rkeys := keys
	if c.cfg.prefix != "" {
		rkeys = make([]string, len(keys))
		for i, key := range keys {
			rkeys[i] = c.cfg.prefix + key
		}
	}
	reply, err := getManyScript.Run(ctx, c.client, rkeys).Slice()
	if err == nil && len(reply) != len(keys)+1 {
		err = fmt.Errorf("unexpected reply of %d values for %d keys", len(reply), len(keys))
	}
	if err != nil {
		return nil, fmt.Errorf("rediskit: get many: %w", err)
	}
	if wrong, _ := reply[len(keys)].(int64); wrong > 0 {
		return nil, fmt.Errorf("rediskit: get many: %q: %w", keys[wrong-1], ErrWrongType)
	}
	var errs []error
	for i, key := range keys {
		s, ok := reply[i].(string)
		if !ok {
			c.cfg.emit(&c.stats, Event{Kind: EventMiss, Key: key})
			continue
		}
		errs = c.collect(out, key, []byte(s), nil, errs)
	}
	return out, errors.Join(errs...)
}

// collect decodes one key's GET reply into out, appending to errs what
// GetMany reports.
func (c *Cache[T]) collect(out map[string]T, key string, b []byte, err error, errs []error) []error {
	v, err := c.decode(key, b, err)
	switch {
	case err == nil:
		out[key] = v
	case errors.Is(err, ErrCacheMiss) || errors.Is(err, ErrNotFound):
	default:
		errs = append(errs, err)
	}
	return errs
}

// SetMany stores all items for ttl, in one round trip on a single node (one
// per node on a Redis Cluster, in parallel, with keys in any slots). The TTL
// rules are Set's, and jitter is drawn for each key. Every value is encoded
// before anything is sent: an empty key or a value the codec cannot encode
// returns an error wrapping [ErrInvalidArgument] and writes nothing.
func (c *Cache[T]) SetMany(ctx context.Context, items map[string]T, ttl time.Duration) error {
	if err := c.usable("set many"); err != nil {
		return err
	}
	ttl, err := c.ttl("set many", "", ttl)
	if err != nil {
		return err
	}
	encoded := make(map[string][]byte, len(items))
	for key, v := range items {
		if err := c.check("set many", key); err != nil {
			return err
		}
		if encoded[key], err = c.encode("set many", key, v); err != nil {
			return err
		}
	}
	if len(encoded) == 0 {
		return nil
	}
	_, err = c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for key, b := range encoded {
			p.Set(ctx, c.cfg.prefix+key, b, c.storeTTL(ttl))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rediskit: set many: %w", err)
	}
	return nil
}

// usable reports a nil Cache, or one built with a nil client or an invalid
// option.
func (c *Cache[T]) usable(op string) error {
	if c == nil || c.lifetime == nil {
		return fmt.Errorf("rediskit: %s: nil Cache or not made by NewCache: %w", op, ErrInvalidArgument)
	}
	if c.cfg.err != nil {
		return fmt.Errorf("rediskit: %s: %w", op, c.cfg.err)
	}
	return nil
}

// check reports an unusable Cache or an empty key.
func (c *Cache[T]) check(op, key string) error {
	if err := c.usable(op); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("rediskit: %s: empty key: %w", op, ErrInvalidArgument)
	}
	return nil
}

// ttl resolves a write's TTL: 0 is the default, and anything else must be at
// least a millisecond, Redis's resolution.
func (c *Cache[T]) ttl(op, key string, ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return c.cfg.defaultTTL, nil
	case ttl < time.Millisecond:
		return 0, fmt.Errorf("rediskit: %s %q: ttl %v: %w", op, key, ttl, ErrInvalidArgument)
	}
	return ttl, nil
}

// jittered shortens ttl by up to the jitter fraction, never below 1ms.
func (c *Cache[T]) jittered(ttl time.Duration) time.Duration {
	if c.cfg.jitter == 0 {
		return ttl
	}
	d := ttl - time.Duration(rand.Float64()*c.cfg.jitter*float64(ttl))
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return d
}

func (c *Cache[T]) encode(op, key string, v T) ([]byte, error) {
	b, err := c.cfg.codec.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("rediskit: %s %q: cannot encode value: %w: %w", op, key, ErrInvalidArgument, err)
	}
	return b, nil
}
