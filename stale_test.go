package rediskit_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// blockedLoader is a loader that counts its calls and returns value once
// released.
type blockedLoader struct {
	calls   atomic.Int64
	release chan struct{}
	value   int
}

func newBlockedLoader(value int) *blockedLoader {
	return &blockedLoader{release: make(chan struct{}), value: value}
}

func (l *blockedLoader) load(ctx context.Context) (int, error) {
	l.calls.Add(1)
	select {
	case <-l.release:
		return l.value, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// staleTTL is the TTL of the values the stale tests let expire.
const staleTTL = 300 * time.Millisecond

// primeStale stores 1 under key through a Cache with opts, as GetOrLoad
// writes it back, and lets it pass its TTL.
func primeStale(t *testing.T, b *backend, key string, opts ...rediskit.CacheOption) {
	t.Helper()
	c := rediskit.NewCache[int](b.client, opts...)
	v, err := c.GetOrLoad(context.Background(), key, staleTTL, func(context.Context) (int, error) { return 1, nil })
	require.NoError(t, err)
	require.Equal(t, 1, v)
	require.NoError(t, c.Close()) // waits for the write-back
	b.advance(staleTTL + 100*time.Millisecond)
}

// A value past its TTL, within the window, is served at once by every
// caller, while one background load refreshes it; the refreshed value is
// then served, and stored with the window again, as plain JSON.
func TestStaleWhileRevalidate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("swr")
		c := newCache[int](t, b.client, rediskit.WithStaleWhileRevalidate(time.Minute))
		primeStale(t, b, key, rediskit.WithStaleWhileRevalidate(time.Minute))

		loader := newBlockedLoader(2)
		var count commandCounter
		b.client.AddHook(&count)
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := c.GetOrLoad(ctx, key, staleTTL, loader.load)
				assert.NoError(t, err)
				assert.Equal(t, 1, v, "the stale value, at once")
			}()
		}
		// The callers return while the refresh is still blocked: had any
		// of them waited for it, this would time out.
		waitFor(t, waitGroupDone(&wg), 10*time.Second, "the callers served stale")
		require.Eventually(t, func() bool { return loader.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
		// One request per caller (its read), and the refresh's read that
		// takes the lease: the loader is still blocked.
		assert.LessOrEqual(t, count.n.Load(), int64(20+1), "requests while the refresh loads")
		close(loader.release)
		require.Eventually(t, func() bool {
			v, err := c.Get(ctx, key)
			return err == nil && v == 2
		}, 10*time.Second, 10*time.Millisecond, "the refreshed value is stored")
		assert.EqualValues(t, 1, loader.calls.Load(), "one refresh")
		assert.Equal(t, "2", b.client.Get(ctx, key).Val(), "plain JSON")
		assert.Greater(t, b.client.PTTL(ctx, key).Val(), staleTTL, "stored for its TTL plus the window")
		st := c.Stats()
		assert.EqualValues(t, 20, st.Stale)
		assert.EqualValues(t, 1, st.Refreshes)

		v, err := c.GetOrLoad(ctx, key, staleTTL, loader.load)
		require.NoError(t, err)
		assert.Equal(t, 2, v)
		assert.EqualValues(t, 1, loader.calls.Load(), "fresh again: no load")
	})
}

func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// Two processes (two Caches with their own clients' flights) serving the
// same stale key refresh it once between them: the refresh takes the key's
// lease.
func TestStaleRefreshOncePerFleet(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("swr-fleet")
		opt := rediskit.WithStaleWhileRevalidate(time.Minute)
		c1, c2 := newCache[int](t, b.client, opt), newCache[int](t, b.client, opt)
		primeStale(t, b, key, opt)

		loader := newBlockedLoader(2)
		v, err := c1.GetOrLoad(ctx, key, staleTTL, loader.load)
		require.NoError(t, err)
		assert.Equal(t, 1, v)
		require.Eventually(t, func() bool { return loader.calls.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
		for i := 0; i < 5; i++ {
			v, err = c2.GetOrLoad(ctx, key, staleTTL, loader.load)
			require.NoError(t, err)
			assert.Equal(t, 1, v)
		}
		close(loader.release)
		require.Eventually(t, func() bool { return b.client.Get(ctx, key).Val() == "2" }, 10*time.Second, 10*time.Millisecond)
		require.NoError(t, c1.Close())
		require.NoError(t, c2.Close())
		assert.EqualValues(t, 1, loader.calls.Load(), "one refresh in the fleet")
	})
}

// A Set or a Delete while a stale value is refreshed wins: the refresh
// replaces only the bytes it served.
func TestStaleRefreshLosesToSetAndDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		for _, tc := range []struct {
			name  string
			write func(c *rediskit.Cache[int], key string) error
			want  string // raw value afterwards, "" for absent
		}{
			{"set", func(c *rediskit.Cache[int], key string) error { return c.Set(ctx, key, 9, time.Minute) }, "9"},
			{"delete", func(c *rediskit.Cache[int], key string) error { return c.Delete(ctx, key) }, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := b.key("swr-" + tc.name)
				c := newCache[int](t, b.client, rediskit.WithStaleWhileRevalidate(time.Minute))
				primeStale(t, b, key, rediskit.WithStaleWhileRevalidate(time.Minute))
				loader := newBlockedLoader(2)
				_, err := c.GetOrLoad(ctx, key, staleTTL, loader.load)
				require.NoError(t, err)
				require.Eventually(t, func() bool { return loader.calls.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
				require.NoError(t, tc.write(c, key))
				close(loader.release)
				require.NoError(t, c.Close()) // waits for the refresh
				got, err := b.client.Get(ctx, key).Result()
				if tc.want == "" {
					assert.Error(t, err, "deleted, and not written back")
				} else {
					assert.Equal(t, tc.want, got)
				}
			})
		}
	})
}

// Past its TTL, within the stale-if-error window, a value is loaded as on
// a miss; when the loader fails, the callers get the stale value, and the
// failure goes to the hook. A miss has nothing to fall back on.
func TestStaleIfError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("sie")
		var loadErrs atomic.Int64
		c := newCache[int](t, b.client, rediskit.WithStaleIfError(time.Minute), rediskit.WithHook(func(e rediskit.Event) {
			if e.Kind == rediskit.EventLoadError {
				loadErrs.Add(1)
			}
		}))
		primeStale(t, b, key, rediskit.WithStaleIfError(time.Minute))

		failing := errors.New("database down")
		v, err := c.GetOrLoad(ctx, key, staleTTL, func(context.Context) (int, error) { return 0, failing })
		require.NoError(t, err)
		assert.Equal(t, 1, v, "the stale value instead of the error")
		assert.EqualValues(t, 1, loadErrs.Load())
		assert.EqualValues(t, 1, c.Stats().Stale)

		v, err = c.GetOrLoad(ctx, key, staleTTL, func(context.Context) (int, error) { return 2, nil })
		require.NoError(t, err)
		assert.Equal(t, 2, v, "past its TTL, a load that works replaces it, while callers wait")
		require.Eventually(t, func() bool { return b.client.Get(ctx, key).Val() == "2" }, 10*time.Second, 5*time.Millisecond)

		_, err = c.GetOrLoad(ctx, b.key("sie-absent"), staleTTL, func(context.Context) (int, error) { return 0, failing })
		assert.ErrorIs(t, err, failing, "a miss has no stale value")
	})
}

// Early refresh: with a beta so large that every read is near enough to
// expiry, a read of a fresh value returns it and refreshes it in the
// background; with a tiny beta, it does not.
func TestEarlyRefresh(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		for _, tc := range []struct {
			beta      float64
			refreshes int64
		}{{1e9, 1}, {1e-9, 0}} {
			key := b.key("xfetch")
			c := newCache[int](t, b.client, rediskit.WithEarlyRefresh(tc.beta))
			_, err := c.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) {
				time.Sleep(5 * time.Millisecond) // a measured load time
				return 1, nil
			})
			require.NoError(t, err)
			require.Eventually(t, func() bool { return !rediskit.InFlight(c, key) }, 10*time.Second, time.Millisecond) // its value is stored
			loader := newBlockedLoader(2)
			v, err := c.GetOrLoad(ctx, key, time.Minute, loader.load)
			require.NoError(t, err)
			assert.Equal(t, 1, v, "beta %v: the fresh value, at once", tc.beta)
			if tc.refreshes > 0 {
				require.Eventually(t, func() bool { return loader.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
			}
			close(loader.release)
			require.NoError(t, c.Close())
			assert.EqualValues(t, tc.refreshes, c.Stats().Refreshes, "beta %v", tc.beta)
			assert.EqualValues(t, tc.refreshes, loader.calls.Load(), "beta %v", tc.beta)
			if tc.refreshes > 0 {
				assert.Equal(t, "2", b.client.Get(ctx, key).Val())
			}
			require.NoError(t, b.client.Del(ctx, key).Err())
		}
	})
}

func TestStaleOptionsInvalid(t *testing.T) {
	client, _ := onMiniredis(t)
	for _, opt := range []rediskit.CacheOption{
		rediskit.WithStaleWhileRevalidate(-time.Second),
		rediskit.WithStaleIfError(-time.Second),
		rediskit.WithEarlyRefresh(0),
		rediskit.WithEarlyRefresh(-1),
		rediskit.WithEarlyRefresh(math.NaN()),
		rediskit.WithEarlyRefresh(math.Inf(1)),
	} {
		c := newCache[int](t, client, opt)
		_, err := c.GetOrLoad(context.Background(), "k", 0, func(context.Context) (int, error) { return 1, nil })
		assert.ErrorIs(t, err, rediskit.ErrInvalidArgument, "%v", opt)
	}
}
