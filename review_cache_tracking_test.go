package rediskit_test

// Stale serving and key tracking under the cases a review tried.

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// With leases off, a Delete made while a stale-while-revalidate refresh
// loads wins: the refresh does not write the deleted key back.
func TestStaleRefreshWithoutLeaseLosesToDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("swr-del")
		opts := []rediskit.CacheOption{rediskit.WithStaleWhileRevalidate(time.Minute), rediskit.WithLoadLease(0)}
		c := rediskit.NewCache[int](b.client, opts...)
		primeStale(t, b, key, opts...)
		loader := newBlockedLoader(2)
		v, err := c.GetOrLoad(ctx, key, staleTTL, loader.load)
		require.NoError(t, err)
		require.Equal(t, 1, v)
		require.Eventually(t, func() bool { return loader.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
		require.NoError(t, c.Delete(ctx, key))
		close(loader.release)
		require.NoError(t, c.Close()) // waits for the refresh
		n, err := b.client.Exists(ctx, key).Result()
		require.NoError(t, err)
		assert.EqualValues(t, 0, n, "the Delete made during the refresh must win; got %q", b.client.Get(ctx, key).Val())
	})
}

// The same with early refresh (XFetch) and leases off.
func TestEarlyRefreshWithoutLeaseLosesToDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("xf-del")
		opts := []rediskit.CacheOption{rediskit.WithEarlyRefresh(1e9), rediskit.WithLoadLease(0)}
		c := rediskit.NewCache[int](b.client, opts...)
		_, err := c.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) { time.Sleep(5 * time.Millisecond); return 1, nil })
		require.NoError(t, err)
		require.Eventually(t, func() bool { return !rediskit.InFlight(c, key) }, 5*time.Second, time.Millisecond)
		loader := newBlockedLoader(2)
		v, err := c.GetOrLoad(ctx, key, time.Minute, loader.load) // beta huge: refreshes
		require.NoError(t, err)
		require.Equal(t, 1, v)
		require.Eventually(t, func() bool { return loader.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
		require.NoError(t, c.Delete(ctx, key))
		close(loader.release)
		require.NoError(t, c.Close())
		assert.EqualValues(t, 0, b.client.Exists(ctx, key).Val(), "the Delete made during the refresh must win")
	})
}

// A Cache that has not loaded anything itself (another process loaded the
// key) still refreshes a hot key early as its expiry nears.
func TestEarlyRefreshWithoutOwnLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("xf-reader")
		loader := func(context.Context) (int, error) { time.Sleep(200 * time.Millisecond); return 1, nil }
		loaderProc := newCache[int](t, b.client, rediskit.WithEarlyRefresh(1))
		_, err := loaderProc.GetOrLoad(ctx, key, time.Second, loader)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return !rediskit.InFlight(loaderProc, key) }, 5*time.Second, time.Millisecond)
		reader := newCache[int](t, b.client, rediskit.WithEarlyRefresh(1))
		b.advance(950 * time.Millisecond) // ~50ms left, loads take 200ms: P(refresh) per read ~ 0.78
		for i := 0; i < 50; i++ {
			_, err := reader.GetOrLoad(ctx, key, time.Second, loader)
			require.NoError(t, err)
		}
		assert.Greater(t, reader.Stats().Refreshes, uint64(0), "50 reads of a key about to expire: no early refresh")
	})
}

func standaloneOnly(t *testing.T) *redis.Client {
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skip("needs a real standalone Redis")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// clientIDsWithFlag returns the IDs of the connections whose flags contain f.
func clientIDsWithFlag(t *testing.T, c *redis.Client, f string) []int64 {
	list, err := c.ClientList(context.Background()).Result()
	require.NoError(t, err)
	var ids []int64
	for _, line := range strings.Split(list, "\n") {
		var id int64
		var flags string
		for _, field := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(field, "id="); ok {
				id, _ = strconv.ParseInt(v, 10, 64)
			}
			if v, ok := strings.CutPrefix(field, "flags="); ok {
				flags = v
			}
		}
		if id != 0 && strings.Contains(flags, f) {
			ids = append(ids, id)
		}
	}
	return ids
}

// The tracked connection dies while a waiter sleeps (CLIENT KILL): the
// tracker notices, and a foreign release is still heard.
func TestTrackingSurvivesKilledTrackedConnection(t *testing.T) {
	client := standaloneOnly(t)
	ctx := context.Background()
	key := "rktrack:" + strconv.FormatInt(time.Now().UnixNano(), 10)
	require.NoError(t, client.Set(ctx, key, "foreign", time.Minute).Err())
	l := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(time.Minute)))
	got := acquireAndRelease(l, key, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	ids := clientIDsWithFlag(t, client, "t")
	require.NotEmpty(t, ids, "a tracking connection")
	for _, id := range ids {
		require.NoError(t, client.ClientKillByFilter(ctx, "ID", strconv.FormatInt(id, 10)).Err())
	}
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, client.Del(ctx, key).Err())
	assert.NoError(t, waitFor(t, got, 10*time.Second, "the waiter after its tracked connection died"))
}

// The subscribed connection dies; later waiters still hear DELs.
func TestTrackingSurvivesKilledSubscriber(t *testing.T) {
	client := standaloneOnly(t)
	ctx := context.Background()
	l := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(time.Minute)))
	for round := 0; round < 3; round++ {
		key := "rktracks:" + strconv.FormatInt(time.Now().UnixNano(), 10)
		require.NoError(t, client.Set(ctx, key, "foreign", time.Minute).Err())
		got := acquireAndRelease(l, key, 20*time.Second)
		time.Sleep(500 * time.Millisecond)
		if round == 1 {
			require.NoError(t, client.ClientKillByFilter(ctx, "TYPE", "pubsub").Err())
			time.Sleep(500 * time.Millisecond)
		}
		require.NoError(t, client.Del(ctx, key).Err())
		assert.NoError(t, waitFor(t, got, 10*time.Second, "round "+strconv.Itoa(round)))
	}
}

// Tracking on a client with an ACL username and password, on DB 3.
func TestTrackingWithACLUser(t *testing.T) {
	admin := standaloneOnly(t)
	ctx := context.Background()
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "rk10", "on", ">s3cret", "~*", "&*", "+@all").Err())
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", "rk10") })
	client := redis.NewClient(&redis.Options{Addr: admin.Options().Addr, Username: "rk10", Password: "s3cret", DB: 3})
	t.Cleanup(func() { _ = client.Close() })
	key := "rktracka:" + strconv.FormatInt(time.Now().UnixNano(), 10)
	require.NoError(t, client.Set(ctx, key, "foreign", time.Minute).Err())
	l := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(time.Minute)))
	got := acquireAndRelease(l, key, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, client.Del(ctx, key).Err())
	assert.NoError(t, waitFor(t, got, 10*time.Second, "the waiter"))
}

// The server's idle "timeout" would close the tracked connection (pub/sub
// connections are exempt) while a waiter sleeps: a foreign release is
// still heard.
func TestTrackingSurvivesServerIdleTimeout(t *testing.T) {
	client := standaloneOnly(t)
	ctx := context.Background()
	require.NoError(t, client.ConfigSet(ctx, "timeout", "1").Err())
	t.Cleanup(func() { client.ConfigSet(context.Background(), "timeout", "0") })
	key := "rktrackt:" + strconv.FormatInt(time.Now().UnixNano(), 10)
	require.NoError(t, client.Set(ctx, key, "foreign", time.Minute).Err())
	l := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(time.Minute)))
	got := acquireAndRelease(l, key, 30*time.Second)
	time.Sleep(3500 * time.Millisecond) // idle past the server's timeout (checked by serverCron)
	require.NoError(t, client.Del(ctx, key).Err())
	assert.NoError(t, waitFor(t, got, 10*time.Second, "the waiter after the idle timeout"))
}

// The process that loaded refreshes early in the same setup.
func TestEarlyRefreshAfterOwnLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("xf-ctl")
		loader := func(context.Context) (int, error) { time.Sleep(200 * time.Millisecond); return 1, nil }
		c := newCache[int](t, b.client, rediskit.WithEarlyRefresh(1))
		_, err := c.GetOrLoad(ctx, key, time.Second, loader)
		require.NoError(t, err)
		require.Eventually(t, func() bool { return !rediskit.InFlight(c, key) }, 5*time.Second, time.Millisecond) // reads then go to Redis
		b.advance(950 * time.Millisecond)
		for i := 0; i < 50; i++ {
			_, err := c.GetOrLoad(ctx, key, time.Second, loader)
			require.NoError(t, err)
		}
		assert.Greater(t, c.Stats().Refreshes, uint64(0))
	})
}

// A refresh whose loader says the value no longer exists (ErrNotFound, with
// negative caching on) replaces it with the not-found marker: the deleted
// value is not served for the rest of the window.
func TestStaleRefreshNotFoundRemovesValue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("swr-nf")
		opts := []rediskit.CacheOption{rediskit.WithStaleWhileRevalidate(time.Minute), rediskit.WithNegativeCaching(time.Minute)}
		c := newCache[int](t, b.client, opts...)
		primeStale(t, b, key, opts...)
		var calls atomic.Int64
		gone := func(context.Context) (int, error) { calls.Add(1); return 0, rediskit.ErrNotFound }
		var served int
		for i := 0; i < 5; i++ {
			v, err := c.GetOrLoad(ctx, key, staleTTL, gone)
			if err == nil && v == 1 {
				served++
			}
			require.Eventually(t, func() bool { return !rediskit.InFlight(c, key) }, 5*time.Second, time.Millisecond) // the refresh ends
		}
		t.Logf("loader calls %d, deleted value served %d/5, stats %+v", calls.Load(), served, c.Stats())
		assert.LessOrEqual(t, served, 1, "after the refresh learned the value is gone")
	})
}
