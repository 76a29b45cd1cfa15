package benchmarks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"

	"github.com/rediskit/rediskit"
)

// profile is a typical cached value, about 250 bytes of JSON.
type profile struct {
	ID       int               `json:"id"`
	Name     string            `json:"name"`
	Email    string            `json:"email"`
	Roles    []string          `json:"roles"`
	Settings map[string]string `json:"settings"`
	Created  time.Time         `json:"created"`
}

func sampleProfile(i int) profile {
	return profile{ID: i, Name: fmt.Sprintf("User %d", i), Email: fmt.Sprintf("user%d@example.com", i),
		Roles: []string{"reader", "writer"}, Settings: map[string]string{"theme": "dark", "lang": "en", "tz": "UTC"},
		Created: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
}

// cacheLib is the adapter every cache is measured through.
type cacheLib struct {
	name    string
	get     func(ctx context.Context, key string) (profile, error)
	set     func(ctx context.Context, key string, v profile) error
	getMany func(ctx context.Context, keys []string) (int, error) // returns how many were found
	// getOrLoad reads key, calling load on a miss, and stores the result.
	getOrLoad func(ctx context.Context, key string, load func(context.Context) (profile, error)) (profile, error)
	// close, if not nil, waits for the library's background work (a
	// rediskit Cache's loads and write-backs) and ends it.
	close func()
}

func cacheLibs(c *redis.Client) []cacheLib {
	kit := rediskit.NewCache[profile](c)
	gc := gocache.New(&gocache.Options{Redis: c}) // no local cache: every read goes to Redis
	raw := cacheLib{
		name: "raw-goredis-json",
		get: func(ctx context.Context, key string) (profile, error) {
			var p profile
			b, err := c.Get(ctx, key).Bytes()
			if err != nil {
				return p, err
			}
			return p, json.Unmarshal(b, &p)
		},
		set: func(ctx context.Context, key string, v profile) error {
			b, err := json.Marshal(v)
			if err != nil {
				return err
			}
			return c.Set(ctx, key, b, time.Hour).Err()
		},
		getMany: func(ctx context.Context, keys []string) (int, error) {
			vals, err := c.MGet(ctx, keys...).Result()
			if err != nil {
				return 0, err
			}
			n := 0
			for _, v := range vals {
				if s, ok := v.(string); ok {
					var p profile
					if err := json.Unmarshal([]byte(s), &p); err != nil {
						return n, err
					}
					n++
				}
			}
			return n, nil
		},
	}
	// Unprotected: every caller that misses loads.
	raw.getOrLoad = func(ctx context.Context, key string, load func(context.Context) (profile, error)) (profile, error) {
		p, err := raw.get(ctx, key)
		if err == nil || !errors.Is(err, redis.Nil) {
			return p, err
		}
		if p, err = load(ctx); err != nil {
			return p, err
		}
		return p, raw.set(ctx, key, p)
	}
	return []cacheLib{
		{
			name: "rediskit",
			get:  kit.Get,
			set:  func(ctx context.Context, key string, v profile) error { return kit.Set(ctx, key, v, time.Hour) },
			getMany: func(ctx context.Context, keys []string) (int, error) {
				m, err := kit.GetMany(ctx, keys...)
				return len(m), err
			},
			getOrLoad: func(ctx context.Context, key string, load func(context.Context) (profile, error)) (profile, error) {
				return kit.GetOrLoad(ctx, key, time.Hour, load)
			},
			close: func() { _ = kit.Close() },
		},
		{
			name: "go-redis-cache",
			get: func(ctx context.Context, key string) (profile, error) {
				var p profile
				return p, gc.Get(ctx, key, &p)
			},
			set: func(ctx context.Context, key string, v profile) error {
				return gc.Set(&gocache.Item{Ctx: ctx, Key: key, Value: v, TTL: time.Hour})
			},
			// go-redis/cache has no batch read: one Get per key.
			getMany: func(ctx context.Context, keys []string) (int, error) {
				n := 0
				for _, k := range keys {
					var p profile
					if err := gc.Get(ctx, k, &p); err == nil {
						n++
					} else if !errors.Is(err, gocache.ErrCacheMiss) {
						return n, err
					}
				}
				return n, nil
			},
			getOrLoad: func(ctx context.Context, key string, load func(context.Context) (profile, error)) (profile, error) {
				var p profile
				err := gc.Once(&gocache.Item{Ctx: ctx, Key: key, Value: &p, TTL: time.Hour,
					Do: func(item *gocache.Item) (any, error) { return load(item.Context()) }})
				return p, err
			},
		},
		raw,
	}
}

func BenchmarkCacheGetHit(b *testing.B) {
	cs := newClients(b, envRedis)
	ctx := context.Background()
	for _, lib := range cacheLibs(cs[0].Client) {
		b.Run(lib.name, func(b *testing.B) {
			key := uniqueKey("hit")
			if err := lib.set(ctx, key, sampleProfile(1)); err != nil {
				b.Fatal(err)
			}
			measure(b, cs, func() error {
				_, err := lib.get(ctx, key)
				return err
			})
		})
	}
}

func BenchmarkCacheSet(b *testing.B) {
	cs := newClients(b, envRedis)
	ctx := context.Background()
	for _, lib := range cacheLibs(cs[0].Client) {
		b.Run(lib.name, func(b *testing.B) {
			key, v := uniqueKey("set"), sampleProfile(2)
			measure(b, cs, func() error { return lib.set(ctx, key, v) })
		})
	}
}

// BenchmarkCacheGetMany reads 100 present keys. raw-goredis-json is one MGET.
func BenchmarkCacheGetMany(b *testing.B) {
	cs := newClients(b, envRedis)
	ctx := context.Background()
	for _, lib := range cacheLibs(cs[0].Client) {
		b.Run(lib.name+"/100", func(b *testing.B) {
			keys := make([]string, 100)
			for i := range keys {
				keys[i] = uniqueKey("many")
				if err := lib.set(ctx, keys[i], sampleProfile(i)); err != nil {
					b.Fatal(err)
				}
			}
			measure(b, cs, func() error {
				if n, err := lib.getMany(ctx, keys); err != nil || n != len(keys) {
					return fmt.Errorf("found %d of %d: %v", n, len(keys), err)
				}
				return nil
			})
		})
	}
}

// BenchmarkCacheStampede has 200 goroutines read one missing key at once,
// with a loader that takes 10 ms; an op is one such stampede. loads/op is
// how many times the loader ran.
func BenchmarkCacheStampede(b *testing.B) {
	cs := newClients(b, envRedis)
	for _, lib := range cacheLibs(cs[0].Client) {
		b.Run(lib.name, func(b *testing.B) {
			const callers = 200
			ctx := context.Background()
			var loads atomic.Int64
			load := func(ctx context.Context) (profile, error) {
				loads.Add(1)
				time.Sleep(10 * time.Millisecond)
				return sampleProfile(3), nil
			}
			lat := make(latencies, 0, b.N*callers)
			var mu sync.Mutex
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				key := uniqueKey("stampede")
				start := make(chan struct{})
				var wg sync.WaitGroup
				for g := 0; g < callers; g++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						t0 := time.Now()
						if _, err := lib.getOrLoad(ctx, key, load); err != nil {
							b.Error(err)
						}
						mu.Lock()
						lat = append(lat, time.Since(t0))
						mu.Unlock()
					}()
				}
				close(start)
				wg.Wait()
			}
			b.StopTimer()
			b.ReportMetric(float64(loads.Load())/float64(b.N), "loads/op")
			lat.report(b, "")
		})
	}
}
