package rediskit

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

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

// QueueKey returns the key of the queue of waiters for the lock on rkey
// (the key with its prefix).
func QueueKey(rkey string) string { return newLockNames(rkey, true).queue }

// DeadQueueEntry returns a queue entry of a waiter whose Locker nobody
// runs: a process that crashed.
func DeadQueueEntry(ttl time.Duration) string {
	e, _ := newEntry(ttl, newID())
	return e
}

// SetQueueTimes shortens how long a waiter's queue entry outlives its last
// attempt, and the waiters' sleep between attempts, and returns a function
// restoring them.
func SetQueueTimes(life, beat time.Duration) (restore func()) {
	oldLife, oldBeat := queueLife, queueBeat
	queueLife, queueBeat = life, beat
	return func() { queueLife, queueBeat = oldLife, oldBeat }
}

// LockerChannel returns the channel on which l's waiters for the lock on
// rkey (the key with its prefix) are woken.
func LockerChannel(l *Locker, rkey string) string {
	return companionKey(rkey, ":fence") + ":" + l.store.notifier().id
}

// AcquireScriptHash is the SHA1 the acquire script runs under (EVALSHA).
var AcquireScriptHash = acquireScript.Hash()

// QueueEntryChannel returns the channel on which the Locker of a queue
// entry of the lock on rkey (the key with its prefix) is told of it.
func QueueEntryChannel(rkey, entry string) string {
	_, rest, _ := strings.Cut(entry, ":")
	pid, _, _ := strings.Cut(rest, ":")
	return companionKey(rkey, ":fence") + ":" + pid
}

// ValidUntil returns until when lk is sure to be held, as of its
// acquisition or last refresh.
func ValidUntil(lk *Lock) time.Time { return lk.validUntil }

// LocalWaiters returns how many goroutines wait in process for l's lock on
// rkey (the key with its prefix).
func LocalWaiters(l *Locker, rkey string) int {
	n := l.store.notifier()
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.holds[rkey].waiters)
}

// MaxNamed is how many waiters in process a release names.
const MaxNamed = maxNamed

// ReleaseScriptHash is the SHA1 the release script runs under (EVALSHA).
var ReleaseScriptHash = releaseScript.Hash()

// SilentServer accepts TCP connections and never answers: a TLS handshake
// or a command sent to it waits for the client's own timeouts. It is what a
// client meets when it makes a new connection to a server that stopped
// answering (a cut link, a hung proxy). cut closes it and the connections
// it accepted, which ends the reads waiting on them; the test's end does
// too.
func SilentServer(t *testing.T) (addr string, cut func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn // the accepting goroutine's, then cut's once it is done
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	cut = sync.OnceFunc(func() {
		_ = ln.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	t.Cleanup(cut)
	return ln.Addr().String(), cut
}
