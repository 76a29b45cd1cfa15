package rediskit_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// seedPython returns a Python interpreter that can import redis, or skips.
func seedPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(py); err == nil && exec.Command(path, "-c", "import redis").Run() == nil {
			return path
		}
	}
	t.Skip("no python3 with the redis package (Debian: python3-redis; scripts/redis-up.sh installs it)")
	return ""
}

// seed runs testdata/seed_client.py, which does what the Python seed does.
func seed(t *testing.T, py, addr string, args ...string) string {
	t.Helper()
	out, err := exec.Command(py, append([]string{"testdata/seed_client.py", "redis://" + addr + "/0"}, args...)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return strings.TrimSpace(string(out))
}

// TestSeedInterop shows that the Python seed's RedisClient and rediskit
// share cache values and exclude each other's locks on a real Redis.
func TestSeedInterop(t *testing.T) {
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skipf("set %s to run against a real standalone", envStandalone)
	}
	py := seedPython(t)
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = client.Close() })
	prefix := "rktest:interop:" + time.Now().Format("150405.000000") + ":"

	type user struct {
		ID   int      `json:"id"`
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	users := newCache[user](t, client)

	t.Run("Go reads what Python wrote", func(t *testing.T) {
		key := prefix + "py-user"
		seed(t, py, addr, "set", key, `{"id": 1, "name": "Ada", "tags": ["x", "y"]}`, "60")
		u, err := users.Get(ctx, key)
		require.NoError(t, err)
		assert.Equal(t, user{ID: 1, Name: "Ada", Tags: []string{"x", "y"}}, u)
		assert.InDelta(t, 60*time.Second, client.TTL(ctx, key).Val(), float64(2*time.Second))
	})
	t.Run("Python reads what Go wrote", func(t *testing.T) {
		key := prefix + "go-user"
		require.NoError(t, users.Set(ctx, key, user{ID: 2, Name: "Grace", Tags: []string{"é"}}, 0))
		assert.Equal(t, `{"id": 2, "name": "Grace", "tags": ["\u00e9"]}`, seed(t, py, addr, "get", key))
	})
	t.Run("a Python lock excludes Go", func(t *testing.T) {
		key := prefix + "user:1:lock"
		require.Equal(t, "locked", seed(t, py, addr, "lock", key, "10"))
		_, err := newLocker(t, client).TryAcquire(ctx, key, time.Second)
		assert.ErrorIs(t, err, rediskit.ErrNotObtained)
	})
	t.Run("a Go lock excludes Python", func(t *testing.T) {
		key := prefix + "user:2:lock"
		lk, err := newLocker(t, client).TryAcquire(ctx, key, 10*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "busy", seed(t, py, addr, "lock", key, "10"))
		require.NoError(t, lk.Release(ctx))
		assert.Equal(t, "locked", seed(t, py, addr, "lock", key, "10"), "and frees it on release")
	})
}
