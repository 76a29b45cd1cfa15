package rediskit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

type profile struct {
	ID      int               `json:"id"`
	Name    string            `json:"name"`
	Tags    []string          `json:"tags"`
	Scores  map[string][]int  `json:"scores"`
	Manager *profile          `json:"manager,omitempty"`
	Seen    time.Time         `json:"seen"`
	Extra   map[string]string `json:"extra"`
}

// roundTrip stores v through a Cache[T], checks that Redis holds exactly
// json.Marshal(v), and that Get returns v.
func roundTrip[T any](t *testing.T, b *backend, name string, v T) {
	t.Helper()
	ctx := context.Background()
	c := newCache[T](t, b.client)
	key := b.key(name)
	require.NoError(t, c.Set(ctx, key, v, time.Minute))
	want, err := json.Marshal(v)
	require.NoError(t, err)
	raw, err := b.client.Get(ctx, key).Bytes()
	require.NoError(t, err)
	assert.Equal(t, string(want), string(raw), "stored as plain JSON")
	got, err := c.Get(ctx, key)
	require.NoError(t, err)
	assert.Equal(t, v, got)
}

func TestCacheRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		boss := &profile{ID: 1, Name: "boss", Seen: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
		roundTrip(t, b, "struct", profile{
			ID: 2, Name: "ana", Tags: []string{"a", "b"}, Scores: map[string][]int{"x": {1, 2}},
			Manager: boss, Seen: time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC),
			Extra: map[string]string{"k": "v"},
		})
		roundTrip(t, b, "string", "héllo <world> & \"you\"")
		roundTrip(t, b, "int", 42)
		roundTrip(t, b, "bytes", []byte{0, 1, 2, 255})
		roundTrip(t, b, "map", map[string]any{"a": 1.5, "b": []any{"x"}})
	})
}

func TestCacheGetMissAndDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		c := newCache[int](t, b.client)
		_, err := c.Get(ctx, b.key("absent"))
		assert.ErrorIs(t, err, rediskit.ErrCacheMiss)
		assert.NotErrorIs(t, err, redis.Nil, "redis.Nil never leaks")

		keys := make([]string, 50) // spread over the cluster's slots
		for i := range keys {
			keys[i] = b.key(fmt.Sprintf("del:%d", i))
			require.NoError(t, c.Set(ctx, keys[i], i, time.Minute))
		}
		require.NoError(t, c.Delete(ctx))
		require.NoError(t, c.Delete(ctx, keys[0]))
		assert.Zero(t, b.client.Exists(ctx, keys[0]).Val())
		require.NoError(t, c.Delete(ctx, append(keys[1:], b.key("never-there"))...))
		for _, k := range keys {
			assert.Zero(t, b.client.Exists(ctx, k).Val(), k)
		}
	})
}

func TestCacheCorruptAndUnencodable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("corrupt")
		require.NoError(t, b.client.Set(ctx, key, "{not json", time.Minute).Err())
		c := newCache[profile](t, b.client)
		v, err := c.Get(ctx, key)
		assert.ErrorIs(t, err, rediskit.ErrDecode)
		var syntax *json.SyntaxError
		assert.ErrorAs(t, err, &syntax, "the codec's error is wrapped")
		assert.Contains(t, err.Error(), key)
		assert.Equal(t, profile{}, v)

		require.NoError(t, b.client.Set(ctx, key, `"a string"`, time.Minute).Err())
		_, err = c.Get(ctx, key)
		assert.ErrorIs(t, err, rediskit.ErrDecode, "valid JSON of the wrong type")

		bad := newCache[any](t, b.client)
		for name, v := range map[string]any{"chan": make(chan int), "func": func() {}, "nan": math.NaN()} {
			err := bad.Set(ctx, b.key(name), v, time.Minute)
			assert.ErrorIs(t, err, rediskit.ErrInvalidArgument, name)
			assert.Zero(t, b.client.Exists(ctx, b.key(name)).Val(), "nothing written for %s", name)
		}
		err = bad.SetMany(ctx, map[string]any{b.key("ok"): 1, b.key("bad"): math.Inf(1)}, time.Minute)
		assert.ErrorIs(t, err, rediskit.ErrInvalidArgument)
		assert.Zero(t, b.client.Exists(ctx, b.key("ok")).Val(), "SetMany writes nothing when one value fails")
	})
}

func TestCacheGetManySetMany(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		c := newCache[int](t, b.client)
		items := map[string]int{}
		for i := 0; i < 200; i++ { // many keys, over all the cluster's nodes
			items[b.key(fmt.Sprintf("many:%d", i))] = i
		}
		require.NoError(t, c.SetMany(ctx, items, time.Minute))
		keys := make([]string, 0, len(items)+2)
		for k := range items {
			keys = append(keys, k)
		}
		require.NoError(t, b.client.Set(ctx, b.key("many:corrupt"), "x{", time.Minute).Err())
		keys = append(keys, b.key("many:missing"), b.key("many:corrupt"))

		got, err := c.GetMany(ctx, keys...)
		assert.ErrorIs(t, err, rediskit.ErrDecode)
		assert.Contains(t, err.Error(), b.key("many:corrupt"))
		assert.Equal(t, items, got, "the decodable keys are all returned, the missing one left out")

		empty, err := c.GetMany(ctx)
		require.NoError(t, err)
		assert.Empty(t, empty)
		require.NoError(t, c.SetMany(ctx, nil, 0))
	})
}

func TestCacheTTL(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	c := newCache[string](t, client)

	require.NoError(t, c.Set(ctx, "default", "v", 0))
	assert.Equal(t, time.Hour, mr.TTL("default"), "ttl 0 is the seed's one hour")
	require.NoError(t, c.Set(ctx, "ms", "v", 1500*time.Millisecond))
	assert.Equal(t, 1500*time.Millisecond, mr.TTL("ms"), "milliseconds are kept")
	require.NoError(t, c.SetMany(ctx, map[string]string{"m1": "a", "m2": "b"}, 0))
	assert.Equal(t, time.Hour, mr.TTL("m2"))

	assert.ErrorIs(t, c.Set(ctx, "neg", "v", -time.Second), rediskit.ErrInvalidArgument)
	assert.ErrorIs(t, c.Set(ctx, "tiny", "v", time.Microsecond), rediskit.ErrInvalidArgument)
	assert.False(t, mr.Exists("neg"))

	d := newCache[string](t, client, rediskit.WithDefaultTTL(time.Minute))
	require.NoError(t, d.Set(ctx, "d", "v", 0))
	assert.Equal(t, time.Minute, mr.TTL("d"))

	j := newCache[int](t, client, rediskit.WithTTLJitter(0.5))
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		key := fmt.Sprintf("j%d", i)
		require.NoError(t, j.Set(ctx, key, i, 100*time.Second))
		ttl := mr.TTL(key)
		assert.LessOrEqual(t, ttl, 100*time.Second)
		assert.GreaterOrEqual(t, ttl, 50*time.Second)
		seen[ttl] = true
	}
	assert.Greater(t, len(seen), 10, "jitter spreads the TTLs")
}

func TestCacheSeedCompatibility(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	type user struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	// Bytes exactly as Python's json.dumps writes them, spaces included.
	require.NoError(t, mr.Set("user:1", `{"id": 1, "name": "a"}`))
	c := newCache[user](t, client)
	u, err := c.Get(ctx, "user:1")
	require.NoError(t, err)
	assert.Equal(t, user{ID: 1, Name: "a"}, u)

	lists := rediskit.NewCache[[]any](client)
	require.NoError(t, mr.Set("list", `[1, "two", null, true, 2.5, {"k": [3]}]`))
	l, err := lists.Get(ctx, "list")
	require.NoError(t, err)
	assert.Equal(t, []any{1.0, "two", nil, true, 2.5, map[string]any{"k": []any{3.0}}}, l)
}

func TestGetOrLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()

		t.Run("one load for 100 concurrent misses", func(t *testing.T) {
			c := newCache[string](t, b.client)
			key := b.key("stampede")
			var calls atomic.Int32
			release := make(chan struct{})
			load := func(ctx context.Context) (string, error) {
				calls.Add(1)
				<-release
				return "value", nil
			}
			var wg sync.WaitGroup
			results := make(chan string, 100)
			for i := 0; i < 100; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					v, err := c.GetOrLoad(ctx, key, time.Minute, load)
					assert.NoError(t, err)
					results <- v
				}()
			}
			time.Sleep(50 * time.Millisecond) // let them all miss and join
			close(release)
			wg.Wait()
			close(results)
			for v := range results {
				assert.Equal(t, "value", v)
			}
			assert.EqualValues(t, 1, calls.Load())
			assert.Eventually(t, func() bool { return b.client.Get(ctx, key).Val() == `"value"` }, 5*time.Second, 5*time.Millisecond)

			v, err := c.GetOrLoad(ctx, key, time.Minute, func(context.Context) (string, error) {
				return "", errors.New("must not be called on a hit")
			})
			require.NoError(t, err)
			assert.Equal(t, "value", v)
		})
		t.Run("one load for 100 concurrent misses with an instant loader, 50 rounds", func(t *testing.T) {
			// Callers that missed just before the load's write and join
			// after its waiters were answered must not load again.
			c := newCache[int](t, b.client)
			for round := 0; round < 50; round++ {
				key := b.key(fmt.Sprintf("instant:%d", round))
				var calls atomic.Int32
				load := func(context.Context) (int, error) { calls.Add(1); return round, nil }
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := 0; i < 100; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						v, err := c.GetOrLoad(ctx, key, time.Minute, load)
						assert.NoError(t, err)
						assert.Equal(t, round, v)
					}()
				}
				close(start)
				wg.Wait()
				if !assert.EqualValues(t, 1, calls.Load(), "round %d: loads", round) {
					break
				}
			}
		})
		t.Run("a key of another type is not overwritten", func(t *testing.T) {
			c := newCache[int](t, b.client)
			key := b.key("a-list")
			require.NoError(t, b.client.RPush(ctx, key, "x", "y").Err())
			_, err := c.Get(ctx, key)
			assert.ErrorIs(t, err, rediskit.ErrWrongType)
			assert.Contains(t, err.Error(), key)

			v, err := c.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) { return 7, nil })
			require.NoError(t, err)
			assert.Equal(t, 7, v, "the loaded value is returned")
			assert.Eventually(t, func() bool { return c.Stats().RedisErrors >= 2 }, 5*time.Second, 5*time.Millisecond,
				"the wrong type is reported, on the read and on the refused write-back")
			assert.Equal(t, []string{"x", "y"}, b.client.LRange(ctx, key, 0, -1).Val(), "the other program's list is intact")
			assert.Equal(t, "list", b.client.Type(ctx, key).Val())
		})
		t.Run("a cancelled waiter leaves the others their value", func(t *testing.T) {
			c := newCache[int](t, b.client)
			key := b.key("cancelled")
			started, release := make(chan struct{}), make(chan struct{})
			var loadCtxErr atomic.Value
			load := func(ctx context.Context) (int, error) {
				close(started)
				<-release
				if err := ctx.Err(); err != nil {
					loadCtxErr.Store(err)
				}
				return 7, nil
			}
			first, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() {
				_, err := c.GetOrLoad(first, key, time.Minute, load)
				errc <- err
			}()
			<-started
			valc := make(chan int, 1)
			go func() {
				v, err := c.GetOrLoad(ctx, key, time.Minute, load)
				assert.NoError(t, err)
				valc <- v
			}()
			cancel()
			assert.ErrorIs(t, <-errc, context.Canceled)
			time.Sleep(10 * time.Millisecond)
			close(release)
			assert.Equal(t, 7, <-valc)
			assert.Nil(t, loadCtxErr.Load(), "the load's context outlives the first caller's")
		})
		t.Run("errors are shared, not cached", func(t *testing.T) {
			c := newCache[int](t, b.client)
			key := b.key("failing")
			boom := errors.New("db down")
			_, err := c.GetOrLoad(ctx, key, 0, func(context.Context) (int, error) { return 0, boom })
			assert.ErrorIs(t, err, boom)
			v, err := c.GetOrLoad(ctx, key, 0, func(context.Context) (int, error) { return 3, nil })
			require.NoError(t, err)
			assert.Equal(t, 3, v)
			assert.EqualValues(t, 1, c.Stats().LoadErrors)
		})
		t.Run("a panicking load is an error", func(t *testing.T) {
			c := newCache[int](t, b.client)
			_, err := c.GetOrLoad(ctx, b.key("panic"), 0, func(context.Context) (int, error) { panic("kaboom") })
			require.Error(t, err)
			assert.Contains(t, err.Error(), "kaboom")
			assert.Eventually(t, func() bool { return b.client.Exists(ctx, b.key("panic")).Val() == 0 }, 5*time.Second, 5*time.Millisecond,
				"nothing cached; the load's lease goes")
		})
		t.Run("negative caching", func(t *testing.T) {
			c := newCache[int](t, b.client, rediskit.WithNegativeCaching(100*time.Millisecond))
			key := b.key("ghost")
			var calls atomic.Int32
			load := func(context.Context) (int, error) {
				calls.Add(1)
				return 0, fmt.Errorf("user 9: %w", rediskit.ErrNotFound)
			}
			for i := 0; i < 3; i++ {
				_, err := c.GetOrLoad(ctx, key, 0, load)
				assert.ErrorIs(t, err, rediskit.ErrNotFound)
			}
			assert.EqualValues(t, 1, calls.Load(), "the marker stops repeated loads")
			// The marker is written after the callers are answered.
			require.Eventually(t, func() bool {
				_, err := c.Get(ctx, key)
				return errors.Is(err, rediskit.ErrNotFound)
			}, 5*time.Second, 5*time.Millisecond)
			raw := b.client.Get(ctx, key).Val()
			assert.False(t, json.Valid([]byte(raw)), "the marker is no JSON value")

			// The load stays joinable for a moment after its write-back;
			// miniredis's clock jumps, where real time would let it end.
			time.Sleep(20 * time.Millisecond)
			b.advance(150 * time.Millisecond)
			_, err := c.GetOrLoad(ctx, key, 0, load)
			assert.ErrorIs(t, err, rediskit.ErrNotFound)
			assert.EqualValues(t, 2, calls.Load(), "loads again once the marker expired")

			off := newCache[int](t, b.client)
			key2 := b.key("ghost2")
			_, _ = off.GetOrLoad(ctx, key2, 0, load)
			assert.Eventually(t, func() bool { return b.client.Exists(ctx, key2).Val() == 0 }, 5*time.Second, 5*time.Millisecond,
				"without the option nothing is cached (the load's lease goes)")
		})
		t.Run("corrupt bytes are replaced", func(t *testing.T) {
			c := newCache[int](t, b.client)
			key := b.key("fixme")
			require.NoError(t, b.client.Set(ctx, key, "oops", time.Minute).Err())
			v, err := c.GetOrLoad(ctx, key, 0, func(context.Context) (int, error) { return 5, nil })
			require.NoError(t, err)
			assert.Equal(t, 5, v)
			assert.Eventually(t, func() bool { return b.client.Get(ctx, key).Val() == "5" }, 5*time.Second, 5*time.Millisecond,
				"written back after the caller was answered")
			assert.EqualValues(t, 1, c.Stats().RedisErrors)
		})
	})
}

func TestGetOrLoadWithRedisDown(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	var events []rediskit.Event
	var mu sync.Mutex
	c := newCache[string](t, client, rediskit.WithHook(func(e rediskit.Event) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}))
	mr.Close()

	_, err := c.Get(ctx, "k")
	require.Error(t, err)
	assert.NotErrorIs(t, err, rediskit.ErrCacheMiss)

	v, err := c.GetOrLoad(ctx, "k", 0, func(context.Context) (string, error) { return "fresh", nil })
	require.NoError(t, err)
	assert.Equal(t, "fresh", v)
	// The write-back fails after the caller was answered.
	assert.Eventually(t, func() bool { return c.Stats().RedisErrors == 2 }, 10*time.Second, 5*time.Millisecond,
		"the failed read and the failed write")
	assert.EqualValues(t, 1, c.Stats().Loads)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, events)
	assert.Equal(t, rediskit.EventRedisError, events[0].Kind)
	assert.Error(t, events[0].Err)
}

func TestCacheCloseEndsLoads(t *testing.T) {
	client, _ := onMiniredis(t)
	c := newCache[int](t, client)
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.GetOrLoad(context.Background(), "slow", 0, func(ctx context.Context) (int, error) {
			close(started)
			<-ctx.Done()
			return 0, ctx.Err()
		})
		errc <- err
	}()
	<-started
	require.NoError(t, c.Close())
	assert.ErrorIs(t, <-errc, context.Canceled)
	_, err := c.GetOrLoad(context.Background(), "other", 0, func(context.Context) (int, error) { return 1, nil })
	assert.ErrorIs(t, err, rediskit.ErrClosed)
}

func TestCacheLoadTimeout(t *testing.T) {
	client, _ := onMiniredis(t)
	c := newCache[int](t, client, rediskit.WithLoadTimeout(20*time.Millisecond))
	_, err := c.GetOrLoad(context.Background(), "slow", 0, func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCacheBadInput(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	c := newCache[int](t, client)
	load := func(context.Context) (int, error) { return 1, nil }
	var zero rediskit.Cache[int]
	tests := []struct {
		name string
		call func() error
	}{
		{"get empty key", func() error { _, err := c.Get(ctx, ""); return err }},
		{"set empty key", func() error { return c.Set(ctx, "", 1, 0) }},
		{"set negative ttl", func() error { return c.Set(ctx, "k", 1, -1) }},
		{"delete empty key", func() error { return c.Delete(ctx, "a", "") }},
		{"get many empty key", func() error { _, err := c.GetMany(ctx, "a", ""); return err }},
		{"set many empty key", func() error { return c.SetMany(ctx, map[string]int{"": 1}, 0) }},
		{"set many negative ttl", func() error { return c.SetMany(ctx, map[string]int{"a": 1}, -time.Second) }},
		{"get or load nil load", func() error { _, err := c.GetOrLoad(ctx, "k", 0, nil); return err }},
		{"get or load empty key", func() error { _, err := c.GetOrLoad(ctx, "", 0, load); return err }},
		{"get or load negative ttl", func() error { _, err := c.GetOrLoad(ctx, "k", -1, load); return err }},
		{"nil client", func() error { return rediskit.NewCache[int](nil).Set(ctx, "k", 1, 0) }},
		{"zero Cache", func() error { _, err := zero.Get(ctx, "k"); return err }},
		{"nil codec", func() error { return rediskit.NewCache[int](client, rediskit.WithCodec(nil)).Set(ctx, "k", 1, 0) }},
		{"bad default ttl", func() error {
			return rediskit.NewCache[int](client, rediskit.WithDefaultTTL(-time.Second)).Set(ctx, "k", 1, 0)
		}},
		{"bad jitter", func() error { return rediskit.NewCache[int](client, rediskit.WithTTLJitter(1)).Set(ctx, "k", 1, 0) }},
		{"NaN jitter", func() error {
			return rediskit.NewCache[int](client, rediskit.WithTTLJitter(math.NaN())).Set(ctx, "k", 1, 0)
		}},
		{"bad negative ttl", func() error {
			_, err := newCache[int](t, client, rediskit.WithNegativeCaching(-1)).GetOrLoad(ctx, "k", 0, load)
			return err
		}},
		{"bad load timeout", func() error {
			_, err := newCache[int](t, client, rediskit.WithLoadTimeout(0)).GetOrLoad(ctx, "k", 0, load)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.ErrorIs(t, tt.call(), rediskit.ErrInvalidArgument)
		})
	}
	assert.Empty(t, mr.Keys(), "bad input writes nothing")
}

func TestCacheKeyPrefixAndStats(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	c := newCache[int](t, client, rediskit.WithKeyPrefix("app:"))
	require.NoError(t, c.Set(ctx, "n", 1, 0))
	assert.True(t, mr.Exists("app:n"))
	_, err := c.Get(ctx, "n")
	require.NoError(t, err)
	_, err = c.Get(ctx, "absent")
	require.ErrorIs(t, err, rediskit.ErrCacheMiss)
	got, err := c.GetMany(ctx, "n", "absent")
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"n": 1}, got, "keys come back unprefixed")
	require.NoError(t, c.Delete(ctx, "n"))
	assert.False(t, mr.Exists("app:n"))
	assert.Equal(t, rediskit.CacheStats{Hits: 2, Misses: 2}, c.Stats())
}

// upperCodec is a Codec that is not JSON, to show codecs plug in.
type upperCodec struct{}

func (upperCodec) Marshal(v any) ([]byte, error) { return []byte(fmt.Sprintf("S:%s", v)), nil }
func (upperCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*string)
	if !ok || len(data) < 2 || string(data[:2]) != "S:" {
		return errors.New("not an S: string")
	}
	*p = string(data[2:])
	return nil
}

func TestCacheCodec(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	c := newCache[string](t, client, rediskit.WithCodec(upperCodec{}))
	require.NoError(t, c.Set(ctx, "k", "hi", 0))
	raw, err := mr.Get("k")
	require.NoError(t, err)
	assert.Equal(t, "S:hi", raw)
	v, err := c.Get(ctx, "k")
	require.NoError(t, err)
	assert.Equal(t, "hi", v)
}

func TestGetOrLoadAnswersWithinDeadlineWhenRedisIsDown(t *testing.T) {
	client, mr := onMiniredis(t)
	c := newCache[string](t, client)
	mr.Close() // connection refused, which go-redis retries with backoff
	var calls atomic.Int32
	load := func(context.Context) (string, error) { calls.Add(1); return "fresh", nil }
	var wg sync.WaitGroup
	var late atomic.Int32
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			v, err := c.GetOrLoad(ctx, "k", 0, load)
			if assert.NoError(t, err) {
				assert.Equal(t, "fresh", v)
			}
			if time.Since(start) > 550*time.Millisecond {
				late.Add(1)
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, late.Load(), "callers answered after their deadline")
	assert.EqualValues(t, 1, calls.Load(), "one load for all")
}

// commandCounter counts the commands a client sends, a pipeline's each.
type commandCounter struct{ n atomic.Int64 }

func (h *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

// On one node GetMany is one command (a script running MGET), over 2,500
// keys (more than one MGET of the script's batches), with a prefix, and it
// still tells a key of another type from an absent one.
func TestCacheGetManyIsOneCommandOnOneNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if _, ok := b.client.(*redis.Client); !ok {
			t.Skip("a cluster pipelines one GET per key")
		}
		ctx := context.Background()
		c := newCache[int](t, b.client, rediskit.WithKeyPrefix(b.key("p:")))
		items := map[string]int{}
		keys := []string{"absent"}
		for i := 0; i < 2500; i++ {
			k := fmt.Sprintf("k%d", i)
			items[k] = i
			keys = append(keys, k)
		}
		require.NoError(t, c.SetMany(ctx, items, time.Minute))
		_, err := c.GetMany(ctx, "k1") // loads the script: EVALSHA, NOSCRIPT, EVAL
		require.NoError(t, err)
		var count commandCounter
		b.client.AddHook(&count)
		got, err := c.GetMany(ctx, keys...)
		require.NoError(t, err)
		assert.Equal(t, items, got)
		assert.EqualValues(t, 1, count.n.Load(), "commands sent")

		require.NoError(t, b.client.HSet(ctx, b.key("p:hash"), "f", "v").Err())
		_, err = c.GetMany(ctx, "k1", "absent", "hash")
		assert.ErrorIs(t, err, rediskit.ErrWrongType)
		assert.Contains(t, err.Error(), `"hash"`)
	})
}

// JSON's edge cases, as documented: a nil pointer is stored as null and
// read back as nil with a nil error; unexported fields are not stored; a
// stored object with none of T's fields decodes to the zero value.
func TestCacheJSONEdgeCases(t *testing.T) {
	client, mr := onMiniredis(t)
	ctx := context.Background()
	type user struct {
		Name   string
		secret string
	}
	ptrs := newCache[*user](t, client)
	require.NoError(t, ptrs.Set(ctx, "nil", nil, 0))
	raw, err := mr.Get("nil")
	require.NoError(t, err)
	assert.Equal(t, "null", raw)
	got, err := ptrs.Get(ctx, "nil")
	require.NoError(t, err)
	assert.Nil(t, got)

	users := newCache[user](t, client)
	require.NoError(t, users.Set(ctx, "u", user{Name: "ann", secret: "s"}, 0))
	raw, err = mr.Get("u")
	require.NoError(t, err)
	assert.Equal(t, `{"Name":"ann"}`, raw)
	require.NoError(t, mr.Set("other", `{"id":1}`))
	u, err := users.Get(ctx, "other")
	require.NoError(t, err)
	assert.Equal(t, user{}, u)
}
