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

// Keys whose braces make slot computation tricky.
var awkwardKeys = []string{
	"user:1:lock", "{user:1}:lock", "a}b{c", "{}", "{", "}", "}{", "{}{x}",
	"a{b}c{d}", "x{y", "{{a}}", "lock:ünïcode", "123456789",
}

func TestKeySlot(t *testing.T) {
	// Reference values from the Redis Cluster specification and redis-cli.
	assert.Equal(t, 12739, rediskit.KeySlot("123456789"))
	assert.Equal(t, rediskit.KeySlot("user:1"), rediskit.KeySlot("{user:1}:lock"))
	assert.Equal(t, rediskit.KeySlot("{}"), rediskit.KeySlot("{}"))
	assert.NotEqual(t, rediskit.KeySlot("a"), rediskit.KeySlot("{}a"), "an empty tag hashes the whole key")
}

func TestCompanionKeySharesTheSlot(t *testing.T) {
	for _, key := range awkwardKeys {
		c := rediskit.CompanionKey(key, ":fence")
		assert.Equal(t, rediskit.KeySlot(key), rediskit.KeySlot(c), "key %q companion %q", key, c)
		assert.NotEqual(t, key, c)
	}
	assert.NotEqual(t, rediskit.CompanionKey("a", ":fence"), rediskit.CompanionKey("b", ":fence"))
}

func TestAwkwardKeysOnEveryBackend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		if cc, ok := b.client.(*redis.ClusterClient); ok {
			for _, key := range awkwardKeys {
				want, err := cc.ClusterKeySlot(ctx, key).Result()
				require.NoError(t, err)
				assert.EqualValues(t, want, rediskit.KeySlot(key), "slot of %q", key)
				want, err = cc.ClusterKeySlot(ctx, rediskit.CompanionKey(key, ":fence")).Result()
				require.NoError(t, err)
				assert.EqualValues(t, rediskit.KeySlot(key), want, "slot of %q's companion", key)
			}
		}
		l := newLocker(t, b.client, rediskit.WithKeyPrefix(b.prefix))
		for _, key := range awkwardKeys {
			lk, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err, "key %q", key)
			require.NoError(t, lk.Release(ctx), "key %q", key)
		}

		c := newCache[string](t, b.client, rediskit.WithKeyPrefix(b.prefix))
		items := map[string]string{}
		for _, key := range awkwardKeys {
			items[key] = "v:" + key
		}
		require.NoError(t, c.SetMany(ctx, items, time.Minute))
		got, err := c.GetMany(ctx, awkwardKeys...)
		require.NoError(t, err)
		assert.Equal(t, items, got)
		require.NoError(t, c.Delete(ctx, awkwardKeys...))
		got, err = c.GetMany(ctx, awkwardKeys...)
		require.NoError(t, err)
		assert.Empty(t, got)
	})
}
