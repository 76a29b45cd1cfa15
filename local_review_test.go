package rediskit_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// Regression tests from the adversarial review of the local tier. Each
// failed before its fix.

// A server that is busy for a while (another program's long script) is
// not one that cannot track: once it is free, tracking resumes, and
// another program's writes are heard again.
func TestLocalReviewBusyServerKeepsTracking(t *testing.T) {
	r := startOwnRedis(t)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: r.addr()})
	t.Cleanup(func() { _ = admin.Close() })
	require.NoError(t, admin.ConfigSet(ctx, "busy-reply-threshold", "100").Err())
	client := redis.NewClient(&redis.Options{Addr: r.addr()})
	t.Cleanup(func() { _ = client.Close() })
	c := newCache[int](t, client, rediskit.WithKeyPrefix("busy:"), rediskit.WithLocalCache(100, time.Hour))
	require.NoError(t, c.Set(ctx, "k", 1, time.Hour))
	awaitLocal(t, c, "k")
	// 1.5 s of a script: the tier's ping, and its reconnection, meet BUSY.
	slow := redis.NewClient(&redis.Options{Addr: r.addr(), ReadTimeout: 5 * time.Second})
	t.Cleanup(func() { _ = slow.Close() })
	require.NoError(t, slow.Eval(ctx, `local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2]
		while true do local n = redis.call('TIME') if n[1] * 1000000 + n[2] > t0 + 1500000 then return 1 end end`, nil).Err())
	require.NoError(t, admin.Set(ctx, "busy:k", "2", 0).Err())
	assert.Equal(t, 2, awaitLocal(t, c, "k"), "the tier fills again once the server is free")
	require.NoError(t, admin.Set(ctx, "busy:k", "3", 0).Err())
	require.Eventually(t, func() bool { v, _ := c.Get(ctx, "k"); return v == 3 }, 3*time.Second, time.Millisecond,
		"another program's write after the busy spell is not heard: tracking was given up")
}

// A slot that moves to another master while its key is in the tier: the
// key's reads follow the MOVED to a node the client's slot map did not yet
// name, and writes there are still heard.
func TestLocalReviewSlotMigration(t *testing.T) {
	cc := clusterClient(t, nil)
	ctx := context.Background()
	masters := clusterMasters(t, cc)
	src, dst := masters[0], masters[1]
	prefix := uniquePrefix("lcmig")
	key := keysOn(t, cc, prefix, src.addr, 1)[0]
	slot := rediskit.KeySlot(key)
	moved := false
	t.Cleanup(func() {
		if moved {
			restoreSlot(t, slot, src, dst, masters)
		}
	})
	c := newCache[int](t, cc, rediskit.WithKeyPrefix(prefix), rediskit.WithLocalCache(100, time.Hour))
	k := key[len(prefix):]
	require.NoError(t, c.Set(ctx, k, 1, time.Hour))
	awaitLocal(t, c, k)
	moved = true
	require.NoError(t, migrateSlot(ctx, slot, src, dst, masters))
	require.Eventually(t, func() bool { return !rediskit.LocalHas(c, k) }, 5*time.Second, time.Millisecond,
		"the migration's DEL on the old master is heard")
	assert.Equal(t, 1, awaitLocal(t, c, k), "filled again from the new master")
	require.NoError(t, dst.c.Set(ctx, key, "2", 0).Err())
	require.Eventually(t, func() bool { v, _ := c.Get(ctx, k); return v == 2 }, 3*time.Second, time.Millisecond,
		"a write on the slot's new master is not heard")
}

// A client that reads replicas: GetMany's reads that fill the tier go to
// the masters, so a lagging replica's old value never fills it.
func TestLocalReviewReplicaReadsDoNotFill(t *testing.T) {
	cc := clusterClient(t, func(o *redis.ClusterOptions) { o.ReadOnly = true })
	ctx := context.Background()
	prefix := uniquePrefix("lcro")
	c := newCache[int](t, cc, rediskit.WithKeyPrefix(prefix), rediskit.WithLocalCache(100, time.Hour))
	require.NoError(t, c.Set(ctx, "k", 1, time.Hour))
	require.Eventually(t, func() bool {
		before := c.Stats().LocalHits
		m, err := c.GetMany(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, 1, m["k"])
		return c.Stats().LocalHits > before
	}, 5*time.Second, 5*time.Millisecond)
	master, err := cc.MasterForKey(ctx, prefix+"k")
	require.NoError(t, err)
	var mu sync.Mutex
	var replicas []*redis.Client
	require.NoError(t, cc.ForEachSlave(ctx, func(ctx context.Context, r *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		replicas = append(replicas, r)
		return nil
	}))
	for _, r := range replicas { // replication lags: the replicas apply no write for a second
		require.NoError(t, r.Do(ctx, "CLIENT", "PAUSE", 1000, "WRITE").Err())
	}
	require.NoError(t, master.Set(ctx, prefix+"k", "2", 0).Err())
	require.Eventually(t, func() bool { return !rediskit.LocalHas(c, "k") }, 3*time.Second, time.Millisecond)
	m, err := c.GetMany(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, 2, m["k"], "GetMany read a replica")
	time.Sleep(1200 * time.Millisecond)
	v, err := c.Get(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, 2, v, "the tier keeps a replica's old value")
}

// Without tracking, the Caches' messages name keys of any bytes, and reach
// Caches whose prefixes differ but reach the same Redis keys.
func TestLocalReviewFallbackMessages(t *testing.T) {
	client, _ := onMiniredis(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name                  string
		readPrefix, readKey   string
		writePrefix, writeKey string
	}{
		{"a key that is not UTF-8", "p:", "k\xff", "p:", "k\xff"},
		{"prefixes that nest", "a:", "b:1", "a:b:", "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := newCache[int](t, client, rediskit.WithKeyPrefix(tc.readPrefix), rediskit.WithLocalCache(100, time.Hour))
			writer := newCache[int](t, client, rediskit.WithKeyPrefix(tc.writePrefix), rediskit.WithLocalCache(100, time.Hour))
			require.NoError(t, writer.Set(ctx, tc.writeKey, 1, time.Hour))
			awaitLocal(t, reader, tc.readKey)
			require.NoError(t, writer.Set(ctx, tc.writeKey, 2, time.Hour))
			require.Eventually(t, func() bool { v, _ := reader.Get(ctx, tc.readKey); return v == 2 }, 3*time.Second, time.Millisecond,
				"the writer's message did not reach the reader")
		})
	}
}

// A key of another type reads as ErrWrongType through the tier's reads
// (scripts) too, on miniredis as on Redis.
func TestLocalReviewWrongType(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		c := localCache[int](t, b, time.Minute)
		require.NoError(t, b.client.RPush(ctx, b.prefix+"list", "x").Err())
		_, err := c.Get(ctx, "list")
		assert.ErrorIs(t, err, rediskit.ErrWrongType)
		_, err = c.GetMany(ctx, "list")
		assert.ErrorIs(t, err, rediskit.ErrWrongType)
		assert.Contains(t, fmt.Sprint(err), "list")
	})
}

// An ACL user that may not turn tracking on (NOPERM) gets the fallback:
// the tier fills, from the Caches' own messages.
func TestLocalReviewNoPermFallsBack(t *testing.T) {
	admin := standaloneOnly(t)
	ctx := context.Background()
	user := fmt.Sprintf("rktest-noperm-%d", time.Now().UnixNano())
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-client|tracking").Err())
	t.Cleanup(func() { _ = admin.Do(context.Background(), "ACL", "DELUSER", user).Err() })
	client := redis.NewClient(&redis.Options{Addr: admin.Options().Addr, Username: user, Password: "pw"})
	t.Cleanup(func() { _ = client.Close() })
	prefix := uniquePrefix("noperm")
	reader := newCache[int](t, client, rediskit.WithKeyPrefix(prefix), rediskit.WithLocalCache(10, time.Hour))
	writer := newCache[int](t, client, rediskit.WithKeyPrefix(prefix), rediskit.WithLocalCache(10, time.Hour))
	require.NoError(t, writer.Set(ctx, "k", 1, time.Hour))
	awaitLocal(t, reader, "k")
	require.NoError(t, writer.Set(ctx, "k", 2, time.Hour))
	require.Eventually(t, func() bool { v, _ := reader.Get(ctx, "k"); return v == 2 }, 3*time.Second, time.Millisecond,
		"the writer's message did not reach the reader")
}
