package benchmarks

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// floorLocker is not a lock library: it is the least a fair hand-off
// between processes can cost, measured beside the libraries as the
// LockFleet row "floor-fifo". A waiter that finds the key held joins a
// list in the same script, then blocks reading its own pub/sub connection
// (no goroutine between it and the socket); the release, one script,
// gives the key to the list's head and publishes to it, so the head holds
// the lock when the message arrives, with no request of its own. Two
// requests per contended acquisition (the failed attempt, the release), one
// wake-up of another process per hand-off.
//
// It handles no fault at all (a waiter that dies keeps the lock for its
// TTL, a lost message strands the head, nothing bounds a wait but the
// caller's), which is why it is a floor and not a lock; its TTL is the
// caller's, set by the release, with no claim bound to confirm.
//
// The row "floor-fifo-confirm" adds what a claim bound costs a waiter that
// counts on its TTL (rediskit's AcquireWithTimeout across processes): the
// head, told it holds the key, renews it for its TTL with one round trip
// (PEXPIRE) before it counts as holding it.
type floorLocker struct {
	c       *redis.Client
	id      string
	ps      *redis.PubSub
	err     error // the subscription's, returned by every acquire
	confirm bool  // renew a lock handed over before holding it
}

var (
	libFloor        = lockLib{"floor-fifo", newFloorLocker}
	libFloorConfirm = lockLib{"floor-fifo-confirm", func(clients []*redis.Client) locker {
		f := newFloorLocker(clients).(*floorLocker)
		f.confirm = true
		return f
	}}
)

func newFloorLocker(clients []*redis.Client) locker {
	c := clients[0]
	id := uniqueKey("floor")
	ps := c.Subscribe(context.Background(), floorChannel(id))
	f := &floorLocker{c: c, id: id, ps: ps}
	if _, err := ps.Receive(context.Background()); err != nil {
		f.err = fmt.Errorf("floor locker: subscribe: %w", err)
	}
	return f
}

func floorChannel(id string) string { return "floor:" + id }

var floorAcquire = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then
	return 1
end
if ARGV[3] == '1' then
	redis.call('RPUSH', KEYS[2], ARGV[1])
end
return 0
`)

var floorRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
local head = redis.call('LPOP', KEYS[2])
if head then
	redis.call('SET', KEYS[1], head, 'PX', ARGV[2])
	redis.call('PUBLISH', 'floor:' .. head, '')
	return 2
end
redis.call('DEL', KEYS[1])
return 1
`)

func (f *floorLocker) acquire(ctx context.Context, key string, ttl, wait time.Duration) (func(context.Context) error, error) {
	if f.err != nil {
		return nil, f.err
	}
	keys := []string{key, key + ":floor-queue"}
	queue := "0"
	if wait > 0 {
		queue = "1"
	}
	n, err := floorAcquire.Run(ctx, f.c, keys, f.id, ttl.Milliseconds(), queue).Int()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		if wait == 0 {
			return nil, errNotObtained
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		_, err := f.ps.ReceiveMessage(wctx)
		cancel()
		if err != nil {
			return nil, err
		}
		if f.confirm {
			if err := f.c.PExpire(ctx, key, ttl).Err(); err != nil {
				return nil, err
			}
		}
	}
	return func(ctx context.Context) error {
		n, err := floorRelease.Run(ctx, f.c, keys, f.id, ttl.Milliseconds()).Int()
		if err == nil && n == 0 {
			err = errNotObtained
		}
		return err
	}, nil
}

func (f *floorLocker) close() { _ = f.ps.Close() }
