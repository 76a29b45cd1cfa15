package benchmarks

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkFloor is what one and two plain round trips cost: the floor for
// an acquisition, and for an acquisition with its release. The last row is
// two round trips as a caller with a deadline makes them, on a client that
// honours contexts: context.WithTimeout per op, ContextTimeoutEnabled.
func BenchmarkFloor(b *testing.B) {
	cs := newClients(b, envRedis)
	ctx := context.Background()
	for _, n := range []int{1, 2} {
		b.Run(map[int]string{1: "ping", 2: "ping-ping"}[n], func(b *testing.B) {
			measure(b, cs, func() error {
				for j := 0; j < n; j++ {
					if err := cs[0].Ping(ctx).Err(); err != nil {
						return err
					}
				}
				return nil
			})
		})
	}
	cte := newClients(b, envRedis, contextTimeouts)
	b.Run("ping-ping/"+modeCTEDeadline, func(b *testing.B) {
		measure(b, cte, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			defer cancel()
			for j := 0; j < 2; j++ {
				if err := cte[0].Ping(ctx).Err(); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// The ways a caller's ctx and client are set up, as row names say them.
// With context.Background() (no suffix) no call can be abandoned, and
// rediskit makes them on the caller's goroutine. With a deadline on a
// client that honours contexts (ContextTimeoutEnabled), the client itself
// stops at the deadline, so rediskit's releases run inline, while its
// acquisitions still run on a goroutine of their own so that a late grant
// can be released. With a deadline on a default client, which ignores it
// during socket I/O, every rediskit call runs on a goroutine the caller
// can abandon at the deadline.
const (
	modeCTEDeadline     = "cte-deadline"
	modeDefaultDeadline = "default-deadline"
)

// opTimeout is the deadline each op of the deadline modes runs under: long
// enough never to end one.
const opTimeout = 5 * time.Second

var (
	uncontendedLibs         = []lockLib{libRediskit, libRedislockBackoff, libRedsync, libSeed}
	uncontendedDeadlineLibs = []lockLib{libRediskit, libRedislockBackoff}
)

// BenchmarkLockUncontended is one acquisition and its release, on a key
// nobody else wants, by 1 and by 16 goroutines (each on its own key): on a
// default client with context.Background(), and, for rediskit and
// redislock, with a deadline per op on a client that honours contexts and
// on a default client (see modeCTEDeadline).
func BenchmarkLockUncontended(b *testing.B) {
	cs := newClients(b, envRedis)
	cte := newClients(b, envRedis, contextTimeouts)
	goroutines := []int{1, 16}
	for _, lib := range uncontendedLibs {
		for _, g := range goroutines {
			b.Run(fmt.Sprintf("%s/g=%d", lib.name, g), func(b *testing.B) {
				benchUncontended(b, cs, lib, g, false)
			})
		}
	}
	for _, mode := range []struct {
		name string
		cs   []*counted
	}{{modeCTEDeadline, cte}, {modeDefaultDeadline, cs}} {
		for _, lib := range uncontendedDeadlineLibs {
			for _, g := range goroutines {
				b.Run(fmt.Sprintf("%s/%s/g=%d", lib.name, mode.name, g), func(b *testing.B) {
					benchUncontended(b, mode.cs, lib, g, true)
				})
			}
		}
	}
}

// benchUncontended measures acquire+release on cs by goroutines goroutines;
// with deadline, each acquire+release runs on a ctx of its own with a
// deadline opTimeout away, as a request handler's would.
func benchUncontended(b *testing.B, cs []*counted, lib lockLib, goroutines int, deadline bool) {
	l := lib.make(plain(cs))
	defer l.close()
	op := func(key string) error {
		ctx := context.Background()
		if deadline {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, opTimeout)
			defer cancel()
		}
		release, err := l.acquire(ctx, key, 10*time.Second, 0)
		if err != nil {
			return err
		}
		return release(ctx)
	}
	var next atomic.Int64
	var mu sync.Mutex
	var all latencies
	run := func(key string, n int64) {
		lat := make(latencies, 0, b.N/goroutines+1)
		for next.Add(1) <= n {
			t0 := time.Now()
			if err := op(key); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(t0))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	}
	run(uniqueKey("warm"), 100) // warm the pool and the script cache
	next.Store(0)
	all = all[:0]
	before := snapshot(b, cs)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := 0; i < goroutines; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); run(uniqueKey(lib.name), int64(b.N)) }()
	}
	wg.Wait()
	b.StopTimer()
	reportUsage(b, before, snapshot(b, cs), b.N)
	all.report(b, "")
}

var handoffLibs = []lockLib{libRediskit, libRediskitWithLock, libRueidislock, libRedislockBackoff, libRedislockTight, libRedsync, libSeed}

// BenchmarkLockHandoff is the seed's pattern: while a key is held, 8
// goroutines (requests for the same user, say) each ask for it once, hold it
// 1 ms and go. Every acquisition is then a hand-off to a waiter: gap is from
// a holder starting its release to the next holder having the lock, wait is
// how long each goroutine waited. An op is one acquisition, the first
// holder's included (req/op, srvcmd/op); b.N is rounded up to whole rounds
// of 8 waiters.
func BenchmarkLockHandoff(b *testing.B) {
	cs := newClients(b, envRedis)
	for _, lib := range handoffLibs {
		b.Run(lib.name, func(b *testing.B) { benchQueue(b, cs, lib) })
	}
}

func benchQueue(b *testing.B, cs []*counted, lib lockLib) {
	const waiters = 8
	ctx := context.Background()
	l := lib.make(plain(cs))
	defer l.close()
	if release, err := l.acquire(ctx, uniqueKey("warm"), time.Second, 0); err == nil {
		_ = release(ctx)
	}
	type held struct{ acquired, released time.Time }
	var gaps, waits latencies
	rounds := (b.N + waiters - 1) / waiters
	before := snapshot(b, cs)
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		key := uniqueKey("queue")
		holder, err := l.acquire(ctx, key, 5*time.Second, 0)
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		var turns []held
		var wg sync.WaitGroup
		for g := 0; g < waiters; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				var t1, t2 time.Time
				err := turn(ctx, l, key, 5*time.Second, time.Minute, func() {
					t1 = time.Now()
					time.Sleep(time.Millisecond) // the critical section
					t2 = time.Now()
				})
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				turns = append(turns, held{t1, t2})
				waits = append(waits, t1.Sub(t0))
				mu.Unlock()
			}()
		}
		time.Sleep(5 * time.Millisecond) // all of them try, fail and wait
		released := time.Now()
		if err := holder(ctx); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
		// Nobody asks twice, so the holders follow one another in order.
		slices.SortFunc(turns, func(x, y held) int { return x.acquired.Compare(y.acquired) })
		for _, t := range turns {
			gaps = append(gaps, t.acquired.Sub(released))
			released = t.released
		}
	}
	b.StopTimer()
	ops := rounds * (waiters + 1)
	reportUsage(b, before, snapshot(b, cs), ops)
	gaps.report(b, "gap-")
	waits.report(b, "wait-")
	b.ReportMetric(float64(waits.max())/float64(time.Millisecond), "maxwait-ms")
}

// BenchmarkLockBackToBack is 8 goroutines each taking the lock on one key
// in a loop, 1 ms critical section, asking again as soon as they have
// released: a releaser may take the lock right back (barge-%; gap counts
// only hand-offs to another goroutine), and the question is whether the
// others still get their turn (maxwait-ms). b.N is the number of
// acquisitions.
func BenchmarkLockBackToBack(b *testing.B) {
	cs := newClients(b, envRedis)
	for _, lib := range handoffLibs {
		b.Run(lib.name, func(b *testing.B) { benchLoop(b, cs, lib) })
	}
}

func benchLoop(b *testing.B, cs []*counted, lib lockLib) {
	const workers = 8
	ctx := context.Background()
	l := lib.make(plain(cs))
	defer l.close()
	key := uniqueKey("handoff")
	if release, err := l.acquire(ctx, key, time.Second, 0); err == nil { // warm up
		_ = release(ctx)
	}

	var remaining atomic.Int64
	remaining.Store(int64(b.N))
	var lastRelease atomic.Int64 // unix ns when the last holder started releasing
	var lastHolder atomic.Int64  // which worker that was
	barges := 0
	var mu sync.Mutex
	var gaps, waits latencies
	before := snapshot(b, cs)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(id int64) {
			defer wg.Done()
			for remaining.Add(-1) >= 0 {
				t0 := time.Now()
				release, err := l.acquire(ctx, key, 5*time.Second, time.Minute)
				if err != nil {
					b.Error(err)
					return
				}
				t1 := time.Now()
				mu.Lock()
				waits = append(waits, t1.Sub(t0))
				switch lr := lastRelease.Load(); {
				case lr == 0:
				case lastHolder.Load() == id:
					barges++
				default:
					gaps = append(gaps, t1.Sub(time.Unix(0, lr)))
				}
				mu.Unlock()
				time.Sleep(time.Millisecond) // the critical section
				lastHolder.Store(id)
				lastRelease.Store(time.Now().UnixNano())
				if err := release(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		}(int64(w))
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	reportUsage(b, before, snapshot(b, cs), b.N)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "acq/s")
	gaps.report(b, "gap-")
	b.ReportMetric(100*float64(barges)/float64(b.N), "barge-%")
	b.ReportMetric(float64(waits.max())/float64(time.Millisecond), "maxwait-ms")
}

// BenchmarkRedlock is an uncontended acquisition and release over three
// independent masters.
func BenchmarkRedlock(b *testing.B) {
	cs := newClients(b, envRedlock)
	if len(cs) < 3 {
		b.Skipf("%s: want 3 masters", envRedlock)
	}
	cs = cs[:3]
	for _, lib := range []lockLib{libRediskit, libRedsync} {
		b.Run(lib.name, func(b *testing.B) { benchUncontended(b, cs, lib, 1, false) })
	}
}
