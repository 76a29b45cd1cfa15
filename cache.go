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
	notify  *notifier     // wake-ups from other processes' loads
	local   *localTier[T] // WithLocalCache's first level; nil without
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
func NewCache[T any](client redis.UniversalClient, opts ...CacheOption) *Cache[T] {
	c := &Cache[T]{client: client, cfg: newCacheConfig(opts), calls: newCalls(client)}
	if !isNilClient(client) {
		c.notify = newNotifier(client)
	}
	if c.cfg.err == nil && isNilClient(client) {
		c.cfg.err = fmt.Errorf("nil client: %w", ErrInvalidArgument)
	}
	if c.cfg.err == nil && c.cfg.localMax > 0 {
		c.local = newLocalTier[T](client, c.cfg.prefix, c.cfg.localMax, c.cfg.localTTL)
	}
	c.lifetime, c.cancel = context.WithCancel(context.Background())
	return c
}

// Stats returns the Cache's counters.
func (c *Cache[T]) Stats() CacheStats {
	return CacheStats{
		Hits:        c.stats.get(EventHit),
		LocalHits:   c.stats.get(EventLocalHit),
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
	if c.local != nil {
		if e, ok := c.local.get(key); ok {
			return c.localHit(key, e)
		}
		v, _, _, err := c.readThrough(ctx, key)
		return v, err
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
// With the default JSON codec, a nil pointer, slice or map is stored as
// null, which Get returns as T's zero value with a nil error, and
// unexported fields of T are not stored.
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
	err = c.write(ctx, func(p redis.Cmdable) error {
		return p.Set(ctx, c.cfg.prefix+key, b, c.storeTTL(ttl)).Err()
	}, key)
	if err != nil {
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
		err := c.write(ctx, func(p redis.Cmdable) error { return p.Del(ctx, rkey, leaseKey(rkey)).Err() }, keys[0])
		if err != nil {
			return fmt.Errorf("rediskit: delete %q: %w", keys[0], err)
		}
		c.flights.forget(keys[0])
		return nil
	}
	// One DEL per key, pipelined: a multi-key DEL fails with CROSSSLOT on a
	// cluster, and go-redis sends a pipeline to each node in parallel.
	err := c.write(ctx, func(p redis.Cmdable) error {
		for _, key := range keys {
			rkey := c.cfg.prefix + key
			p.Del(ctx, rkey, leaseKey(rkey)) // one slot: see leaseKey
		}
		return nil
	}, keys...)
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
// Keys the local tier holds ([WithLocalCache]) are answered from it, and
// only the others are read. Absent keys are left out of the map. Keys whose
// bytes do not decode are left out too and reported in the error, wrapping
// [ErrDecode], while the others are still returned. A Redis error (a node
// down), or a key holding another Redis type (an error wrapping
// [ErrWrongType]), fails the whole call, with a nil map, whatever the keys'
// order; the error names the first such key. No keys returns an empty map.
func (c *Cache[T]) GetMany(ctx context.Context, keys ...string) (map[string]T, error) {
	for _, key := range keys {
		if err := c.check("get many", key); err != nil {
			return nil, err
		}
	}
	out := make(map[string]T, len(keys))
	var fills []fill
	if c.local != nil {
		missing := keys[:0:0]
		for _, key := range keys {
			if e, ok := c.local.get(key); ok {
				if v, err := c.localHit(key, e); err == nil {
					out[key] = v
				}
			} else {
				missing = append(missing, key)
			}
		}
		keys = missing
		fills = make([]fill, len(keys))
		for i, key := range keys {
			fills[i] = c.local.begin(key)
		}
	}
	if len(keys) == 0 {
		return out, nil
	}
	replies, err := c.fetchMany(ctx, keys, c.local != nil)
	if err != nil {
		for _, f := range fills {
			c.local.end(f, nil)
		}
		return nil, err
	}
	var errs []error
	for i, key := range keys {
		r := replies[i]
		v, err := c.decode(key, r.b, r.err)
		switch {
		case err == nil:
			out[key] = v
		case errors.Is(err, ErrCacheMiss) || errors.Is(err, ErrNotFound):
		default:
			errs = append(errs, err)
		}
		if fills != nil {
			c.local.end(fills[i], c.localEntry(v, err, r.pttl))
		}
	}
	return out, errors.Join(errs...)
}

// reply is one key's answer to a read: its bytes (or redis.Nil), and its
// remaining Redis TTL when asked for (negative for none).
type reply struct {
	b    []byte
	err  error
	pttl time.Duration
}

// fetchMany reads keys in one round trip (per node), and their remaining
// TTLs too when withTTL: then each key's value and TTL come from one
// script, run on its master, so that a replica's older value (a client
// that reads replicas) or a key expiring between two commands cannot fill
// the local tier. An error is one that fails the whole GetMany.
func (c *Cache[T]) fetchMany(ctx context.Context, keys []string, withTTL bool) ([]reply, error) {
	if _, ok := c.client.(*redis.Client); ok {
		return c.fetchOnOneNode(ctx, keys, withTTL)
	}
	cmds := make([]redis.Cmder, len(keys))
	_, err := c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, key := range keys {
			if withTTL {
				cmds[i] = p.Eval(ctx, readFreshSrc, []string{c.cfg.prefix + key})
			} else {
				cmds[i] = p.Get(ctx, c.cfg.prefix+key)
			}
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
	out := make([]reply, len(keys))
	for i, cmd := range cmds {
		out[i].pttl = -1
		switch cmd := cmd.(type) {
		case *redis.StringCmd:
			out[i].b, out[i].err = cmd.Bytes()
		case *redis.Cmd:
			vals, err := cmd.Slice()
			if err == nil && len(vals) != 2 {
				err = fmt.Errorf("unexpected read reply %v", vals)
			}
			if err != nil {
				out[i].err = err // redis.Nil: absent
				continue
			}
			s, _ := vals[0].(string)
			ms, _ := vals[1].(int64)
			out[i].b, out[i].pttl = []byte(s), pttlOf(time.Duration(ms)*time.Millisecond)
		}
	}
	return out, nil
}

// pttlOf turns PTTL's reply, as go-redis gives it, into a remaining TTL,
// negative for none.
func pttlOf(d time.Duration) time.Duration {
	if d < 0 {
		return -1
	}
	return d
}

// fetchOnOneNode is fetchMany on a client of one node: one script running
// MGET, which also tells keys of another type from absent ones.
func (c *Cache[T]) fetchOnOneNode(ctx context.Context, keys []string, withTTL bool) ([]reply, error) {
	rkeys := keys
	if c.cfg.prefix != "" {
		rkeys = make([]string, len(keys))
		for i, key := range keys {
			rkeys[i] = c.cfg.prefix + key
		}
	}
	flag := "0"
	want := len(keys) + 1
	if withTTL {
		flag, want = "1", 2*len(keys)+1
	}
	vals, err := getManyScript.Run(ctx, c.client, rkeys, flag).Slice()
	if err == nil && len(vals) != want {
		err = fmt.Errorf("unexpected reply of %d values for %d keys", len(vals), len(keys))
	}
	if err != nil {
		return nil, fmt.Errorf("rediskit: get many: %w", err)
	}
	if wrong, _ := vals[len(keys)].(int64); wrong > 0 {
		return nil, fmt.Errorf("rediskit: get many: %q: %w", keys[wrong-1], ErrWrongType)
	}
	out := make([]reply, len(keys))
	for i := range keys {
		out[i].pttl = -1
		if withTTL {
			ms, _ := vals[len(keys)+1+i].(int64)
			out[i].pttl = pttlOf(time.Duration(ms) * time.Millisecond)
		}
		s, ok := vals[i].(string)
		if !ok {
			out[i].err = redis.Nil
			continue
		}
		out[i].b = []byte(s)
	}
	return out, nil
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
	keys := make([]string, 0, len(encoded))
	for key := range encoded {
		keys = append(keys, key)
	}
	err = c.write(ctx, func(p redis.Cmdable) error {
		var err error
		for key, b := range encoded {
			err = p.Set(ctx, c.cfg.prefix+key, b, c.storeTTL(ttl)).Err()
		}
		return err // the one key's, when not pipelined
	}, keys...)
	if err != nil {
		return fmt.Errorf("rediskit: set many: %w", err)
	}
	return nil
}

// write makes a write of keys in one round trip: the commands cmds sends,
// pipelined (go-redis sends a pipeline to each node, in parallel) when
// there are several keys or the write is published for the other
// processes' local tiers; unpipelined, cmds returns the command's error.
// The local tier drops keys once the write is made, or has failed (it may
// have been made).
func (c *Cache[T]) write(ctx context.Context, cmds func(p redis.Cmdable) error, keys ...string) error {
	var err error
	if len(keys) == 1 && (c.local == nil || !c.local.inv.publishes()) {
		err = cmds(c.client)
	} else {
		_, err = c.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			_ = cmds(p)
			if c.local != nil {
				c.local.publishIn(ctx, p, keys...)
			}
			return nil
		})
	}
	if c.local != nil {
		c.local.invalidate(keys...)
	}
	return err
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
