package rediskit_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

const envRedlock = "REDISKIT_REDLOCK_ADDRS" // comma-separated independent masters

// deadAddr is an address nothing listens on: a node that is down. A
// Redlock's down nodes are at ports 1, 2, ...: distinct nodes.
const deadAddr = "127.0.0.1:1"

// redlockSet is a set of independent Redis nodes for Redlock tests.
type redlockSet struct {
	clients []*redis.Client
	mrs     []*miniredis.Miniredis // nil on real servers
	prefix  string
}

func (s *redlockSet) universal(down ...int) []redis.UniversalClient {
	out := make([]redis.UniversalClient, len(s.clients))
	for i, c := range s.clients {
		out[i] = c
	}
	for i, d := range down {
		out[d] = s.deadClient(i + 1)
	}
	return out
}

// deadClient is a client of the nth node that is down, on port n.
func (s *redlockSet) deadClient(n int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", n), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
}

func (s *redlockSet) key(name string) string { return s.prefix + name }

// forEachRedlockSet runs fn with n miniredis nodes, and with the first n of
// the real independent masters of REDISKIT_REDLOCK_ADDRS.
func forEachRedlockSet(t *testing.T, n int, fn func(t *testing.T, s *redlockSet)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		s := &redlockSet{prefix: "rl:"}
		for i := 0; i < n; i++ {
			mr := miniredis.RunT(t)
			c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			t.Cleanup(func() { _ = c.Close() })
			s.mrs, s.clients = append(s.mrs, mr), append(s.clients, c)
		}
		fn(t, s)
	})
	t.Run("real-masters", func(t *testing.T) {
		addrs := os.Getenv(envRedlock)
		if addrs == "" {
			t.Skipf("set %s to run against real independent masters", envRedlock)
		}
		list := strings.Split(addrs, ",")
		if len(list) < n {
			t.Skipf("%s has %d masters; this test wants %d", envRedlock, len(list), n)
		}
		list = list[:n]
		s := &redlockSet{prefix: fmt.Sprintf("rktest:rl:%d:", time.Now().UnixNano())}
		for _, a := range list {
			c := redis.NewClient(&redis.Options{Addr: a})
			t.Cleanup(func() { _ = c.Close() })
			require.NoError(t, c.Ping(context.Background()).Err())
			s.clients = append(s.clients, c)
		}
		fn(t, s)
	})
}

func newRedlock(t *testing.T, clients []redis.UniversalClient, opts ...rediskit.LockerOption) *rediskit.Locker {
	t.Helper()
	l := rediskit.NewRedlock(clients, opts...)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// holders returns how many nodes hold key with token.
func (s *redlockSet) holders(t *testing.T, key, token string) int {
	t.Helper()
	n := 0
	for _, c := range s.clients {
		if v, err := c.Get(context.Background(), key).Result(); err == nil && v == token {
			n++
		}
	}
	return n
}

func TestRedlockAllUp(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		ctx := context.Background()
		l := newRedlock(t, s.universal())
		key := s.key("all-up")
		lk, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		assert.Equal(t, 3, s.holders(t, key, lk.Token()))
		assert.Positive(t, lk.Fence())

		_, err = l.TryAcquire(ctx, key, time.Minute)
		assert.ErrorIs(t, err, rediskit.ErrNotObtained)

		require.NoError(t, lk.Refresh(ctx, 2*time.Minute))
		ttl, err := lk.TTL(ctx)
		require.NoError(t, err)
		assert.InDelta(t, 2*time.Minute, ttl, float64(time.Second))

		require.NoError(t, lk.Release(ctx))
		assert.Zero(t, s.holders(t, key, lk.Token()))
		assert.ErrorIs(t, lk.Release(ctx), rediskit.ErrLockNotHeld)
		assert.ErrorIs(t, lk.Refresh(ctx, time.Minute), rediskit.ErrLockNotHeld)
	})
}

func TestRedlockMinorityDown(t *testing.T) {
	for _, tc := range []struct{ nodes, down int }{{3, 1}, {5, 1}, {5, 2}} {
		t.Run(fmt.Sprintf("%d of %d down", tc.down, tc.nodes), func(t *testing.T) {
			forEachRedlockSet(t, tc.nodes, func(t *testing.T, s *redlockSet) {
				ctx := context.Background()
				down := make([]int, tc.down)
				for i := range down {
					down[i] = i
				}
				l := newRedlock(t, s.universal(down...))
				lk, err := l.TryAcquire(ctx, s.key("minority"), time.Minute)
				require.NoError(t, err, "a majority is up")
				assert.Equal(t, tc.nodes-tc.down, s.holders(t, s.key("minority"), lk.Token()))
				_, err = lk.TTL(ctx)
				require.NoError(t, err)
				require.NoError(t, lk.Refresh(ctx, time.Minute))
				require.NoError(t, lk.Release(ctx))
				assert.Zero(t, s.holders(t, s.key("minority"), lk.Token()))
			})
		})
	}
}

func TestRedlockMajorityDown(t *testing.T) {
	for _, tc := range []struct{ nodes, down int }{{3, 2}, {5, 3}} {
		t.Run(fmt.Sprintf("%d of %d down", tc.down, tc.nodes), func(t *testing.T) {
			forEachRedlockSet(t, tc.nodes, func(t *testing.T, s *redlockSet) {
				down := make([]int, tc.down)
				for i := range down {
					down[i] = i
				}
				l := newRedlock(t, s.universal(down...))
				key := s.key("majority-down")
				_, err := l.TryAcquire(context.Background(), key, time.Minute)
				require.Error(t, err)
				assert.NotErrorIs(t, err, rediskit.ErrNotObtained, "an outage is not contention")
				var nodeErr *rediskit.NodeError
				require.ErrorAs(t, err, &nodeErr)
				assert.Contains(t, nodeErr.Node, "127.0.0.1:", "a down node's address")
				assert.Contains(t, err.Error(), deadAddr)
				for _, c := range s.clients[tc.down:] {
					assert.Zero(t, c.Exists(context.Background(), key).Val(), "what was taken is undone")
				}
			})
		})
	}
}

func TestRedlockContention(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		ctx := context.Background()
		l := newRedlock(t, s.universal())

		key := s.key("minority-held")
		require.NoError(t, s.clients[0].Set(ctx, key, "1", time.Minute).Err()) // a seed-style lock on one node
		lk, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err, "two of three nodes are free")
		require.NoError(t, lk.Release(ctx))
		assert.Equal(t, "1", s.clients[0].Get(ctx, key).Val(), "the other owner's key is untouched")

		key = s.key("majority-held")
		for _, c := range s.clients[:2] {
			require.NoError(t, c.Set(ctx, key, "1", time.Minute).Err())
		}
		_, err = l.TryAcquire(ctx, key, time.Minute)
		assert.ErrorIs(t, err, rediskit.ErrNotObtained)
		assert.Zero(t, s.clients[2].Exists(ctx, key).Val(), "the free node's grant is undone")
	})
}

func TestRedlockMutualExclusion(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		l := newRedlock(t, s.universal())
		b := &backend{name: "redlock", client: s.clients[0], prefix: s.prefix}
		count, inside := counterWorkload(t, b, 10, 10, func(ctx context.Context, section func(context.Context) error) error {
			return l.WithLock(ctx, s.key("mutex"), section, rediskit.WithLockWait(time.Minute))
		})
		assert.Equal(t, 100, count)
		assert.Equal(t, int64(1), inside)
	})
}

func TestRedlockFenceAcrossMajorities(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		ctx := context.Background()
		key := s.key("fence")
		// Node 0's counter runs far ahead of the others'.
		high := int64(5_000_000_000_000_000)
		require.NoError(t, s.clients[0].Set(ctx, rediskit.CompanionKey(key, ":fence"), high, time.Hour).Err())

		first, err := newRedlock(t, s.universal()).TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		assert.Greater(t, first.Fence(), high)
		require.NoError(t, first.Release(ctx))

		// Without node 0, the remaining majority must still issue a larger
		// fence: the first acquisition raised their counters.
		second, err := newRedlock(t, s.universal(0)).TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		assert.Greater(t, second.Fence(), first.Fence())
		require.NoError(t, second.Release(ctx))
	})
}

func TestRedlockBadInput(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	d := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	sameAddr := redis.NewClient(&redis.Options{Addr: mr.Addr()}) // another client of c's node
	t.Cleanup(func() { _ = d.Close(); _ = sameAddr.Close() })
	for name, clients := range map[string][]redis.UniversalClient{
		"none":              nil,
		"one":               {c},
		"two":               {c, d},
		"four":              {c, d, c, d},
		"a nil":             {c, nil, d},
		"one client twice":  {c, d, c},
		"one address twice": {c, d, sameAddr},
	} {
		t.Run(name, func(t *testing.T) {
			l := rediskit.NewRedlock(clients)
			defer l.Close()
			_, err := l.TryAcquire(ctx, "k", time.Second)
			assert.ErrorIs(t, err, rediskit.ErrInvalidArgument)
			assert.True(t, errors.Is(l.WithLock(ctx, "k", func(context.Context) error { return nil }), rediskit.ErrInvalidArgument))
		})
	}
	assert.Empty(t, mr.Keys())
}
