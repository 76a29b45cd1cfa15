package benchmarks

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// foreignFloors are the releasers BenchmarkForeignFloor times, each the
// floor of the ForeignRelease rows whose release is made the same way:
// go-redis (SET NX, then DEL), for the releasers written in Go; and
// redis-py's Lock in a python3 process, for the redis-py row, whose own
// client time before it sends the release (about 0.2 ms here) a floor made
// in Go would leave out.
var foreignFloors = []struct {
	name string
	make func(b *testing.B, c *redis.Client) (holder, error)
}{
	{"go-redis", func(_ *testing.B, c *redis.Client) (holder, error) { return rawHolder{c}, nil }},
	{"redis-py", newRedisPy},
}

// BenchmarkForeignFloor is the floor BenchmarkForeignRelease's gaps are
// held against, made the same way: a holder takes a key and, after the same
// random pause (up to 3 × 512 ms, with 32 keys handed over at once),
// releases it; a waiter that is told at once (by a Go channel, as soon as
// the release has returned) takes the key with SET NX. The gap, from the
// release's start to the SET NX's reply, is two round trips made by idle
// connections, plus a goroutine's wake-up: what an ideal waiter would pay.
// A waiting rediskit acquisition hears of the release from Redis, which
// tells it before the releaser has its reply.
func BenchmarkForeignFloor(b *testing.B) {
	waiters := newClients(b, envRedis)
	holderClients := newClients(b, envRedis)
	for _, f := range foreignFloors {
		b.Run(f.name, func(b *testing.B) {
			benchForeignFloor(b, waiters[0].Client, holderClients[0].Client, f.make)
		})
	}
}

func benchForeignFloor(b *testing.B, waiter, holderClient *redis.Client, newHolder func(*testing.B, *redis.Client) (holder, error)) {
	ctx := context.Background()
	const ttl, pauseCap = 10 * time.Second, 512 * time.Millisecond
	holders := newHolders(b, holderClient, newHolder)
	defer closeHolders(holders)
	handOff := func(h holder) (time.Duration, error) {
		key := uniqueKey("floor")
		release, err := h.hold(ctx, key, ttl)
		if err != nil {
			return 0, err
		}
		released := make(chan struct{})
		got := make(chan error, 1)
		var at time.Time
		go func() {
			<-released
			err := waiter.SetNX(ctx, key, "waiter", ttl).Err()
			at = time.Now()
			got <- err
		}()
		time.Sleep(rand.N(3 * pauseCap))
		start, err := release(ctx)
		if err != nil {
			return 0, err
		}
		close(released)
		if err := <-got; err != nil {
			return 0, err
		}
		return at.Sub(start), waiter.Del(ctx, key).Err()
	}
	b.ResetTimer()
	gaps := handOffs(b, len(holders), func(w int) (time.Duration, error) { return handOff(holders[w]) })
	b.StopTimer()
	gaps.reportMs(b, "gap-")
	reportPresend(b, holders)
}

// rawHolder holds a key with SET NX and releases it with DEL.
type rawHolder struct{ c *redis.Client }

func (h rawHolder) hold(ctx context.Context, key string, ttl time.Duration) (func(context.Context) (time.Time, error), error) {
	if err := h.c.SetNX(ctx, key, "holder", ttl).Err(); err != nil {
		return nil, err
	}
	return func(ctx context.Context) (time.Time, error) {
		start := time.Now()
		return start, h.c.Del(ctx, key).Err()
	}, nil
}

func (rawHolder) close() {}
