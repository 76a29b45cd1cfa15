package rediskit

import (
	"fmt"
	"sync/atomic"
	"time"
)

// EventKind says what an [Event] reports.
type EventKind int

// The kinds of [Event]. Lock events come from a Locker, cache events from a
// Cache.
const (
	// EventAcquired: a lock was obtained. Event.Wait is how long the
	// acquisition took, waiting included.
	EventAcquired EventKind = iota + 1
	// EventContended: an attempt found the lock held by another owner.
	EventContended
	// EventNotObtained: an acquisition gave up: the lock was held and the
	// wait, if any, ran out.
	EventNotObtained
	// EventLost: a lock held by WithLock could not be refreshed. Event.Err
	// says why.
	EventLost
	// EventReleased: a lock was released by its owner.
	EventReleased

	// EventHit: a cache read found the key.
	EventHit
	// EventMiss: a cache read did not find the key.
	EventMiss
	// EventLoad: GetOrLoad's loader returned a value, or an error wrapping
	// ErrNotFound. Event.Wait is how long it ran.
	EventLoad
	// EventLoadError: GetOrLoad's loader failed. Event.Err is its error.
	EventLoadError
	// EventRedisError: Redis failed while the Cache carried on without it
	// (GetOrLoad answered from the loader). Event.Err is the Redis error.
	EventRedisError
	// EventStale: GetOrLoad answered with a value past its TTL, within the
	// window of [WithStaleWhileRevalidate] or, after the loader failed, of
	// [WithStaleIfError].
	EventStale
	// EventRefresh: GetOrLoad started a background refresh of a value
	// (stale, or near its expiry with [WithEarlyRefresh]).
	EventRefresh
	// EventLocalHit: a cache read was answered by the local tier
	// ([WithLocalCache]) without a round trip.
	EventLocalHit
)

var eventNames = [...]string{
	EventAcquired:    "acquired",
	EventContended:   "contended",
	EventNotObtained: "not obtained",
	EventLost:        "lost",
	EventReleased:    "released",
	EventHit:         "hit",
	EventMiss:        "miss",
	EventLoad:        "load",
	EventLoadError:   "load error",
	EventRedisError:  "redis error",
	EventStale:       "stale",
	EventRefresh:     "refresh",
	EventLocalHit:    "local hit",
}

// String returns the kind's name, such as "acquired".
func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is what a Locker or a Cache reports to the hook set with
// [WithHook].
type Event struct {
	Kind EventKind
	// Key is the key as the caller passed it, without the key prefix.
	Key string
	// Wait is the time an acquisition or a load took, where the kind says
	// so; otherwise zero.
	Wait time.Duration
	// Err is the error behind EventLost, EventLoadError and
	// EventRedisError; otherwise nil.
	Err error
}

// LockStats counts what a Locker has done since it was created.
type LockStats struct {
	Acquired    uint64 // locks obtained
	Contended   uint64 // attempts that found the lock held
	NotObtained uint64 // acquisitions that gave up
	Lost        uint64 // locks WithLock could not keep
	Released    uint64 // locks released by their owner
}

// CacheStats counts what a Cache has done since it was created.
type CacheStats struct {
	Hits        uint64 // reads that found the key in Redis
	LocalHits   uint64 // reads answered by the local tier, without a round trip
	Misses      uint64 // reads that did not
	Loads       uint64 // loader calls that returned a value or ErrNotFound
	LoadErrors  uint64 // loader calls that failed
	RedisErrors uint64 // Redis failures that GetOrLoad answered past
	Stale       uint64 // values GetOrLoad served past their TTL
	Refreshes   uint64 // background refreshes GetOrLoad started
}

// counters holds one atomic counter per event kind, so that Stats of both
// a Locker and a Cache come from the same emit path.
type counters [len(eventNames)]atomic.Uint64

func (c *counters) get(k EventKind) uint64 { return c[k].Load() }

// emit counts e and passes it to the hook, if any.
func (cfg *config) emit(c *counters, e Event) {
	c[e.Kind].Add(1)
	if cfg.hook != nil {
		cfg.hook(e)
	}
}
