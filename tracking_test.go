package rediskit_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// firstShort sleeps briefly once, then a minute: after the first sleep,
// only a wake-up can end a wait in time.
type firstShort struct{}

func (firstShort) Next(retry int) time.Duration {
	if retry <= 2 { // the first attempt, and the one made once subscribed
		return 20 * time.Millisecond
	}
	return time.Minute
}

// acquireAndRelease waits up to timeout for a minute-long lock on key, in
// the background, releases it, and sends the first error, if any.
func acquireAndRelease(l *rediskit.Locker, key string, timeout time.Duration) <-chan error {
	ctx := context.Background()
	got := make(chan error, 1)
	go func() {
		lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, timeout)
		if err == nil {
			err = lk.Release(ctx)
		}
		got <- err
	}()
	return got
}

// A release by a program that publishes nothing (here a DEL, as
// redis-cli would) wakes a waiting acquisition through Redis's tracking of
// the key, not after its minute-long backoff. On a server without tracking
// (miniredis), the wait falls back on backoff and is not tested here.
func TestForeignReleaseWakesWaiterThroughTracking(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if b.mr != nil {
			t.Skip("miniredis has no CLIENT TRACKING: waits rely on backoff")
		}
		ctx := context.Background()
		for _, release := range []struct {
			name string
			do   func(key string) error
		}{
			{"del", func(key string) error { return b.client.Del(ctx, key).Err() }},
			{"token-checked script", func(key string) error {
				return redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`).
					Run(ctx, b.client, []string{key}, "foreign").Err()
			}},
		} {
			t.Run(release.name, func(t *testing.T) {
				key := b.key("tracked-" + release.name)
				require.NoError(t, b.client.Set(ctx, key, "foreign", time.Minute).Err())
				l := newLocker(t, b.client, rediskit.WithRetryBackoff(firstShort{}))
				got := acquireAndRelease(l, key, 30*time.Second)
				time.Sleep(300 * time.Millisecond) // past the short sleep: now in the minute-long one
				require.NoError(t, release.do(key))
				// Without tracking the waiter would sleep its minute and
				// time out after 30 s.
				assert.NoError(t, waitFor(t, got, 10*time.Second, "the waiter"))
				require.NoError(t, l.Close())
			})
		}
	})
}

// A waiter whose sleeps are long watches its key through Redis's tracking
// from its first sleep: a DEL during that sleep ends the wait at once.
func TestLongSleepWatchesKeyAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if b.mr != nil {
			t.Skip("miniredis has no CLIENT TRACKING: waits rely on backoff")
		}
		ctx := context.Background()
		key := b.key("tracked-long")
		require.NoError(t, b.client.Set(ctx, key, "foreign", time.Minute).Err())
		l := newLocker(t, b.client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(time.Minute)))
		got := acquireAndRelease(l, key, 30*time.Second)
		time.Sleep(300 * time.Millisecond) // in its first, minute-long sleep
		require.NoError(t, b.client.Del(ctx, key).Err())
		assert.NoError(t, waitFor(t, got, 10*time.Second, "the waiter"))
	})
}
