package benchmarks

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The benchmarks start nothing: they read the addresses of running servers,
// which ../scripts/redis-up.sh prints.
const (
	envRedis   = "REDISKIT_REDIS_ADDR"
	envRedlock = "REDISKIT_REDLOCK_ADDRS"
)

// counted is a client whose requests are counted, and the server it talks
// to, whose commands are counted through INFO.
type counted struct {
	*redis.Client
	requests atomic.Int64
}

func (c *counted) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counted) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.requests.Add(1)
		return next(ctx, cmd)
	}
}
func (c *counted) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.requests.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// newClients returns counted clients for the named environment variable's
// addresses, or skips. The clients are go-redis's defaults but for a pool of
// 64 connections; options, if given, change them further.
func newClients(b *testing.B, env string, options ...func(*redis.Options)) []*counted {
	b.Helper()
	addrs := os.Getenv(env)
	if addrs == "" {
		b.Skipf("set %s (scripts/redis-up.sh prints it)", env)
	}
	var out []*counted
	for _, a := range strings.Split(addrs, ",") {
		opt := &redis.Options{Addr: a, PoolSize: 64}
		for _, o := range options {
			o(opt)
		}
		c := &counted{Client: redis.NewClient(opt)}
		c.AddHook(c)
		if err := c.Ping(context.Background()).Err(); err != nil {
			b.Fatalf("%s: %v", a, err)
		}
		b.Cleanup(func() { _ = c.Close() })
		out = append(out, c)
	}
	return out
}

func plain(cs []*counted) []*redis.Client {
	out := make([]*redis.Client, len(cs))
	for i, c := range cs {
		out[i] = c.Client
	}
	return out
}

// usage is what the server and the client have counted so far.
type usage struct {
	serverCmds int64 // total_commands_processed: scripts' inner commands included
	pubsubCmds int64 // (S)SUBSCRIBE and (S)UNSUBSCRIBE calls, which skip client hooks
	requests   int64
	nodes      int64 // how many INFO calls a snapshot makes
}

func snapshot(b *testing.B, cs []*counted) usage {
	b.Helper()
	u := usage{nodes: int64(len(cs)), requests: rueidisRequests.Load()}
	for _, c := range cs {
		u.requests += c.requests.Load() // before this INFO
		info, err := c.Info(context.Background(), "stats", "commandstats").Result()
		if err != nil {
			b.Fatal(err)
		}
		u.serverCmds += infoField(info, "total_commands_processed:") // excludes this INFO
		for _, cmd := range []string{"subscribe", "ssubscribe", "unsubscribe", "sunsubscribe"} {
			u.pubsubCmds += infoField(info, "cmdstat_"+cmd+":calls=")
		}
	}
	return u
}

func infoField(info, prefix string) int64 {
	i := strings.Index(info, prefix)
	if i < 0 {
		return 0
	}
	rest := info[i+len(prefix):]
	end := strings.IndexAny(rest, ",\r\n")
	n, _ := strconv.ParseInt(rest[:end], 10, 64)
	return n
}

// reportUsage reports requests and server commands per op between two
// snapshots, less the first snapshot's own INFO calls.
func reportUsage(b *testing.B, before, after usage, ops int) {
	if ops == 0 {
		return
	}
	req := after.requests - before.requests - before.nodes + after.pubsubCmds - before.pubsubCmds
	b.ReportMetric(float64(req)/float64(ops), "req/op")
	b.ReportMetric(float64(after.serverCmds-before.serverCmds-before.nodes)/float64(ops), "srvcmd/op")
}

// latencies collects durations and reports percentiles in microseconds.
type latencies []time.Duration

func (l latencies) report(b *testing.B, prefix string) {
	if len(l) == 0 {
		return
	}
	s := slices.Clone(l)
	slices.Sort(s)
	pct := func(p float64) float64 {
		return float64(s[int(p*float64(len(s)-1))]) / float64(time.Microsecond)
	}
	b.ReportMetric(pct(0.50), prefix+"p50-µs")
	b.ReportMetric(pct(0.99), prefix+"p99-µs")
}

// reportMs reports the median, the 99th percentile and the maximum in
// milliseconds, for durations too long to read in microseconds.
func (l latencies) reportMs(b *testing.B, prefix string) {
	if len(l) == 0 {
		return
	}
	s := slices.Clone(l)
	slices.Sort(s)
	ms := func(p float64) float64 {
		return float64(s[int(p*float64(len(s)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.50), prefix+"p50-ms")
	b.ReportMetric(ms(0.99), prefix+"p99-ms")
	b.ReportMetric(ms(1), prefix+"max-ms")
}

// contextTimeouts makes a client stop its socket I/O at a context's
// deadline (go-redis ignores it otherwise): a client that honours contexts.
func contextTimeouts(o *redis.Options) { o.ContextTimeoutEnabled = true }

// max returns the longest duration.
func (l latencies) max() time.Duration {
	var most time.Duration
	for _, d := range l {
		most = max(most, d)
	}
	return most
}

// measure runs op b.N times on one goroutine and reports its latency
// percentiles, its allocations, and the requests and server commands it
// cost cs.
func measure(b *testing.B, cs []*counted, op func() error) {
	b.Helper()
	lat := make(latencies, 0, b.N)
	before := snapshot(b, cs)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportUsage(b, before, snapshot(b, cs), b.N)
	lat.report(b, "")
}

var keySeq atomic.Int64

// uniqueKey returns a key no other benchmark or run uses.
func uniqueKey(name string) string {
	return fmt.Sprintf("bench:%d:%d:%s", time.Now().UnixNano(), keySeq.Add(1), name)
}
