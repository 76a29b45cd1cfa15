package rediskit_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// Every error the package returns says "rediskit:" once, at its start, and
// fits on one line: inner errors and sentinels carry no prefix of their own.
func TestErrorsSayRediskitOnce(t *testing.T) {
	client, _ := onMiniredis(t)
	ctx := context.Background()
	locker := newLocker(t, client)
	nilLocker := newLocker(t, nil)
	badLocker := newLocker(t, client, rediskit.WithRetryBackoff(nil))
	nilCache := newCache[int](t, nil)
	badCache := newCache[int](t, client, rediskit.WithLocalCache(0, 0))
	cache := newCache[chan int](t, client)
	redlock := rediskit.NewRedlock([]redis.UniversalClient{client, client, client})
	t.Cleanup(func() { _ = redlock.Close() })
	var down []redis.UniversalClient // 2 of 3 nodes refuse connections
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.1:2"} {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		down = append(down, c)
	}
	majorityDown := rediskit.NewRedlock(append(down, client))
	t.Cleanup(func() { _ = majorityDown.Close() })

	held, err := locker.TryAcquire(ctx, "held", time.Minute)
	require.NoError(t, err)
	released, err := locker.TryAcquire(ctx, "released", time.Minute)
	require.NoError(t, err)
	require.NoError(t, released.Release(ctx))
	badLock, err := newLocker(t, client).TryAcquire(ctx, "bad-lock", time.Minute)
	require.NoError(t, err)

	for name, call := range map[string]func() error{
		"not obtained": func() error { _, err := locker.TryAcquire(ctx, "held", time.Minute); return err },
		"wait ran out": func() error {
			_, err := locker.AcquireWithTimeout(ctx, "held", time.Minute, 10*time.Millisecond)
			return err
		},
		"released twice":      func() error { return released.Release(ctx) },
		"nil client":          func() error { _, err := nilLocker.TryAcquire(ctx, "k", time.Minute); return err },
		"nil client WithLock": func() error { return nilLocker.WithLock(ctx, "k", func(context.Context) error { return nil }) },
		"bad option":          func() error { _, err := badLocker.TryAcquire(ctx, "k", time.Minute); return err },
		"bad option WithLock": func() error { return badLocker.WithLock(ctx, "k", func(context.Context) error { return nil }) },
		"same node thrice":    func() error { _, err := redlock.TryAcquire(ctx, "k", time.Minute); return err },
		"redlock majority down": func() error {
			_, err := majorityDown.TryAcquire(ctx, "k", time.Minute)
			assert.NotErrorIs(t, err, context.DeadlineExceeded, "a node's failure is not the caller's deadline")
			assert.Contains(t, fmt.Sprint(err), "connection refused")
			return err
		},
		"nil cache client": func() error { _, err := nilCache.Get(ctx, "k"); return err },
		"bad cache option": func() error {
			_, err := badCache.GetOrLoad(ctx, "k", 0, func(context.Context) (int, error) { return 1, nil })
			return err
		},
		"cannot encode": func() error { return cache.Set(ctx, "k", make(chan int), 0) },
		"cannot encode loaded": func() error {
			_, err := cache.GetOrLoad(ctx, "k2", 0, func(context.Context) (chan int, error) { return make(chan int), nil })
			return err
		},
		"cache miss": func() error { _, err := cache.Get(ctx, "absent"); return err },
		"zero Lock":  func() error { return (&rediskit.Lock{}).Release(ctx) },
		"held Lock, held key": func() error {
			_, err := locker.AcquireWithTimeout(ctx, held.Key(), time.Minute, time.Millisecond)
			return err
		},
		"lock of a bad Locker": func() error { return badLock.Refresh(ctx, -time.Second) },
	} {
		err := call()
		require.Error(t, err, name)
		msg := err.Error()
		assert.True(t, strings.HasPrefix(msg, "rediskit: "), "%s: %q", name, msg)
		assert.Equal(t, 1, strings.Count(msg, "rediskit:"), "%s: %q", name, msg)
		assert.NotContains(t, msg, "\n", name)
	}
}
