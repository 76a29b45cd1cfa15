package benchmarks

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rediskit/rediskit"
)

// expiryLoadTime is how long the loader of BenchmarkCacheExpiry takes.
const expiryLoadTime = 10 * time.Millisecond

// expiryPeriod is how often BenchmarkCacheExpiry starts an op: longer than
// a load and its write-back, so that none runs into the next op.
const expiryPeriod = 15 * time.Millisecond

// BenchmarkCacheExpiry is one caller's GetOrLoad (loader 10 ms) on a key at
// its expiry, on a fresh key each op, timed alone:
//
//   - rediskit/stale-while-revalidate: a Cache with
//     WithStaleWhileRevalidate(10s) reads a value 1 s past its TTL. Such a
//     Cache stores values for TTL + window and treats the last window of
//     their Redis TTL as stale, so the value is written as the Cache would
//     have, plain JSON, with SET … PX 9000. The caller should get the stale
//     value after one round trip, while one background load refreshes it.
//   - rediskit/plain-miss: the same Cache without the option reads a key
//     whose TTL has just run out (SET … PX 1, then 3 ms): Redis has dropped
//     it, and the caller waits for the loader.
//   - rediskit/fresh-hit: the Cache with the option reads a value 1 s
//     before its TTL: a hit through GetOrLoad, which reads the value and its
//     TTL in one script, for comparison.
//   - rediskit/stale-while-revalidate/cte: the stale read again, on a
//     client that honours contexts (ContextTimeoutEnabled). GetOrLoad
//     bounds each Redis read (by a second here), which a default client
//     would ignore during socket I/O, so there it makes the read on a
//     goroutine the caller can abandon; on this client, on the caller's.
//   - raw-goredis-json/hit: the floor, one round trip made the same way: a
//     raw GET of the value and json.Unmarshal, on the default client.
//
// Every op has the same rhythm: the value is written (untimed) just before
// the call, and the next op starts expiryPeriod after this one, once the
// new value is in Redis (its TTL the GetOrLoad's minute again), polled
// every millisecond; so no refresh or write-back runs into the next op, and
// every call comes after the same pause. A refresh or write-back that
// never lands fails the benchmark, and so does a caller that gets the
// loaded value where the stale one was due, or the reverse. loads/op is the
// loader's calls per op: 1 for the refresh or the miss's load, 0 for the
// hits. ns/op is the mean of the timed calls. These latencies come after a
// pause, so they are higher than those of the back-to-back CacheGetHit
// rows: compare them with this benchmark's floor row.
func BenchmarkCacheExpiry(b *testing.B) {
	c := newClients(b, envRedis)[0].Client
	cte := newClients(b, envRedis, contextTimeouts)[0].Client
	const window, margin = 10 * time.Second, time.Second
	stored := sampleProfile(3)
	staleJSON, err := json.Marshal(stored)
	if err != nil {
		b.Fatal(err)
	}
	loaded := sampleProfile(4)
	withWindow := []rediskit.CacheOption{rediskit.WithStaleWhileRevalidate(window)}
	// writeFor writes the value under key with pttl left.
	writeFor := func(pttl time.Duration) func(context.Context, string) error {
		return func(ctx context.Context, key string) error { return c.Set(ctx, key, staleJSON, pttl).Err() }
	}
	rows := []struct {
		name   string
		client *redis.Client
		opts   []rediskit.CacheOption // nil: a raw GET, not a Cache
		// prepare writes the value under key, as the row's case has it.
		prepare func(ctx context.Context, key string) error
		want    int  // the profile the caller must get
		writes  bool // a new value is written after the call
	}{
		{"raw-goredis-json/hit", c, nil, writeFor(window + margin), stored.ID, false},
		{"rediskit/fresh-hit", c, withWindow, writeFor(window + margin), stored.ID, false},
		{"rediskit/stale-while-revalidate", c, withWindow, writeFor(window - margin), stored.ID, true},
		{"rediskit/stale-while-revalidate/cte", cte, withWindow, writeFor(window - margin), stored.ID, true},
		{"rediskit/plain-miss", c, []rediskit.CacheOption{}, func(ctx context.Context, key string) error {
			if err := c.Set(ctx, key, staleJSON, time.Millisecond).Err(); err != nil {
				return err
			}
			time.Sleep(3 * time.Millisecond)
			return nil
		}, loaded.ID, true},
	}
	for _, row := range rows {
		b.Run(row.name, func(b *testing.B) {
			ctx := context.Background()
			var loads atomic.Int64
			load := func(context.Context) (profile, error) {
				loads.Add(1)
				time.Sleep(expiryLoadTime)
				return loaded, nil
			}
			get := func(key string) (p profile, err error) {
				bs, err := row.client.Get(ctx, key).Bytes()
				if err == nil {
					err = json.Unmarshal(bs, &p)
				}
				return p, err
			}
			if row.opts != nil {
				kit := rediskit.NewCache[profile](row.client, row.opts...)
				defer kit.Close()
				get = func(key string) (profile, error) { return kit.GetOrLoad(ctx, key, time.Minute, load) }
			}
			lat := make(latencies, 0, b.N)
			b.ResetTimer()
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				began := time.Now()
				key := uniqueKey("expiry")
				if err := row.prepare(ctx, key); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				t0 := time.Now()
				p, err := get(key)
				d := time.Since(t0)
				b.StopTimer()
				lat = append(lat, d)
				switch {
				case err != nil:
					b.Fatal(err)
				case p.ID != row.want:
					b.Fatalf("got profile %d, want %d", p.ID, row.want)
				}
				if err := awaitOp(ctx, c, key, row.writes, window+margin, began.Add(expiryPeriod)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(loads.Load())/float64(b.N), "loads/op")
			lat.report(b, "")
		})
	}
}

// awaitOp polls key's remaining TTL every millisecond until until and, if
// writes, until it is over least: a value written since the op began.
func awaitOp(ctx context.Context, c *redis.Client, key string, writes bool, least time.Duration, until time.Time) error {
	deadline := until.Add(2 * time.Second)
	for {
		pttl, err := c.PTTL(ctx, key).Result()
		now := time.Now()
		switch {
		case err != nil:
			return err
		case (!writes || pttl > least) && now.After(until):
			return nil
		case now.After(deadline):
			return fmt.Errorf("%s: no new value written within 2 s of the call (remaining TTL %v)", key, pttl)
		}
		time.Sleep(time.Millisecond)
	}
}
