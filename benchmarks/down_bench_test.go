package benchmarks

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
)

// downDeadline is the deadline of each GetOrLoad of BenchmarkCacheRedisDown.
const downDeadline = 500 * time.Millisecond

// downCallers is how many goroutines of BenchmarkCacheRedisDown call at
// once (at most the client's pool size): a blackholed call on a default
// client takes seconds.
const downCallers = 16

// BenchmarkCacheRedisDown is GetOrLoad with Redis down, on go-redis's
// default client (redis.NewClient with only an address: ContextTimeoutEnabled
// off, so the caller's deadline is ignored during socket I/O; 3 s read
// timeout; 3 retries of a command; 5 dial attempts 100 ms apart; a pool of
// 10 per CPU): each call on its own key and its own
// context.WithTimeout(…, 500ms), with an instant loader. Two ways of being
// down: "refused", an address where nothing listens, and "blackhole", a TCP
// listener that accepts connections and reads from them, but never
// answers. 16 goroutines call at once, fewer than the pool's connections
// (on 2 CPUs or more), so that each call meets the server, not an empty
// pool; each calls again as soon as it returns. An op is one call.
//
// loader-% is the share of calls that returned the loader's value without
// an error; late-% the share that returned after their deadline; p50-µs,
// p99-µs and max-µs the calls' latencies. go-redis/cache is given the
// caller's ctx in its Item, which the default client ignores during socket
// I/O; it loads when its GET fails, whatever the error.
func BenchmarkCacheRedisDown(b *testing.B) {
	servers := []struct {
		name  string
		start func() (addr string, stop func(), err error)
	}{
		{"refused", refusedAddr},
		{"blackhole", startBlackhole},
	}
	// go-redis logs every failed dial; the default logger comes back after.
	redis.SetLogger(logging.NewBlacklistLogger([]string{"failed to dial"}))
	defer logging.Enable()
	var closing sync.WaitGroup
	defer closing.Wait()
	for _, name := range []string{"rediskit", "go-redis-cache"} {
		for _, srv := range servers {
			b.Run(name+"/"+srv.name, func(b *testing.B) {
				addr, stop, err := srv.start()
				if err != nil {
					b.Fatal(err)
				}
				c := redis.NewClient(&redis.Options{Addr: addr})
				var lib cacheLib
				for _, l := range cacheLibs(c) {
					if l.name == name {
						lib = l
					}
				}
				benchDown(b, lib, min(downCallers, c.Options().PoolSize))
				// The blackhole's connections close, so that what still
				// waits on them (abandoned reads, write-backs) ends; the
				// write-backs, bounded by rediskit, end on their own while
				// the next row runs, without its CPU (they wait).
				stop()
				closing.Add(1)
				go func() {
					defer closing.Done()
					if lib.close != nil {
						lib.close()
					}
					_ = c.Close()
				}()
			})
		}
	}
}

func benchDown(b *testing.B, lib cacheLib, callers int) {
	want := sampleProfile(5)
	load := func(context.Context) (profile, error) { return want, nil }
	var next, loaded, late atomic.Int64
	var mu sync.Mutex
	lat := make(latencies, 0, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := 0; g < min(callers, b.N); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				key := uniqueKey("down")
				ctx, cancel := context.WithTimeout(context.Background(), downDeadline)
				t0 := time.Now()
				p, err := lib.getOrLoad(ctx, key, load)
				d := time.Since(t0)
				cancel()
				if err == nil && p.ID == want.ID {
					loaded.Add(1)
				}
				if d > downDeadline {
					late.Add(1)
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(100*float64(loaded.Load())/float64(b.N), "loader-%")
	b.ReportMetric(100*float64(late.Load())/float64(b.N), "late-%")
	lat.report(b, "")
	b.ReportMetric(float64(lat.max())/float64(time.Microsecond), "max-µs")
}

// refusedAddr returns an address of this machine where nothing listens: a
// port the kernel gave a listener that is then closed.
func refusedAddr() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	return addr, func() {}, ln.Close()
}

// startBlackhole starts a TCP listener that accepts every connection and
// reads what it is sent, but never answers: a server that hangs, or a
// network that drops the replies. stop closes it and its connections.
func startBlackhole() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			go func() { _, _ = io.Copy(io.Discard, conn) }()
		}
	}()
	return ln.Addr().String(), func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, conn := range conns {
			_ = conn.Close()
		}
	}, nil
}
