package rediskit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
)

// A localTier is a Cache's in-process first level ([WithLocalCache]): the
// decoded values of keys read from Redis, bounded in number (W-TinyLFU
// eviction, by otter) and in age, and kept coherent with Redis by an
// invalidator.
//
// It keeps decoded values, not bytes: a hit costs no decoding and no
// allocation, and hits return copies of the same T, so slices, maps and
// pointers inside T are shared between callers (see WithLocalCache).
//
// Only reads fill it, and a read may fill it only if its key's listener
// was up before the read was sent, and nothing invalidated the key (or
// flushed the tier) between then and the reply: an invalidation can
// overtake the reply of a read made before the write it reports, since
// they come on different connections.
type localTier[T any] struct {
	store  *otter.Cache[string, localEntry[T]]
	ttl    time.Duration
	prefix string
	inv    *invalidator

	mu      sync.Mutex
	epoch   uint64                  // bumped by every flush
	pending map[string]*pendingFill // keys being read, to fill the tier
}

// localEntry is a key's value in the tier, or its not-found marker.
type localEntry[T any] struct {
	v        T
	notFound bool
	ttl      time.Duration // this entry's: the tier's, or less when the value's TTL ends sooner
	until    time.Time     // when the value's TTL ends; zero when it has none or it is not known
}

// pendingFill counts the reads of a key in flight, and the invalidations
// of the key heard meanwhile.
type pendingFill struct {
	refs int
	gen  uint64
}

// A fill is one read that may fill the tier, begun before it is sent.
type fill struct {
	key   string
	p     *pendingFill // nil: the read may not fill the tier
	gen   uint64
	epoch uint64
}

func newLocalTier[T any](client redis.UniversalClient, prefix string, maxEntries int, ttl time.Duration) *localTier[T] {
	l := &localTier[T]{ttl: ttl, prefix: prefix, pending: map[string]*pendingFill{}}
	l.store = otter.Must(&otter.Options[string, localEntry[T]]{
		MaximumSize: maxEntries,
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[string, localEntry[T]]) time.Duration {
			return e.Value.ttl
		}),
	})
	l.inv = newInvalidator(client, prefix, l.invalidateRedisKeys, l.flush)
	return l
}

// get returns key's entry, if the tier has one.
func (l *localTier[T]) get(key string) (localEntry[T], bool) {
	return l.store.GetIfPresent(key)
}

// begin starts a read of key whose reply may fill the tier.
func (l *localTier[T]) begin(key string) fill {
	// Registered first: a listener that goes down after ready said it was
	// up flushes the tier, which the fill then sees.
	f := l.register(key)
	if !l.inv.ready() {
		l.end(f, nil)
		return fill{}
	}
	return f
}

// register records a read of key in flight, whose key's listener is up.
func (l *localTier[T]) register(key string) fill {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pending[key]
	if p == nil {
		p = &pendingFill{}
		l.pending[key] = p
	}
	p.refs++
	return fill{key: key, p: p, gen: p.gen, epoch: l.epoch}
}

// end ends the read f, storing e (when not nil) unless the key was
// invalidated, or the tier flushed, since f began.
func (l *localTier[T]) end(f fill, e *localEntry[T]) {
	if f.p == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e != nil && e.ttl > 0 && f.p.gen == f.gen && f.epoch == l.epoch {
		l.store.Set(f.key, *e)
	}
	if f.p.refs--; f.p.refs == 0 {
		delete(l.pending, f.key)
	}
}

// entry makes the entry of a value read from Redis with remaining Redis
// TTL pttl (negative: none), of which the last staleWindow is its stale
// period; nil when it is not to be kept.
func (l *localTier[T]) entry(v T, notFound bool, pttl, staleWindow time.Duration) *localEntry[T] {
	e := &localEntry[T]{v: v, notFound: notFound, ttl: l.ttl}
	if pttl >= 0 {
		fresh := pttl - staleWindow
		e.ttl = min(e.ttl, fresh)
		e.until = time.Now().Add(fresh)
	}
	return e
}

// invalidate drops keys from the tier, and keeps reads of them in flight
// from filling it.
func (l *localTier[T]) invalidate(keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, key := range keys {
		if p := l.pending[key]; p != nil {
			p.gen++
		}
		l.store.Invalidate(key)
	}
}

// invalidateRedisKeys is invalidate for keys as Redis names them.
func (l *localTier[T]) invalidateRedisKeys(rkeys []string) {
	keys := rkeys[:0:0]
	for _, rkey := range rkeys {
		if key, ok := strings.CutPrefix(rkey, l.prefix); ok {
			keys = append(keys, key)
		}
	}
	l.invalidate(keys...)
}

// flush empties the tier, and keeps reads in flight from filling it.
func (l *localTier[T]) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.epoch++
	l.store.InvalidateAll()
}

// publishIn adds to p, a write's pipeline, the message that tells the
// other processes that keys changed, when they rely on the fallback
// channel. The write's caller then drops the keys with invalidate, once
// the write is made.
func (l *localTier[T]) publishIn(ctx context.Context, p redis.Pipeliner, keys ...string) {
	if l.inv.publishes() {
		l.inv.ready() // a process that only writes learns, once it listens, whether it must publish
		l.inv.publish(ctx, p, l.redisKeys(keys)...)
	}
}

// wrote drops keys that this process has written (or deleted) and, when
// the processes rely on the fallback channel, tells the others, in a round
// trip of its own.
func (l *localTier[T]) wrote(ctx context.Context, keys ...string) {
	l.invalidate(keys...)
	if l.inv.publishes() {
		l.inv.ready()
		l.inv.publish(ctx, l.inv.client, l.redisKeys(keys)...)
	}
}

func (l *localTier[T]) redisKeys(keys []string) []string {
	rkeys := make([]string, len(keys))
	for i, key := range keys {
		rkeys[i] = l.prefix + key
	}
	return rkeys
}

// close stops the tier's listeners and otter's goroutine.
func (l *localTier[T]) close() {
	l.inv.close()
	l.store.StopAllGoroutines()
	l.flush()
}

// localHit answers a read from the local tier's entry e.
func (c *Cache[T]) localHit(key string, e localEntry[T]) (T, error) {
	c.cfg.emit(&c.stats, Event{Kind: EventLocalHit, Key: key})
	if e.notFound {
		var zero T
		return zero, fmt.Errorf("rediskit: get %q: %w", key, ErrNotFound)
	}
	return e.v, nil
}

// readThrough reads key and its remaining TTL from Redis in one round trip,
// decodes it, and fills the local tier with it while it is fresh.
func (c *Cache[T]) readThrough(ctx context.Context, key string) (v T, b []byte, pttl time.Duration, err error) {
	f := c.local.begin(key)
	b, pttl, err = c.readWithTTL(ctx, key)
	v, err = c.decode(key, b, err)
	c.local.end(f, c.localEntry(v, err, pttl))
	return v, b, pttl, err
}

// localEntry is the local tier's entry for a decoded read, nil when the
// read is not to be kept: a miss, an error, a value past its TTL.
func (c *Cache[T]) localEntry(v T, err error, pttl time.Duration) *localEntry[T] {
	switch {
	case errors.Is(err, ErrNotFound):
		return c.local.entry(v, true, pttl, 0) // a marker has no stale period
	case err != nil || c.pastTTL(pttl) > 0:
		return nil
	}
	return c.local.entry(v, false, pttl, c.cfg.staleWindow())
}

// wrote tells the local tier, if any, that this process wrote keys.
func (c *Cache[T]) wrote(ctx context.Context, keys ...string) {
	if c.local != nil {
		c.local.wrote(ctx, keys...)
	}
}
