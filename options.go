package rediskit

import (
	"fmt"
	"math"
	"time"
)

// LockerOption configures a Locker: [NewLocker] and [NewRedlock] take
// them. (WithLock's own options, for one call, are [LockOption]s.)
type LockerOption interface {
	applyLocker(*config)
}

// CacheOption configures a Cache: [NewCache] takes them.
type CacheOption interface {
	applyCache(*config)
}

// Option configures a Locker and a Cache alike: it is both a LockerOption
// and a CacheOption. Options meant for one of the two have that one's type,
// so that one given to the other does not compile. Each documents its
// default. An option given an invalid value does not panic: every method of
// the Locker or Cache built with it returns an error wrapping
// [ErrInvalidArgument].
type Option interface {
	LockerOption
	CacheOption
}

// config is what the options set. The literal in defaults is the only
// place defaults live.
type config struct {
	prefix string
	hook   func(Event)

	// Locker.
	backoff Backoff

	// Cache.
	defaultTTL  time.Duration
	codec       Codec
	jitter      float64
	negativeTTL time.Duration // 0: negative caching off
	loadTimeout time.Duration
	leaseTTL    time.Duration // 0: one load per process, not per fleet
	staleServe  time.Duration // stale-while-revalidate window; 0: off
	staleError  time.Duration // stale-if-error window; 0: off
	earlyBeta   float64       // XFetch's beta; 0: no early refresh
	localMax    int           // local tier's entries; 0: no local tier
	localTTL    time.Duration

	err error // the first invalid option
}

// defaults is the one literal of defaults.
func defaults() config {
	return config{
		backoff:     ExponentialBackoff(8*time.Millisecond, 512*time.Millisecond),
		defaultTTL:  time.Hour,
		codec:       JSONCodec{},
		loadTimeout: time.Minute,
		leaseTTL:    3 * time.Second,
	}
}

func newLockerConfig(opts []LockerOption) config {
	c := defaults()
	for _, o := range opts {
		if o != nil {
			o.applyLocker(&c)
		}
	}
	return c
}

func newCacheConfig(opts []CacheOption) config {
	c := defaults()
	for _, o := range opts {
		if o != nil {
			o.applyCache(&c)
		}
	}
	return c
}

func (c *config) invalid(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("option "+format+": %w", append(args, ErrInvalidArgument)...)
	}
}

// WithKeyPrefix returns an Option that prepends prefix to every Redis key
// the Locker or Cache touches, the fencing counters of locks included. The
// default is no prefix. Cache keys and lock keys passed to the methods, and
// the keys reported by [Lock.Key] and in events, stay unprefixed.
func WithKeyPrefix(prefix string) Option { return prefixOption(prefix) }

type prefixOption string

func (o prefixOption) applyLocker(c *config) { o.applyCache(c) }
func (o prefixOption) applyCache(c *config)  { c.prefix = string(o) }
func (o prefixOption) String() string        { return fmt.Sprintf("WithKeyPrefix(%q)", string(o)) }

// WithHook returns an Option that calls hook for every [Event] of a Locker
// or Cache. The hook runs synchronously on the goroutine that caused the
// event, so it must be fast and must not block; it may be called
// concurrently. The default is no hook: the package never logs.
func WithHook(hook func(Event)) Option { return hookOption{hook} }

type hookOption struct{ hook func(Event) }

func (o hookOption) applyLocker(c *config) { o.applyCache(c) }
func (o hookOption) applyCache(c *config)  { c.hook = o.hook }
func (o hookOption) String() string        { return "WithHook(...)" }

// WithRetryBackoff returns an Option that sets how long a Locker's waiting
// acquisitions, and a Cache's GetOrLoad waiting for another process's load
// (see [WithLoadLease]), sleep between attempts. Whatever b returns, a waiter never
// sleeps past the holder's remaining TTL nor past its own timeout. The
// default is ExponentialBackoff(8*time.Millisecond, 512*time.Millisecond).
// A nil b is invalid.
func WithRetryBackoff(b Backoff) Option { return backoffOption{b} }

type backoffOption struct{ b Backoff }

func (o backoffOption) applyLocker(c *config) { o.applyCache(c) }
func (o backoffOption) applyCache(c *config) {
	if o.b == nil {
		c.invalid("WithRetryBackoff(nil)")
		return
	}
	c.backoff = o.b
}
func (o backoffOption) String() string { return fmt.Sprintf("WithRetryBackoff(%v)", o.b) }

// WithDefaultTTL returns a CacheOption that sets the expiry a Cache uses for a
// write with ttl 0. The default is one hour. A ttl below one millisecond is
// invalid.
func WithDefaultTTL(ttl time.Duration) CacheOption { return defaultTTLOption(ttl) }

type defaultTTLOption time.Duration

func (o defaultTTLOption) applyCache(c *config) {
	if time.Duration(o) < time.Millisecond {
		c.invalid("WithDefaultTTL(%v)", time.Duration(o))
		return
	}
	c.defaultTTL = time.Duration(o)
}
func (o defaultTTLOption) String() string { return fmt.Sprintf("WithDefaultTTL(%v)", time.Duration(o)) }

// WithCodec returns a CacheOption that sets how a Cache encodes values. The
// default is [JSONCodec], which stores plain JSON. A nil codec is invalid.
func WithCodec(codec Codec) CacheOption { return codecOption{codec} }

type codecOption struct{ codec Codec }

func (o codecOption) applyCache(c *config) {
	if o.codec == nil {
		c.invalid("WithCodec(nil)")
		return
	}
	c.codec = o.codec
}
func (o codecOption) String() string { return fmt.Sprintf("WithCodec(%T)", o.codec) }

// WithTTLJitter returns a CacheOption that shortens each Cache write's TTL by a
// random amount of up to fraction of it, so that keys written together do
// not all expire together. A TTL is never lengthened. The default is 0, no
// jitter; a fraction outside [0, 1) is invalid.
func WithTTLJitter(fraction float64) CacheOption { return jitterOption(fraction) }

type jitterOption float64

func (o jitterOption) applyCache(c *config) {
	if !(o >= 0 && o < 1) { // also rejects NaN
		c.invalid("WithTTLJitter(%v)", float64(o))
		return
	}
	c.jitter = float64(o)
}
func (o jitterOption) String() string { return fmt.Sprintf("WithTTLJitter(%v)", float64(o)) }

// WithNegativeCaching returns a CacheOption that makes Cache.GetOrLoad remember,
// for ttl, that its loader returned an error wrapping [ErrNotFound]: until
// then GetOrLoad and Get return ErrNotFound for the key without calling the
// loader. The marker stored in Redis starts with a NUL byte, so it can never
// be mistaken for a JSON value. A ttl of 0 means one minute; a negative ttl
// is invalid. Negative caching is off by default.
func WithNegativeCaching(ttl time.Duration) CacheOption { return negativeOption(ttl) }

type negativeOption time.Duration

func (o negativeOption) applyCache(c *config) {
	switch d := time.Duration(o); {
	case d == 0:
		c.negativeTTL = time.Minute
	case d < time.Millisecond:
		c.invalid("WithNegativeCaching(%v)", d)
	default:
		c.negativeTTL = d
	}
}
func (o negativeOption) String() string {
	return fmt.Sprintf("WithNegativeCaching(%v)", time.Duration(o))
}

// WithLoadTimeout returns a CacheOption that bounds each load that
// Cache.GetOrLoad runs. The load runs on a context detached from the
// callers' cancellation, so this bound, and [Cache.Close], are what stop a
// load that every caller has given up on. The default is one minute; a
// timeout below one millisecond is invalid.
func WithLoadTimeout(timeout time.Duration) CacheOption { return loadTimeoutOption(timeout) }

type loadTimeoutOption time.Duration

func (o loadTimeoutOption) applyCache(c *config) {
	if time.Duration(o) < time.Millisecond {
		c.invalid("WithLoadTimeout(%v)", time.Duration(o))
		return
	}
	c.loadTimeout = time.Duration(o)
}
func (o loadTimeoutOption) String() string {
	return fmt.Sprintf("WithLoadTimeout(%v)", time.Duration(o))
}

// WithLoadLease returns a CacheOption that sets how Cache.GetOrLoad keeps
// processes from loading the same key at once. On a miss, a process takes
// the key's lease (a companion key in the same cluster slot, "{tag}key:lease",
// holding a random token) in the same round trip as its read, and loads; the
// other processes wait for the value, woken by a message when it is
// written (sharded pub/sub on a Cluster), or load themselves if the
// holder's load fails. The key itself stays absent until the value is
// written, so other programs see a plain miss. The holder keeps the lease
// alive while it loads, so ttl bounds how long a crashed holder delays the
// others. A [Cache.Delete] during the load removes the lease, and the
// loaded value, possibly stale, is then not written; nor is it over a value
// Set meanwhile. Waiting processes also poll with the [WithRetryBackoff]
// backoff, never past the lease's remaining TTL.
//
// The default is a lease of 3 seconds. A ttl of 0 turns leases off: loads
// are then shared within a process only, without the lease's writes. A ttl
// between 0 and 10 milliseconds, or negative, is invalid.
func WithLoadLease(ttl time.Duration) CacheOption { return leaseOption(ttl) }

type leaseOption time.Duration

func (o leaseOption) applyCache(c *config) {
	if d := time.Duration(o); d != 0 && d < 10*time.Millisecond {
		c.invalid("WithLoadLease(%v)", d)
		return
	}
	c.leaseTTL = time.Duration(o)
}
func (o leaseOption) String() string { return fmt.Sprintf("WithLoadLease(%v)", time.Duration(o)) }

// WithStaleWhileRevalidate returns a CacheOption that lets Cache.GetOrLoad
// answer, at once, with a value up to window past its TTL, and refresh it
// with one background load: one per key in the process, and one in the
// fleet while leases are on ([WithLoadLease]). The refresh replaces the
// value only if it is still the one that was served: a Set or Delete
// meanwhile wins. A refresh whose loader returns [ErrNotFound] removes the
// value (or, with [WithNegativeCaching], replaces it with its marker).
//
// Values stay plain JSON: the Cache writes them (Set, SetMany, GetOrLoad)
// with a Redis TTL of their TTL plus the longest stale window, and
// GetOrLoad reads the remaining TTL in the same round trip as the value, so
// a value's last window of its Redis TTL is its stale period, whoever wrote
// it. Get and GetMany, which cannot refresh, return a value until Redis
// drops it. Off by default; a negative window is invalid.
func WithStaleWhileRevalidate(window time.Duration) CacheOption {
	return staleOption{window, false}
}

// WithStaleIfError returns a CacheOption that lets Cache.GetOrLoad answer with
// a value up to window past its TTL when the loader fails on it: the
// loader is called as on a miss (one shared load), and its error goes to
// the hook ([EventLoadError]) instead of the callers. A miss, or Redis
// failing, has no value to fall back on and returns the loader's error as
// before. Storage is as for [WithStaleWhileRevalidate], whose window comes
// first when both are set. Off by default; a negative window is invalid.
func WithStaleIfError(window time.Duration) CacheOption { return staleOption{window, true} }

type staleOption struct {
	window  time.Duration
	ifError bool
}

func (o staleOption) applyCache(c *config) {
	switch {
	case o.window < 0:
		c.invalid("%v", o)
	case o.ifError:
		c.staleError = o.window
	default:
		c.staleServe = o.window
	}
}
func (o staleOption) String() string {
	if o.ifError {
		return fmt.Sprintf("WithStaleIfError(%v)", o.window)
	}
	return fmt.Sprintf("WithStaleWhileRevalidate(%v)", o.window)
}

// WithEarlyRefresh returns a CacheOption that makes Cache.GetOrLoad refresh hot
// values before they expire, by probabilistic early recomputation (XFetch,
// Vattani, Chierichetti and Lowenstein, VLDB 2015): a read with time r left
// before the value's TTL runs out starts a background refresh when
// -delta·beta·ln(u) ≥ r, u uniform in (0, 1], delta being how long the
// Cache's loads take: a moving average of the loads it timed, all keys
// together (the paper times each key's), and 100 ms until it has timed
// one. The more a
// key is read and the nearer its expiry, the likelier one read refreshes
// it, so a hot key's expiry causes no burst of misses; a cold key is left
// to expire. Refreshes are shared as with [WithStaleWhileRevalidate]. beta
// 1 is the paper's choice; above 1 refreshes earlier. GetOrLoad then reads
// the value's remaining TTL in the same round trip. Off by default; beta
// must be positive.
func WithEarlyRefresh(beta float64) CacheOption { return earlyOption(beta) }

type earlyOption float64

func (o earlyOption) applyCache(c *config) {
	if !(o > 0) || math.IsInf(float64(o), 1) {
		c.invalid("%v", o)
		return
	}
	c.earlyBeta = float64(o)
}
func (o earlyOption) String() string { return fmt.Sprintf("WithEarlyRefresh(%v)", float64(o)) }

// staleWindow is how long past their TTL the Cache keeps values in Redis.
func (c *config) staleWindow() time.Duration { return max(c.staleServe, c.staleError) }

// readsExpiry reports whether GetOrLoad reads values' remaining TTLs.
func (c *config) readsExpiry() bool { return c.staleWindow() > 0 || c.earlyBeta > 0 }

// WithLocalCache returns a CacheOption that puts an in-process first level in
// front of Redis: up to maxEntries decoded values, each kept at most ttl
// (and never past its TTL in Redis), evicted by W-TinyLFU
// (github.com/maypok86/otter/v2). Get, GetMany and GetOrLoad answer from it
// without a round trip when they can, and fill it from what they read;
// [CacheStats].LocalHits counts its hits.
//
// Redis keeps it coherent, whoever writes: the Cache hears from Redis of
// every key written, deleted, expired or evicted under its prefix (CLIENT
// TRACKING in BCAST mode, Redis 6 and later, on one connection of its own
// per node; on a Cluster, on every master), and drops the key as the
// message arrives, about when the writer gets its reply. A value read
// before a write it was told about is never served after it. When that
// connection breaks, the whole tier is emptied at once; when it goes
// silent (a network that drops everything), within a second (it is pinged
// after half a second of silence). The tier fills again only once the
// Cache listens again. Give the Cache a prefix of its own
// ([WithKeyPrefix]): without one it hears of every write to the database.
// The Cache's own writes drop its entries before they return.
//
// On a Cluster the tier fills only while it listens on every master (the
// list of masters is read again, in the background, every second): while
// one is down, reads go to Redis. A master that holds no slots yet is not
// listened to until the slot map names it; a key read from it meanwhile
// (through an ASK, during resharding) stays in the tier until its listener
// is up, which empties the tier. The tier assumes its reads reach masters:
// do not use it with a client that reads replicas only (a Sentinel client
// with ReplicaOnly), whose replies may be older than what the tier heard.
//
// Where Redis cannot track keys (Redis 5, miniredis, a proxy that refuses
// CLIENT TRACKING, an ACL user without it, a Ring), the Caches publish the
// keys they write on a pub/sub channel that all of them listen to: writes
// by other programs are then seen only when ttl runs out.
//
// The tier keeps the values that reads decode, and returns them as they
// are: what Get, GetMany and GetOrLoad return (from the tier or from
// Redis) is a copy of T whose slices, maps and pointers are shared with
// the tier and other callers, and must not be modified. Off by default;
// maxEntries and ttl must be positive.
func WithLocalCache(maxEntries int, ttl time.Duration) CacheOption {
	return localOption{maxEntries, ttl}
}

type localOption struct {
	maxEntries int
	ttl        time.Duration
}

func (o localOption) applyCache(c *config) {
	if o.maxEntries <= 0 || o.ttl < time.Millisecond {
		c.invalid("WithLocalCache(%d, %v)", o.maxEntries, o.ttl)
		return
	}
	c.localMax, c.localTTL = o.maxEntries, o.ttl
}
func (o localOption) String() string {
	return fmt.Sprintf("WithLocalCache(%d, %v)", o.maxEntries, o.ttl)
}
