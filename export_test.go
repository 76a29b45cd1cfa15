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
