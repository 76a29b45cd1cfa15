package rediskit_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// proxiedCache returns a Cache on a default go-redis client that reaches
// the standalone Redis through a fault proxy, warmed up, and a fresh key.
func proxiedCache(t *testing.T, opts ...rediskit.CacheOption) (*faultProxy, *rediskit.Cache[string], string) {
	t.Helper()
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skipf("set %s to run against a real standalone Redis", envStandalone)
	}
	p := newFaultProxy(t, addr)
	client := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	c := newCache[string](t, client, opts...)
	t.Cleanup(p.Heal) // before the Cache's Close, which waits for its calls
	require.NoError(t, client.Ping(context.Background()).Err())
	return p, c, fmt.Sprintf("rkfault:cache:%d:%d", time.Now().UnixNano(), testSeq.Add(1))
}

// GetOrLoad answers from the loader within the caller's deadline when
// Redis is blackholed: every Redis read inside the shared load gets a share
// of the caller's time too, with leases on and off.
func TestFaultGetOrLoadBlackholed(t *testing.T) {
	for _, lease := range []time.Duration{3 * time.Second, 0} {
		t.Run(fmt.Sprintf("lease %v", lease), func(t *testing.T) {
			p, c, key := proxiedCache(t, rediskit.WithLoadLease(lease))
			p.Blackhole()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			v, err := c.GetOrLoad(ctx, key, 0, func(context.Context) (string, error) { return "fresh", nil })
			require.NoError(t, err)
			assert.Equal(t, "fresh", v)
		})
	}
}

// The lease's refresher must not hold the loaded value back: Redis goes
// silent while the load runs, and the refresh in flight then blocks.
func TestFaultGetOrLoadLeaseRefresherDoesNotDelayTheValue(t *testing.T) {
	p, c, key := proxiedCache(t, rediskit.WithLoadLease(300*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var loaded atomic.Bool
	v, err := c.GetOrLoad(ctx, key, 0, func(context.Context) (string, error) {
		p.Blackhole()
		time.Sleep(150 * time.Millisecond) // a refresh is due at 100 ms
		loaded.Store(true)
		return "fresh", nil
	})
	require.True(t, loaded.Load())
	require.NoError(t, err)
	assert.Equal(t, "fresh", v)
}

// A Set or a Delete made while a load runs wins over the loaded value, with
// leases on and off (then the write-back only writes where the load found
// nothing: a Delete cannot be told from that, and is documented).
func TestFaultGetOrLoadWriteBackYieldsToSet(t *testing.T) {
	for _, lease := range []time.Duration{3 * time.Second, 0} {
		ops := []string{"set"}
		if lease > 0 {
			ops = append(ops, "delete")
		}
		for _, op := range ops {
			t.Run(fmt.Sprintf("lease %v/%s", lease, op), func(t *testing.T) {
				_, c, key := proxiedCache(t, rediskit.WithLoadLease(lease))
				ctx := context.Background()
				v, err := c.GetOrLoad(ctx, key, 0, func(context.Context) (string, error) {
					if op == "set" {
						assert.NoError(t, c.Set(ctx, key, "newer", 0))
					} else {
						assert.NoError(t, c.Delete(ctx, key))
					}
					return "stale", nil
				})
				require.NoError(t, err)
				assert.Equal(t, "stale", v, "the callers get what was loaded")
				time.Sleep(100 * time.Millisecond) // the write-back, off the callers' path
				got, err := c.Get(ctx, key)
				if op == "set" {
					require.NoError(t, err)
					assert.Equal(t, "newer", got, "the loaded value was written over the Set")
				} else {
					assert.ErrorIs(t, err, rediskit.ErrCacheMiss, "the loaded value was written after the Delete")
				}
				// Read-your-writes in the process: no stale flight answers.
				again, err := c.GetOrLoad(ctx, key, 0, func(context.Context) (string, error) { return "reloaded", nil })
				require.NoError(t, err)
				if op == "set" {
					assert.Equal(t, "newer", again)
				} else {
					assert.Equal(t, "reloaded", again)
				}
			})
		}
	}
}

// A slow link is not a lost lock: with 400 ms each way and a TTL of 2 s,
// each refresh confirms the lock for 1.978 s from its sending, so WithLock
// keeps it; the first refresh is counted from the acquisition's sending.
func TestFaultWithLockOnASlowLink(t *testing.T) {
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skipf("set %s to run against a real standalone Redis", envStandalone)
	}
	p := newFaultProxy(t, addr)
	client := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	l := newLocker(t, client)
	ctx := context.Background()
	key := fmt.Sprintf("rkfault:slowlink:%d", time.Now().UnixNano())
	warm, err := l.TryAcquire(ctx, key, time.Second) // a pooled connection, the scripts loaded
	require.NoError(t, err)
	require.NoError(t, warm.Refresh(ctx, time.Second))
	require.NoError(t, warm.Release(ctx))
	p.SetDelay(400 * time.Millisecond)
	t.Cleanup(p.Heal)
	err = l.WithLock(ctx, key, func(fctx context.Context) error {
		select {
		case <-fctx.Done():
			return context.Cause(fctx)
		case <-time.After(4 * time.Second):
			return nil
		}
	}, rediskit.WithLockTTL(2*time.Second))
	assert.NotErrorIs(t, err, rediskit.ErrLockNotHeld, "lost on a link whose round trip is 40% of the TTL")
	if err != nil {
		t.Logf("WithLock: %v", err) // the release's own bound may run out on this link
	}
}
