package benchmarks

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/rediskit/rediskit"
)

// localLib is a cache with an in-process tier, measured through one read.
type localLib struct {
	name string
	// open returns the library's read of a key under prefix, which the
	// benchmark writes as JSON with a plain client, and what closes it.
	open func(b *testing.B, c *redis.Client, prefix string) (get func(ctx context.Context, key string) (profile, error), close func())
	// hears says whether the library learns of other programs' writes.
	hears bool
	// set, if not nil, is how the key is written instead: a library that
	// does not store JSON.
	set func(ctx context.Context, c *redis.Client, key string, v profile) error
}

var localLibs = []localLib{
	{"rediskit", func(b *testing.B, c *redis.Client, prefix string) (func(context.Context, string) (profile, error), func()) {
		kit := rediskit.NewCache[profile](c, rediskit.WithKeyPrefix(prefix), rediskit.WithLocalCache(10000, time.Minute))
		return func(ctx context.Context, key string) (profile, error) { return kit.Get(ctx, key[len(prefix):]) },
			func() { _ = kit.Close() }
	}, true, nil},
	{"go-redis-cache-tinylfu", func(b *testing.B, c *redis.Client, prefix string) (func(context.Context, string) (profile, error), func()) {
		gc := gocache.New(&gocache.Options{Redis: c, LocalCache: gocache.NewTinyLFU(10000, time.Minute)})
		return func(ctx context.Context, key string) (profile, error) {
			var p profile
			return p, gc.Get(ctx, key, &p)
		}, func() {}
	}, false, func(ctx context.Context, c *redis.Client, key string, v profile) error {
		// go-redis/cache stores msgpack, compressed: written by its own Set.
		return gocache.New(&gocache.Options{Redis: c}).Set(&gocache.Item{Ctx: ctx, Key: key, Value: v, TTL: time.Hour})
	}},
	{"go-redis-csc", func(b *testing.B, c *redis.Client, prefix string) (func(context.Context, string) (profile, error), func()) {
		// go-redis's own client-side cache (experimental, v9.23), RESP3.
		csc := redis.NewClient(&redis.Options{Addr: c.Options().Addr, Protocol: 3,
			ClientSideCacheConfig: &redis.ClientSideCacheConfig{MaxEntries: 10000}})
		return func(ctx context.Context, key string) (profile, error) {
			var p profile
			bs, err := csc.Get(ctx, key).Bytes()
			if err != nil {
				return p, err
			}
			return p, json.Unmarshal(bs, &p)
		}, func() { _ = csc.Close() }
	}, true, nil},
	{"rueidis-docache", func(b *testing.B, c *redis.Client, prefix string) (func(context.Context, string) (profile, error), func()) {
		rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{c.Options().Addr}, DisableCache: false})
		if err != nil {
			b.Fatal(err)
		}
		return func(ctx context.Context, key string) (profile, error) {
			var p profile
			bs, err := rc.DoCache(ctx, rc.B().Get().Key(key).Cache(), time.Minute).AsBytes()
			if err != nil {
				return p, err
			}
			return p, json.Unmarshal(bs, &p)
		}, rc.Close
	}, true, nil},
	{"redis-hit", func(b *testing.B, c *redis.Client, prefix string) (func(context.Context, string) (profile, error), func()) {
		kit := rediskit.NewCache[profile](c, rediskit.WithKeyPrefix(prefix))
		return func(ctx context.Context, key string) (profile, error) { return kit.Get(ctx, key[len(prefix):]) },
			func() { _ = kit.Close() }
	}, false, nil},
}

// warm reads key until two reads in a row cost Redis no command: the
// library's tier holds it (or, for a library without one, after a second).
func warm(b *testing.B, cs []*counted, get func(context.Context, string) (profile, error), key string) {
	b.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for quiet := 0; quiet < 2; {
		before := snapshot(b, cs)
		if _, err := get(ctx, key); err != nil {
			b.Fatal(err)
		}
		if after := snapshot(b, cs); after.serverCmds-before.serverCmds-before.nodes == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if time.Now().After(deadline) {
			return // no tier, or it never filled: measured as it is
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkLocalHit reads one present key (a profile of about 250 bytes)
// through each library's in-process tier, once it holds the key:
// rediskit's WithLocalCache, go-redis/cache with TinyLFU, go-redis's
// client-side cache, rueidis's DoCache, and, for the floor they beat, a
// rediskit Get that reads Redis. ns/op and allocs are the figures.
func BenchmarkLocalHit(b *testing.B) {
	cs := newClients(b, envRedis)
	ctx := context.Background()
	for _, lib := range localLibs {
		b.Run(lib.name, func(b *testing.B) {
			prefix := uniqueKey("local") + ":"
			key := prefix + "hit"
			v, _ := json.Marshal(sampleProfile(1))
			err := cs[0].Set(ctx, key, v, time.Hour).Err()
			if lib.set != nil {
				err = lib.set(ctx, cs[0].Client, key, sampleProfile(1))
			}
			if err != nil {
				b.Fatal(err)
			}
			get, closeLib := lib.open(b, cs[0].Client, prefix)
			defer closeLib()
			warm(b, cs, get, key)
			before := snapshot(b, cs)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := get(ctx, key); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportUsage(b, before, snapshot(b, cs), b.N)
		})
	}
}

// BenchmarkLocalStaleness measures how long each library's tier keeps
// serving a value after another program overwrote it: an op is one SET by
// a plain client (not the library), after which the reader reads until it
// sees the new value, reading every 10 µs or so (a timer's resolution
// here is about 50-60 µs); the time runs from just before the SET is sent.
// Libraries that never hear of other programs' writes are left out: they
// serve the old value until their local TTL.
func BenchmarkLocalStaleness(b *testing.B) {
	cs := newClients(b, envRedis)
	ctx := context.Background()
	for _, lib := range localLibs {
		if !lib.hears {
			continue
		}
		b.Run(lib.name, func(b *testing.B) {
			prefix := uniqueKey("stale") + ":"
			key := prefix + "k"
			write := func(i int) error {
				v, _ := json.Marshal(sampleProfile(i))
				return cs[0].Set(ctx, key, v, time.Hour).Err()
			}
			if err := write(0); err != nil {
				b.Fatal(err)
			}
			get, closeLib := lib.open(b, cs[0].Client, prefix)
			defer closeLib()
			warm(b, cs, get, key)
			lat := make(latencies, 0, b.N)
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				t0 := time.Now()
				if err := write(i); err != nil {
					b.Fatal(err)
				}
				for {
					p, err := get(ctx, key)
					if err != nil {
						b.Fatal(err)
					}
					if p.ID == i {
						break
					}
					if time.Since(t0) > 10*time.Second {
						b.Fatalf("value %d still served 10 s after it was overwritten", i-1)
					}
					// Not a spin: the reader leaves the 2 cores to Redis
					// and the library's listener, as a service would.
					time.Sleep(10 * time.Microsecond)
				}
				lat = append(lat, time.Since(t0))
				// Let the tier fill again before the next write, so that
				// each op starts from a cached value.
				b.StopTimer()
				warm(b, cs, get, key)
				b.StartTimer()
			}
			b.StopTimer()
			lat.report(b, "")
		})
	}
}
