package rediskit_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// localCache returns a Cache with a local tier under the backend's prefix,
// closed when the test ends.
func localCache[T any](t *testing.T, b *backend, ttl time.Duration, opts ...rediskit.CacheOption) *rediskit.Cache[T] {
	t.Helper()
	opts = append([]rediskit.CacheOption{rediskit.WithKeyPrefix(b.prefix), rediskit.WithLocalCache(1000, ttl)}, opts...)
	return newCache[T](t, b.client, opts...)
}

// awaitLocal reads key until the local tier answers, and returns the value:
// the tier fills only once its listener is up.
func awaitLocal[T any](t *testing.T, c *rediskit.Cache[T], key string) T {
	t.Helper()
	var v T
	require.Eventually(t, func() bool {
		before := c.Stats().LocalHits
		var err error
		v, err = c.Get(context.Background(), key)
		require.NoError(t, err)
		return c.Stats().LocalHits > before
	}, 5*time.Second, 5*time.Millisecond, "the local tier never answered for %q", key)
	return v
}

// tracks reports whether the backend tells the tier of other programs'
// writes (CLIENT TRACKING); miniredis does not.
func tracks(b *backend) bool { return b.mr == nil }

func TestLocalCacheAnswersWithoutRedis(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		type user struct {
			Name string
			Tags []string
		}
		c := localCache[user](t, b, time.Minute)
		require.NoError(t, c.Set(ctx, "u", user{"ann", []string{"a"}}, time.Minute))
		v := awaitLocal(t, c, "u")
		assert.Equal(t, user{"ann", []string{"a"}}, v)

		var counter commandCounter
		b.client.AddHook(&counter)
		v.Name = "changed by the caller"
		for i := 0; i < 10; i++ {
			got, err := c.Get(ctx, "u")
			require.NoError(t, err)
			assert.Equal(t, "ann", got.Name, "each hit is a copy of the value")
		}
		got, err := c.GetOrLoad(ctx, "u", time.Minute, func(context.Context) (user, error) { return user{}, errors.New("not called") })
		require.NoError(t, err)
		assert.Equal(t, "ann", got.Name)
		many, err := c.GetMany(ctx, "u")
		require.NoError(t, err)
		assert.Equal(t, "ann", many["u"].Name)
		assert.Zero(t, counter.n.Load(), "local hits sent commands")
		assert.GreaterOrEqual(t, c.Stats().LocalHits, uint64(12))
	})
}

// The Cache's own writes drop its local entries at once: a Get right after
// a Set or Delete returns sees it.
func TestLocalCacheReadsItsOwnWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		c := localCache[int](t, b, time.Minute)
		require.NoError(t, c.Set(ctx, "k", 1, time.Minute))
		awaitLocal(t, c, "k")
		for i := 2; i < 50; i++ {
			require.NoError(t, c.Set(ctx, "k", i, time.Minute))
			v, err := c.Get(ctx, "k")
			require.NoError(t, err)
			require.Equal(t, i, v)
			_, _ = c.Get(ctx, "k") // may fill
		}
		require.NoError(t, c.SetMany(ctx, map[string]int{"k": 100, "j": 1}, time.Minute))
		v, err := c.Get(ctx, "k")
		require.NoError(t, err)
		assert.Equal(t, 100, v)
		require.NoError(t, c.Delete(ctx, "k"))
		_, err = c.Get(ctx, "k")
		assert.ErrorIs(t, err, rediskit.ErrCacheMiss)
	})
}

// A write by another program (a plain client: redis-cli, the Python
// service) reaches the tier through Redis, without any help from the
// writer: the old value stops being served. Without tracking (miniredis),
// only the tier's TTL bounds it.
func TestLocalCacheHearsOtherPrograms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		localTTL := time.Minute
		if !tracks(b) {
			localTTL = 300 * time.Millisecond
		}
		c := localCache[int](t, b, localTTL)
		for name, write := range map[string]func(rkey string) error{
			"SET": func(rkey string) error { return b.client.Set(ctx, rkey, "2", 0).Err() },
			"DEL": func(rkey string) error { return b.client.Del(ctx, rkey).Err() },
			"expiry": func(rkey string) error {
				err := b.client.PExpire(ctx, rkey, 50*time.Millisecond).Err()
				if b.mr != nil {
					b.mr.FastForward(60 * time.Millisecond)
				}
				return err
			},
		} {
			key := "other-" + name
			require.NoError(t, c.Set(ctx, key, 1, time.Minute))
			require.Equal(t, 1, awaitLocal(t, c, key))
			wrote := time.Now()
			require.NoError(t, write(b.prefix+key))
			if !tracks(b) {
				v, err := c.Get(ctx, key)
				require.NoError(t, err)
				assert.Equal(t, 1, v, "%s: without tracking, the tier serves its value until its TTL", name)
			}
			require.Eventually(t, func() bool {
				v, err := c.Get(ctx, key)
				return v != 1 || err != nil
			}, 5*time.Second, time.Millisecond, "%s: the old value is still served", name)
			t.Logf("%s: old value dropped after %v", name, time.Since(wrote))
			if !tracks(b) {
				assert.GreaterOrEqual(t, time.Since(wrote), localTTL/2, "%s: dropped before the local TTL without tracking?", name)
			}
		}
	})
}

// Without tracking, the Caches of other processes tell each other what
// they write, on a pub/sub channel: a Set by one drops the others' entries.
func TestLocalCacheFallbackChannel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		reader := localCache[int](t, b, time.Minute)
		writer := localCache[int](t, b, time.Minute)
		require.NoError(t, writer.Set(ctx, "k", 1, time.Minute))
		awaitLocal(t, reader, "k")
		for _, step := range []struct {
			name  string
			write func() error
			want  int
		}{
			{"Set", func() error { return writer.Set(ctx, "k", 2, time.Minute) }, 2},
			{"SetMany", func() error { return writer.SetMany(ctx, map[string]int{"k": 3, "j": 0}, time.Minute) }, 3},
			{"Delete", func() error { return writer.Delete(ctx, "k") }, 0},
		} {
			require.NoError(t, step.write())
			require.Eventually(t, func() bool {
				v, err := reader.Get(ctx, "k")
				return v == step.want && (err == nil || errors.Is(err, rediskit.ErrCacheMiss))
			}, 5*time.Second, time.Millisecond, "%s by another Cache not heard", step.name)
			if step.want != 0 {
				awaitLocal(t, reader, "k")
			}
		}
	})
}

// A value GetOrLoad loaded, and negative caching's marker, are served by
// the tier once read back; GetMany mixes local hits and Redis reads.
func TestLocalCacheGetOrLoadAndGetMany(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		c := localCache[int](t, b, time.Minute, rediskit.WithNegativeCaching(time.Minute))
		var loads atomic.Int64
		load := func(v int, err error) func(context.Context) (int, error) {
			return func(context.Context) (int, error) { loads.Add(1); return v, err }
		}
		require.Eventually(t, func() bool {
			before := c.Stats().LocalHits
			v, err := c.GetOrLoad(ctx, "loaded", time.Minute, load(7, nil))
			require.NoError(t, err)
			require.Equal(t, 7, v)
			return c.Stats().LocalHits > before
		}, 5*time.Second, 5*time.Millisecond)
		assert.EqualValues(t, 1, loads.Load())

		require.Eventually(t, func() bool {
			before := c.Stats().LocalHits
			_, err := c.GetOrLoad(ctx, "gone", time.Minute, load(0, rediskit.ErrNotFound))
			require.ErrorIs(t, err, rediskit.ErrNotFound)
			return c.Stats().LocalHits > before
		}, 5*time.Second, 5*time.Millisecond)
		assert.EqualValues(t, 2, loads.Load(), "the marker is served, locally too, without loading")
		_, err := c.Get(ctx, "gone")
		assert.ErrorIs(t, err, rediskit.ErrNotFound)

		require.NoError(t, c.Set(ctx, "other", 8, time.Minute))
		before := c.Stats()
		got, err := c.GetMany(ctx, "loaded", "other", "absent", "gone")
		require.NoError(t, err)
		assert.Equal(t, map[string]int{"loaded": 7, "other": 8}, got)
		after := c.Stats()
		assert.Equal(t, before.LocalHits+2, after.LocalHits, "loaded and gone from the tier")
		assert.Equal(t, before.Hits+1, after.Hits, "other from Redis")
		awaitLocal(t, c, "other")
	})
}

// A value with a short TTL in Redis leaves the tier when its TTL ends,
// whatever the tier's own TTL: the tier never serves a value Redis would
// no longer return.
func TestLocalCacheKeepsNoValuePastItsTTL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if b.mr != nil {
			t.Skip("miniredis's clock does not move on its own; the tier's is real")
		}
		ctx := context.Background()
		c := localCache[int](t, b, time.Hour)
		require.NoError(t, c.Set(ctx, "short", 1, 400*time.Millisecond))
		set := time.Now()
		awaitLocal(t, c, "short")
		for time.Since(set) < 390*time.Millisecond {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		_, err := c.Get(ctx, "short")
		assert.ErrorIs(t, err, rediskit.ErrCacheMiss)
	})
}

// Values read while their key changes, many times over, by another program:
// once the writes stop, every reader sees the last value, at once and for
// good (a read that raced an invalidation never filled the tier).
func TestLocalCacheConvergesUnderConcurrentWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if !tracks(b) {
			t.Skip("without tracking only the tier's TTL bounds other programs' writes")
		}
		ctx := context.Background()
		c := localCache[int](t, b, time.Hour)
		const keys, writes = 4, 300
		for k := 0; k < keys; k++ {
			require.NoError(t, c.Set(ctx, fmt.Sprint(k), 0, time.Hour))
			awaitLocal(t, c, fmt.Sprint(k))
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for r := 0; r < 4; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					_, _ = c.Get(ctx, fmt.Sprint(i%keys))
				}
			}()
		}
		for i := 1; i <= writes; i++ {
			require.NoError(t, b.client.Set(ctx, b.prefix+fmt.Sprint(i%keys), fmt.Sprint(i), 0).Err())
		}
		close(stop)
		wg.Wait()
		for k := 0; k < keys; k++ {
			want := writes - (writes-k)%keys
			if k == 0 {
				want = writes
			}
			require.Eventually(t, func() bool { v, err := c.Get(ctx, fmt.Sprint(k)); return err == nil && v == want },
				2*time.Second, time.Millisecond, "key %d", k)
			for i := 0; i < 20; i++ {
				v, err := c.Get(ctx, fmt.Sprint(k))
				require.NoError(t, err)
				require.Equal(t, want, v, "key %d: an older value came back", k)
			}
		}
		assert.Greater(t, c.Stats().LocalHits, uint64(keys*20), "the tier was in use")
	})
}

// When the tier's connection is killed, the tier is emptied (it may have
// missed writes), and it fills again, and hears writes again, once the
// connection is back.
func TestLocalCacheFlushedWhenItsConnectionBreaks(t *testing.T) {
	plain := standaloneOnly(t)
	b := &backend{name: "standalone", client: plain, prefix: fmt.Sprintf("rktest:kill:%d:", time.Now().UnixNano())}
	ctx := context.Background()
	c := localCache[int](t, b, time.Hour)
	require.NoError(t, c.Set(ctx, "k", 1, time.Hour))
	awaitLocal(t, c, "k")
	ids := clientIDsWithFlag(t, plain, "t") // tracking on: the tier's connection
	require.NotEmpty(t, ids)
	for _, id := range ids {
		_ = plain.ClientKillByFilter(ctx, "ID", fmt.Sprint(id)).Err()
	}
	require.Eventually(t, func() bool { return !rediskit.LocalHas(c, "k") }, 5*time.Second, time.Millisecond,
		"the tier kept its entries after its connection broke")
	require.NoError(t, b.client.Set(ctx, b.prefix+"k", "2", 0).Err())
	assert.Equal(t, 2, awaitLocal(t, c, "k"), "filled again after the reconnect")
	require.NoError(t, b.client.Set(ctx, b.prefix+"k", "3", 0).Err())
	require.Eventually(t, func() bool { v, _ := c.Get(ctx, "k"); return v == 3 }, 5*time.Second, time.Millisecond,
		"writes are heard again after the reconnect")
}

// A connection that goes silent (a network that drops everything) is found
// out by a ping within about two seconds, and the tier emptied.
func TestLocalCacheFlushedWhenItsConnectionGoesSilent(t *testing.T) {
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skipf("set %s to run against a real Redis", envStandalone)
	}
	proxy := newFaultProxy(t, addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	prefix := fmt.Sprintf("rktest:silent:%d:", time.Now().UnixNano())
	c := newCache[int](t, client, rediskit.WithKeyPrefix(prefix), rediskit.WithLocalCache(10, time.Hour))
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "k", 1, time.Hour))
	awaitLocal(t, c, "k")
	proxy.Blackhole()
	silent := time.Now()
	require.Eventually(t, func() bool { return !rediskit.LocalHas(c, "k") }, 5*time.Second, 10*time.Millisecond,
		"the tier kept its entries with its connection silent")
	t.Logf("emptied %v after the network went silent", time.Since(silent))
	proxy.Heal()
}

// On a Cluster, a failover of a cached key's master (CLUSTER FAILOVER)
// does not leave the tier serving the old value: writes on the new master
// are heard.
func TestLocalCacheClusterFailover(t *testing.T) {
	addrs := os.Getenv(envCluster)
	if addrs == "" {
		t.Skipf("set %s to run against a real Redis Cluster", envCluster)
	}
	seeds := strings.Split(addrs, ",")
	expectHealthyClusterAtEnd(t, seeds)
	ctx := context.Background()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds})
	t.Cleanup(func() { _ = client.Close() })
	prefix := fmt.Sprintf("rktest:lcfo:%d:", time.Now().UnixNano())
	c := newCache[int](t, client, rediskit.WithKeyPrefix(prefix), rediskit.WithLocalCache(100, time.Hour))
	other := rediskit.NewCache[int](client, rediskit.WithKeyPrefix(prefix)) // another program, without a tier
	t.Cleanup(func() { _ = other.Close() })
	require.NoError(t, c.Set(ctx, "k", 1, time.Hour))
	awaitLocal(t, c, "k")
	from, to := failoverKeyMaster(t, seeds, prefix+"k")
	t.Logf("failed %s over to %s", from, to)
	require.Eventually(t, func() bool { return other.Set(ctx, "k", 2, time.Hour) == nil }, 10*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool { v, _ := c.Get(ctx, "k"); return v == 2 }, 5*time.Second, time.Millisecond,
		"the tier still serves the value written before the failover")
	assert.Equal(t, 2, awaitLocal(t, c, "k"), "the tier fills again after the failover")
	require.NoError(t, other.Set(ctx, "k", 3, time.Hour))
	require.Eventually(t, func() bool { v, _ := c.Get(ctx, "k"); return v == 3 }, 5*time.Second, time.Millisecond,
		"writes on the new master are heard")
	// And back, so the cluster ends as it began.
	failoverKeyMaster(t, seeds, prefix+"k")
}

func TestLocalCacheOptionChecked(t *testing.T) {
	client, _ := onMiniredis(t)
	for _, o := range []rediskit.CacheOption{
		rediskit.WithLocalCache(0, time.Minute),
		rediskit.WithLocalCache(-1, time.Minute),
		rediskit.WithLocalCache(10, 0),
		rediskit.WithLocalCache(10, -time.Second),
	} {
		c := newCache[int](t, client, o)
		_, err := c.Get(context.Background(), "k")
		assert.ErrorIs(t, err, rediskit.ErrInvalidArgument, "%v", o)
	}
}
