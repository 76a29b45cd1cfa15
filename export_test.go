package rediskit

import "time"

// Internals exposed to the black-box tests in package rediskit_test.
var (
	CompanionKey = companionKey
	KeySlot      = keySlot
)

// SetNotifyTimes shortens the subscription's linger and tick, and returns
// a function restoring them.
func SetNotifyTimes(linger, tick time.Duration) (restore func()) {
	oldLinger, oldTick := notifyLinger, notifyTick
	notifyLinger, notifyTick = linger, tick
	return func() { notifyLinger, notifyTick = oldLinger, oldTick }
}

// InFlight reports whether c has a shared load or a refresh of key in
// progress: until a shared load's value is stored, GetOrLoad answers from
// it without reading Redis.
func InFlight[T any](c *Cache[T], key string) bool {
	c.flights.mu.Lock()
	defer c.flights.mu.Unlock()
	_, refreshing := c.flights.refreshing[key]
	return c.flights.m[key] != nil || refreshing
}

// LocalHas reports whether c's local tier holds key.
func LocalHas[T any](c *Cache[T], key string) bool {
	_, ok := c.local.get(key)
	return ok
}
