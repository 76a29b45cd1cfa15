package rediskit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rediskit/rediskit"
)

// counterWorkload runs workers goroutines that each do rounds
// read-modify-write increments of a Redis counter through guard, pausing
// between the read and the write so that two writers inside the critical
// section at once would lose an update. It returns the final count and the
// largest number of goroutines seen inside guard's critical section at once.
func counterWorkload(t *testing.T, b *backend, workers, rounds int,
	guard func(ctx context.Context, section func(context.Context) error) error) (count int, maxInside int64) {
	t.Helper()
	ctx := context.Background()
	counter := b.key("counter")
	var inside, most atomic.Int64
	section := func(ctx context.Context) error {
		n := inside.Add(1)
		defer inside.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		v, err := b.client.Get(ctx, counter).Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		time.Sleep(200 * time.Microsecond)
		return b.client.Set(ctx, counter, v+1, 0).Err()
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if err := guard(ctx, section); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	count, err := b.client.Get(ctx, counter).Int()
	require.NoError(t, err)
	return count, most.Load()
}

func TestMutualExclusion(t *testing.T) {
	const workers, rounds = 50, 20
	forEachBackend(t, func(t *testing.T, b *backend) {
		l := newLocker(t, b.client)
		key := b.key("mutex")

		t.Run("without a lock updates are lost", func(t *testing.T) {
			count, inside := counterWorkload(t, b, workers, rounds, func(ctx context.Context, section func(context.Context) error) error {
				return section(ctx)
			})
			assert.Less(t, count, workers*rounds, "the control run must lose updates, or the workload proves nothing")
			assert.Greater(t, inside, int64(1))
		})
		t.Run("WithLock", func(t *testing.T) {
			require.NoError(t, b.client.Del(context.Background(), b.key("counter")).Err())
			count, inside := counterWorkload(t, b, workers, rounds, func(ctx context.Context, section func(context.Context) error) error {
				return l.WithLock(ctx, key, section, rediskit.WithLockWait(time.Minute))
			})
			assert.Equal(t, workers*rounds, count)
			assert.Equal(t, int64(1), inside)
		})
		t.Run("AcquireWithTimeout and Release", func(t *testing.T) {
			require.NoError(t, b.client.Del(context.Background(), b.key("counter")).Err())
			count, inside := counterWorkload(t, b, workers, rounds, func(ctx context.Context, section func(context.Context) error) error {
				lk, err := l.AcquireWithTimeout(ctx, key, 10*time.Second, time.Minute)
				if err != nil {
					return err
				}
				if err := section(ctx); err != nil {
					return errors.Join(err, lk.Release(ctx))
				}
				return lk.Release(ctx)
			})
			assert.Equal(t, workers*rounds, count)
			assert.Equal(t, int64(1), inside)
		})
	})
}

func TestTryAcquire(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)
		key := b.key("job")

		lk, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		assert.Equal(t, key, lk.Key())
		assert.GreaterOrEqual(t, len(lk.Token()), 22, "16 random bytes, base64")
		stored, err := b.client.Get(ctx, key).Result()
		require.NoError(t, err)
		assert.Equal(t, lk.Token(), stored)
		ttl, err := b.client.PTTL(ctx, key).Result()
		require.NoError(t, err)
		assert.InDelta(t, time.Minute, ttl, float64(time.Second))

		_, err = l.TryAcquire(ctx, key, time.Minute)
		assert.ErrorIs(t, err, rediskit.ErrNotObtained)
		assert.Equal(t, lk.Token(), b.client.Get(ctx, key).Val(), "a failed attempt leaves the holder's token")

		other, err := l.TryAcquire(ctx, b.key("other"), time.Minute)
		require.NoError(t, err, "another key is independent")
		assert.NotEqual(t, lk.Token(), other.Token())
	})
}

func TestSeedStyleLockExcludes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("user:1:lock")
		// What the Python seed's lock() and try_acquire_lock() write.
		require.NoError(t, b.client.SetNX(ctx, key, "1", 10*time.Second).Err())

		l := newLocker(t, b.client)
		_, err := l.TryAcquire(ctx, key, time.Second)
		assert.ErrorIs(t, err, rediskit.ErrNotObtained)
		_, err = l.AcquireWithTimeout(ctx, key, time.Second, 30*time.Millisecond)
		assert.ErrorIs(t, err, rediskit.ErrNotObtained)
		assert.Equal(t, "1", b.client.Get(ctx, key).Val())

		require.NoError(t, b.client.Del(ctx, key).Err())
		lk, err := l.TryAcquire(ctx, key, time.Second)
		require.NoError(t, err)
		ok, err := b.client.SetNX(ctx, key, "1", 10*time.Second).Result()
		require.NoError(t, err)
		assert.False(t, ok, "our lock excludes a seed-style SET NX")
		require.NoError(t, lk.Release(ctx))
	})
}

func TestReleaseIsTokenChecked(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)
		key := b.key("res")

		first, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		require.NoError(t, first.Release(ctx))
		assert.Zero(t, b.client.Exists(ctx, key).Val())
		assert.ErrorIs(t, first.Release(ctx), rediskit.ErrLockNotHeld, "a second release")

		second, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		assert.ErrorIs(t, first.Release(ctx), rediskit.ErrLockNotHeld, "the old owner's release")
		assert.ErrorIs(t, first.Refresh(ctx, time.Hour), rediskit.ErrLockNotHeld, "the old owner's refresh")
		_, err = first.TTL(ctx)
		assert.ErrorIs(t, err, rediskit.ErrLockNotHeld)
		assert.Equal(t, second.Token(), b.client.Get(ctx, key).Val(), "the new owner's key is untouched")
		assert.LessOrEqual(t, b.client.PTTL(ctx, key).Val(), time.Minute, "and its TTL too")
		require.NoError(t, second.Release(ctx))
	})
}

func TestExpiredLockCannotTouchNewOwner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)
		key := b.key("exp")

		old, err := l.TryAcquire(ctx, key, 50*time.Millisecond)
		require.NoError(t, err)
		b.advance(80 * time.Millisecond)

		fresh, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err, "the key expired, so a new owner takes it")
		assert.ErrorIs(t, old.Release(ctx), rediskit.ErrLockNotHeld)
		assert.ErrorIs(t, old.Refresh(ctx, time.Hour), rediskit.ErrLockNotHeld)
		assert.Equal(t, fresh.Token(), b.client.Get(ctx, key).Val())
		assert.LessOrEqual(t, b.client.PTTL(ctx, key).Val(), time.Minute)
	})
}

func TestRefreshAndTTL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)
		lk, err := l.TryAcquire(ctx, b.key("r"), time.Second)
		require.NoError(t, err)

		ttl, err := lk.TTL(ctx)
		require.NoError(t, err)
		assert.InDelta(t, time.Second, ttl, float64(200*time.Millisecond))

		require.NoError(t, lk.Refresh(ctx, time.Hour))
		ttl, err = lk.TTL(ctx)
		require.NoError(t, err)
		assert.InDelta(t, time.Hour, ttl, float64(time.Second))

		require.NoError(t, lk.Release(ctx))
		assert.ErrorIs(t, lk.Refresh(ctx, time.Hour), rediskit.ErrLockNotHeld, "refresh never re-acquires")
		assert.Zero(t, b.client.Exists(ctx, b.key("r")).Val())
	})
}

func TestFenceIncreases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)
		key := b.key("fenced")

		first, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		require.NoError(t, first.Release(ctx))

		second, err := l.TryAcquire(ctx, key, 50*time.Millisecond)
		require.NoError(t, err)
		b.advance(80 * time.Millisecond) // second expires without releasing

		third, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		assert.Greater(t, second.Fence(), first.Fence())
		assert.Greater(t, third.Fence(), second.Fence())

		// Fences keep increasing even when the counter itself is gone,
		// since the server's clock bounds them from below.
		require.NoError(t, third.Release(ctx))
		require.NoError(t, b.client.Del(ctx, rediskit.CompanionKey(key, ":fence")).Err())
		fourth, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		if b.mr == nil { // miniredis's TIME does not follow real time closely enough
			assert.Greater(t, fourth.Fence(), third.Fence())
		}
		assert.Positive(t, fourth.Fence())
	})
}

func TestReleaseAfterScriptFlush(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)
		lk, err := l.TryAcquire(ctx, b.key("flush"), time.Minute)
		require.NoError(t, err)

		b.flushScripts(t)
		require.NoError(t, lk.Refresh(ctx, time.Minute))
		b.flushScripts(t)
		require.NoError(t, lk.Release(ctx))
		assert.Zero(t, b.client.Exists(ctx, b.key("flush")).Val())

		b.flushScripts(t)
		_, err = l.TryAcquire(ctx, b.key("flush"), time.Minute)
		require.NoError(t, err)
	})
}

func TestAcquireWithTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)

		t.Run("acquires once the holder releases", func(t *testing.T) {
			key := b.key("handoff")
			holder, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err)
			go func() {
				time.Sleep(50 * time.Millisecond)
				assert.NoError(t, holder.Release(ctx))
			}()
			// The holder's TTL is a minute and the wait 10 s: success means
			// the release, not the expiry, handed the lock over.
			lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, 10*time.Second)
			require.NoError(t, err)
			assert.NotEqual(t, holder.Token(), lk.Token())
			assert.Greater(t, lk.Fence(), holder.Fence())
		})
		t.Run("gives up at the timeout", func(t *testing.T) {
			key := b.key("busy")
			holder, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err)
			_, err = l.AcquireWithTimeout(ctx, key, time.Second, 100*time.Millisecond)
			assert.ErrorIs(t, err, rediskit.ErrNotObtained)
			assert.Equal(t, holder.Token(), b.client.Get(ctx, key).Val())
		})
		t.Run("stops when ctx is cancelled", func(t *testing.T) {
			key := b.key("cancel")
			_, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err)
			cctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(50*time.Millisecond, cancel)
			_, err = l.AcquireWithTimeout(cctx, key, time.Second, time.Hour)
			assert.ErrorIs(t, err, context.Canceled)
			assert.NotErrorIs(t, err, rediskit.ErrNotObtained)
		})
		t.Run("ctx deadline before the timeout", func(t *testing.T) {
			key := b.key("deadline")
			_, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err)
			dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			_, err = l.AcquireWithTimeout(dctx, key, time.Second, time.Hour)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
		})
		t.Run("takes an expired holder's lock", func(t *testing.T) {
			key := b.key("expiring")
			_, err := l.TryAcquire(ctx, key, 100*time.Millisecond)
			require.NoError(t, err)
			if b.mr != nil {
				time.AfterFunc(30*time.Millisecond, func() { b.mr.FastForward(time.Second) })
			}
			lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, 10*time.Second)
			require.NoError(t, err)
			require.NoError(t, lk.Release(ctx))
		})
	})
}

func TestWithLock(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)

		t.Run("holds the lock while fn runs and releases it", func(t *testing.T) {
			key := b.key("wl")
			err := l.WithLock(ctx, key, func(ctx context.Context) error {
				_, err := l.TryAcquire(ctx, key, time.Second)
				assert.ErrorIs(t, err, rediskit.ErrNotObtained)
				return nil
			})
			require.NoError(t, err)
			assert.Zero(t, b.client.Exists(ctx, key).Val())
		})
		t.Run("single attempt by default", func(t *testing.T) {
			key := b.key("wl-busy")
			_, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err)
			called := false
			err = l.WithLock(ctx, key, func(context.Context) error { called = true; return nil })
			assert.ErrorIs(t, err, rediskit.ErrNotObtained)
			assert.False(t, called)
		})
		t.Run("returns fn's error", func(t *testing.T) {
			boom := errors.New("boom")
			err := l.WithLock(ctx, b.key("wl-err"), func(context.Context) error { return boom })
			assert.ErrorIs(t, err, boom)
			assert.Zero(t, b.client.Exists(ctx, b.key("wl-err")).Val())
		})
		t.Run("a lost lock cancels fn with cause ErrLockNotHeld", func(t *testing.T) {
			key := b.key("wl-lost")
			var cause error
			err := l.WithLock(ctx, key, func(ctx context.Context) error {
				require.NoError(t, b.client.Del(context.Background(), key).Err())
				select {
				case <-ctx.Done():
					cause = context.Cause(ctx)
					return ctx.Err()
				case <-time.After(10 * time.Second):
					return errors.New("fn was not cancelled")
				}
			}, rediskit.WithLockTTL(90*time.Millisecond))
			assert.ErrorIs(t, cause, rediskit.ErrLockNotHeld)
			assert.ErrorIs(t, err, rediskit.ErrLockNotHeld)
			assert.ErrorIs(t, err, context.Canceled, "fn's own error is kept")
			assert.EqualValues(t, 1, l.Stats().Lost)
		})
		t.Run("refresh keeps the lock past its TTL", func(t *testing.T) {
			key := b.key("wl-long")
			const ttl = 150 * time.Millisecond
			err := l.WithLock(ctx, key, func(ctx context.Context) error {
				for i := 0; i < 4; i++ { // 4 × ttl/2 of the key's clock: twice the TTL
					b.advance(ttl / 2)
					if b.mr != nil {
						time.Sleep(ttl / 2) // real time for the watchdog's ticks
					}
				}
				return ctx.Err()
			}, rediskit.WithLockTTL(ttl))
			require.NoError(t, err)
			assert.Zero(t, b.client.Exists(ctx, key).Val())
		})
		t.Run("a panic releases the lock and goes on", func(t *testing.T) {
			key := b.key("wl-panic")
			assert.PanicsWithValue(t, "boom", func() {
				_ = l.WithLock(ctx, key, func(context.Context) error { panic("boom") })
			})
			assert.Zero(t, b.client.Exists(ctx, key).Val())
		})
		t.Run("released even when the caller's ctx is cancelled", func(t *testing.T) {
			key := b.key("wl-cancel")
			cctx, cancel := context.WithCancel(ctx)
			err := l.WithLock(cctx, key, func(ctx context.Context) error {
				cancel()
				<-ctx.Done()
				return ctx.Err()
			})
			assert.ErrorIs(t, err, context.Canceled)
			assert.Zero(t, b.client.Exists(ctx, key).Val())
		})
	})
}

func TestWithLockLeavesNoGoroutine(t *testing.T) {
	client, _ := onMiniredis(t)
	ignore := goleak.IgnoreCurrent()
	l := newLocker(t, client)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		require.NoError(t, l.WithLock(ctx, "k", func(context.Context) error {
			time.Sleep(10 * time.Millisecond)
			return nil
		}, rediskit.WithLockTTL(60*time.Millisecond)))
	}
	assert.PanicsWithValue(t, "x", func() {
		_ = l.WithLock(ctx, "k", func(context.Context) error { panic("x") })
	})
	goleak.VerifyNone(t, append(ignoreMiniredis, ignore)...)
}

func TestWithLockStopsFnBeforeTheLockCanExpire(t *testing.T) {
	client, mr := onMiniredis(t)
	l := newLocker(t, client)
	const ttl = 2 * time.Second
	var cancelledAt time.Time
	var cause error
	start := time.Now() // the acquisition is sent after this: the key lives at least until start+ttl
	err := l.WithLock(context.Background(), "k", func(ctx context.Context) error {
		mr.Close() // from now on every refresh fails
		select {
		case <-ctx.Done():
			cancelledAt, cause = time.Now(), context.Cause(ctx)
		case <-time.After(2 * ttl):
		}
		return nil
	}, rediskit.WithLockTTL(ttl))
	assert.ErrorIs(t, err, rediskit.ErrLockNotHeld)
	assert.ErrorIs(t, cause, rediskit.ErrLockNotHeld)
	require.False(t, cancelledAt.IsZero(), "fn was not cancelled")
	// Another owner could take the key from start+ttl on; fn must have been
	// told before (the watchdog aims at 1% of ttl plus 2 ms earlier).
	assert.True(t, cancelledAt.Before(start.Add(ttl)), "cancelled %v after start, TTL %v", cancelledAt.Sub(start), ttl)
}

func TestLockerEventsAndStats(t *testing.T) {
	client, _ := onMiniredis(t)
	ctx := context.Background()
	var mu sync.Mutex
	var kinds []rediskit.EventKind
	l := newLocker(t, client, rediskit.WithHook(func(e rediskit.Event) {
		mu.Lock()
		defer mu.Unlock()
		kinds = append(kinds, e.Kind)
		assert.Equal(t, "k", e.Key)
	}))
	lk, err := l.TryAcquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	_, err = l.TryAcquire(ctx, "k", time.Minute)
	require.ErrorIs(t, err, rediskit.ErrNotObtained)
	require.NoError(t, lk.Release(ctx))

	assert.Equal(t, []rediskit.EventKind{rediskit.EventAcquired, rediskit.EventContended,
		rediskit.EventNotObtained, rediskit.EventReleased}, kinds)
	assert.Equal(t, rediskit.LockStats{Acquired: 1, Contended: 1, NotObtained: 1, Released: 1}, l.Stats())
	assert.Equal(t, "not obtained", rediskit.EventNotObtained.String())
}

func TestKeyPrefix(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	l := newLocker(t, client, rediskit.WithKeyPrefix("svc:"))
	lk, err := l.TryAcquire(ctx, "job", time.Minute)
	require.NoError(t, err)
	assert.Equal(t, "job", lk.Key())
	got, err := mr.Get("svc:job")
	require.NoError(t, err)
	assert.Equal(t, lk.Token(), got)
	assert.True(t, mr.Exists(rediskit.CompanionKey("svc:job", ":fence")), "the fence counter is prefixed too")
	assert.False(t, mr.Exists("job"))
}

func TestLockerBadInput(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	l := newLocker(t, client)
	ok := func(context.Context) error { return nil }
	var nilClient *redis.Client
	tests := []struct {
		name string
		call func() error
	}{
		{"empty key", func() error { _, err := l.TryAcquire(ctx, "", time.Second); return err }},
		{"zero ttl", func() error { _, err := l.TryAcquire(ctx, "k", 0); return err }},
		{"ttl below 1ms", func() error { _, err := l.TryAcquire(ctx, "k", time.Microsecond); return err }},
		{"negative ttl", func() error { _, err := l.AcquireWithTimeout(ctx, "k", -time.Second, time.Second); return err }},
		{"negative timeout", func() error { _, err := l.AcquireWithTimeout(ctx, "k", time.Second, -1); return err }},
		{"nil fn", func() error { return l.WithLock(ctx, "k", nil) }},
		{"WithLock empty key", func() error { return l.WithLock(ctx, "", ok) }},
		{"WithLockTTL too short", func() error { return l.WithLock(ctx, "k", ok, rediskit.WithLockTTL(time.Millisecond)) }},
		{"WithLockWait negative", func() error { return l.WithLock(ctx, "k", ok, rediskit.WithLockWait(-time.Second)) }},
		{"nil client", func() error { _, err := rediskit.NewLocker(nil).TryAcquire(ctx, "k", time.Second); return err }},
		{"typed nil client", func() error { _, err := rediskit.NewLocker(nilClient).TryAcquire(ctx, "k", time.Second); return err }},
		{"nil client WithLock", func() error { return rediskit.NewLocker(nil).WithLock(ctx, "k", ok) }},
		{"nil backoff", func() error {
			_, err := newLocker(t, client, rediskit.WithRetryBackoff(nil)).TryAcquire(ctx, "k", time.Second)
			return err
		}},
		{"nil Locker", func() error { var nl *rediskit.Locker; _, err := nl.TryAcquire(ctx, "k", time.Second); return err }},
		{"nil Lock release", func() error { var lk *rediskit.Lock; return lk.Release(ctx) }},
		{"nil Lock refresh", func() error { var lk *rediskit.Lock; return lk.Refresh(ctx, time.Second) }},
		{"nil Lock ttl", func() error { var lk *rediskit.Lock; _, err := lk.TTL(ctx); return err }},
		{"zero Lock release", func() error { return (&rediskit.Lock{}).Release(ctx) }},
		{"refresh ttl 0", func() error {
			lk, err := l.TryAcquire(ctx, "refreshed", time.Second)
			require.NoError(t, err)
			defer lk.Release(ctx) //nolint:errcheck
			return lk.Refresh(ctx, 0)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.ErrorIs(t, tt.call(), rediskit.ErrInvalidArgument)
		})
	}
	assert.Equal(t, []string{}, withoutFence(mr.Keys()), "bad input writes nothing")
}

// withoutFence drops the fence counters from a key listing.
func withoutFence(keys []string) []string {
	out := []string{}
	for _, k := range keys {
		if len(k) < 6 || k[len(k)-6:] != ":fence" {
			out = append(out, k)
		}
	}
	return out
}

func TestRedisDownIsNotNotObtained(t *testing.T) {
	client, mr := onMiniredis(t)
	l := newLocker(t, client)
	mr.Close()
	_, err := l.TryAcquire(context.Background(), "k", time.Second)
	require.Error(t, err)
	assert.NotErrorIs(t, err, rediskit.ErrNotObtained)
	assert.NotErrorIs(t, err, rediskit.ErrInvalidArgument)
}

func TestNilLockAccessors(t *testing.T) {
	var lk *rediskit.Lock
	assert.Equal(t, "", lk.Key())
	assert.Equal(t, "", lk.Token())
	assert.Zero(t, lk.Fence())
}
