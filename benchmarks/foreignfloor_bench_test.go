package benchmarks

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkForeignFloor is the floor BenchmarkForeignRelease's gaps are
// held against, made the same way: a holder takes a key with SET NX and,
// after the same random pause (up to 3 × 512 ms, with 16 keys handed over
// at once), releases it with DEL; a waiter that is told at once, by a Go
// channel, that the DEL returned takes the key with SET NX. The gap, from
// the DEL's start to the SET NX's reply, is two round trips made by idle
// connections, plus a goroutine's wake-up: what an ideal waiter would pay.
func BenchmarkForeignFloor(b *testing.B) {
	waiters := newClients(b, envRedis)
	holders := newClients(b, envRedis)
	ctx := context.Background()
	const pauseCap = 512 * time.Millisecond
	handOff := func() (time.Duration, error) {
		key := uniqueKey("floor")
		if err := holders[0].SetNX(ctx, key, "holder", 10*time.Second).Err(); err != nil {
			return 0, err
		}
		released := make(chan struct{})
		got := make(chan error, 1)
		var at time.Time
		go func() {
			<-released
			err := waiters[0].SetNX(ctx, key, "waiter", 10*time.Second).Err()
			at = time.Now()
			got <- err
		}()
		time.Sleep(rand.N(3 * pauseCap))
		start := time.Now()
		if err := holders[0].Del(ctx, key).Err(); err != nil {
			return 0, err
		}
		close(released)
		if err := <-got; err != nil {
			return 0, err
		}
		return at.Sub(start), waiters[0].Del(ctx, key).Err()
	}
	b.ResetTimer()
	gaps := handOffs(b, min(foreignWorkers, b.N), func(int) (time.Duration, error) { return handOff() })
	b.StopTimer()
	gaps.reportMs(b, "gap-")
}
