package rediskit_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rediskit/rediskit"
)

func TestMain(m *testing.M) {
	// After dials fail (a server down), go-redis probes the server on a
	// goroutine of its pool that sleeps a second between probes and ends
	// at its next wake-up once the client is closed.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// The environment variables that point the behaviour suite at real servers.
// Unset, the backends they name are skipped; CI sets them all.
const (
	envStandalone = "REDISKIT_REDIS_ADDR"    // host:port of a standalone Redis
	envCluster    = "REDISKIT_CLUSTER_ADDRS" // comma-separated seed nodes of a Redis Cluster
)

// backend is one Redis the behaviour suite runs against.
type backend struct {
	name   string
	client redis.UniversalClient
	mr     *miniredis.Miniredis // nil on a real server
	prefix string               // unique to the test, so tests can share a server
	// another returns a new client of the same server, as another process
	// would have, closed when the test ends.
	another func(t *testing.T) redis.UniversalClient
}

// key returns name made unique to the running test.
func (b *backend) key(name string) string { return b.prefix + name }

// advance lets d pass for the keys' TTLs: miniredis's clock is moved, a real
// server is waited for.
func (b *backend) advance(d time.Duration) {
	if b.mr != nil {
		b.mr.FastForward(d)
		return
	}
	time.Sleep(d)
}

// flushScripts empties the script cache of every node.
func (b *backend) flushScripts(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if cc, ok := b.client.(*redis.ClusterClient); ok {
		require.NoError(t, cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.ScriptFlush(ctx).Err()
		}))
		return
	}
	require.NoError(t, b.client.ScriptFlush(ctx).Err())
}

var testSeq atomic.Int64

// backendKinds lists the suite's backends in order; each becomes a subtest.
var backendKinds = []struct {
	name string
	env  string
	dial func(t *testing.T, addr string) (redis.UniversalClient, *miniredis.Miniredis)
}{
	{"miniredis", "", func(t *testing.T, _ string) (redis.UniversalClient, *miniredis.Miniredis) {
		mr := miniredis.RunT(t)
		return redis.NewClient(&redis.Options{Addr: mr.Addr()}), mr
	}},
	{"standalone", envStandalone, func(t *testing.T, addr string) (redis.UniversalClient, *miniredis.Miniredis) {
		return redis.NewClient(&redis.Options{Addr: addr}), nil
	}},
	{"cluster", envCluster, func(t *testing.T, addrs string) (redis.UniversalClient, *miniredis.Miniredis) {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")}), nil
	}},
	{"universal-cluster", envCluster, func(t *testing.T, addrs string) (redis.UniversalClient, *miniredis.Miniredis) {
		return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: strings.Split(addrs, ",")}), nil
	}},
}

// forEachBackend runs fn once per backend, as subtests named after them.
// Backends whose environment variable is unset are skipped with a message
// naming it.
func forEachBackend(t *testing.T, fn func(t *testing.T, b *backend)) {
	t.Helper()
	for _, k := range backendKinds {
		k := k
		t.Run(k.name, func(t *testing.T) {
			addr := ""
			if k.env != "" {
				if addr = os.Getenv(k.env); addr == "" {
					t.Skipf("set %s to run against a real %s", k.env, k.name)
				}
			}
			client, mr := k.dial(t, addr)
			t.Cleanup(func() { _ = client.Close() })
			require.NoError(t, client.Ping(context.Background()).Err(), "ping %s", k.name)
			b := &backend{name: k.name, client: client, mr: mr,
				prefix: fmt.Sprintf("rktest:%d:%d:", time.Now().UnixNano(), testSeq.Add(1))}
			b.another = func(t *testing.T) redis.UniversalClient {
				var c redis.UniversalClient
				if mr != nil {
					c = redis.NewClient(&redis.Options{Addr: mr.Addr()})
				} else {
					c, _ = k.dial(t, addr)
				}
				t.Cleanup(func() { _ = c.Close() })
				return c
			}
			fn(t, b)
		})
	}
}

// onMiniredis runs fn on a fresh miniredis, for tests that need its clock
// or its inspection helpers.
func onMiniredis(t *testing.T) (redis.UniversalClient, *miniredis.Miniredis) {
	t.Helper()
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	return client, mr
}

// ignoreMiniredis skips the goroutines on which miniredis serves each client
// connection: they belong to the test server, not to the package.
var ignoreMiniredis = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.(*Server).servePeer"),
	goleak.IgnoreAnyFunction("github.com/alicebob/miniredis/v2/server.(*Server).servePeer.func2"),
}

// newLocker returns a Locker closed when the test ends.
func newLocker(t *testing.T, client redis.UniversalClient, opts ...rediskit.LockerOption) *rediskit.Locker {
	t.Helper()
	l := rediskit.NewLocker(client, opts...)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// newCache returns a Cache closed when the test ends.
func newCache[T any](t *testing.T, client redis.UniversalClient, opts ...rediskit.CacheOption) *rediskit.Cache[T] {
	t.Helper()
	c := rediskit.NewCache[T](client, opts...)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
