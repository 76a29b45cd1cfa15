package benchmarks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rediskit/rediskit"
)

// holder is another program holding a key until it releases it.
type holder interface {
	// hold takes key, which is free, and returns the function that
	// releases it, which says when the release started.
	hold(ctx context.Context, key string, ttl time.Duration) (release func(context.Context) (time.Time, error), err error)
	close()
}

// foreignReleasers hold a key and release it, as another program would:
// rediskit itself (whose release publishes a wake-up: the reference), and
// three that publish nothing.
var foreignReleasers = []struct {
	name string
	// make returns a holder on c, one per worker.
	make func(b *testing.B, c *redis.Client) (holder, error)
}{
	{"rediskit", goHolder(newRediskit)},
	{"redislock", goHolder(newRedislock(nil))},
	{"redis-py-emulated", goHolder(func(c []*redis.Client) locker { return redisPyPattern{c[0]} })},
	{"redis-py", newRedisPy},
}

// goHolder makes holders of a Go library's locker, whose releases start
// when their function is called.
func goHolder(newLocker func([]*redis.Client) locker) func(*testing.B, *redis.Client) (holder, error) {
	return func(_ *testing.B, c *redis.Client) (holder, error) {
		return lockerHolder{newLocker([]*redis.Client{c})}, nil
	}
}

type lockerHolder struct{ locker }

func (h lockerHolder) hold(ctx context.Context, key string, ttl time.Duration) (func(context.Context) (time.Time, error), error) {
	release, err := h.acquire(ctx, key, ttl, 0)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (time.Time, error) {
		start := time.Now()
		return start, release(ctx)
	}, nil
}

// foreignBackoffs are the waiter's backoffs: the default, and the seed's
// fixed 100 ms. cap is the longest sleep each allows, the documented bound
// on noticing a release that publishes nothing (plus a round trip).
var foreignBackoffs = []struct {
	name    string
	backoff rediskit.Backoff // nil: the Locker's default
	cap     time.Duration
}{
	{"exp-8ms-512ms", nil, 512 * time.Millisecond},
	{"const-100ms", rediskit.ConstantBackoff(100 * time.Millisecond), 100 * time.Millisecond},
}

// foreignWorkers is how many keys are handed over at once, each by its own
// holder to the one waiting Locker: the waits are mostly sleeps, so they
// overlap to keep the run short.
const foreignWorkers = 32

// BenchmarkForeignRelease is how long a release takes to reach a rediskit
// acquisition waiting in AcquireWithTimeout, when another program holds the
// key: rediskit (which publishes a wake-up on release), bsm/redislock,
// redis-py's Lock pattern emulated with go-redis (SET key token NX PX, then
// its compare-and-delete script), and redis-py's Lock itself, driven in a
// python3 subprocess (skipped without python3 and its redis package). Those
// three publish nothing, so the waiter notices the release only when its
// backoff wakes it: the documented bound is the backoff's cap plus a round
// trip.
//
// An op is one hand-off: the holder takes a fresh key, the waiter starts,
// and once its first attempt has found the key held, the holder waits a
// random time, uniform in [0, 3 × cap), and releases: releases land at all
// phases of the waiter's backoff, its first short sleeps and its capped
// ones. The gap is from the holder starting its release to the waiter
// holding the lock; waiter-req/op counts the waiter's requests per hand-off
// (its attempts, (un)subscribes and its release).
func BenchmarkForeignRelease(b *testing.B) {
	waiters := newClients(b, envRedis)
	holders := newClients(b, envRedis)
	for _, rel := range foreignReleasers {
		for _, bo := range foreignBackoffs {
			b.Run(rel.name+"/"+bo.name, func(b *testing.B) {
				benchForeign(b, waiters, holders[0].Client, rel.make, bo.backoff, bo.cap)
			})
		}
	}
}

func benchForeign(b *testing.B, waiters []*counted, holderClient *redis.Client, newHolder func(*testing.B, *redis.Client) (holder, error), backoff rediskit.Backoff, backoffCap time.Duration) {
	const ttl, wait = 10 * time.Second, 10 * time.Second // the waiter's sleeps are never cut short by them
	ctx := context.Background()
	var firstFailure sync.Map // key -> chan struct{}, told of the waiter's first failed attempt
	opts := []rediskit.LockerOption{rediskit.WithHook(func(e rediskit.Event) {
		if e.Kind != rediskit.EventContended {
			return
		}
		if ch, ok := firstFailure.Load(e.Key); ok {
			select {
			case ch.(chan struct{}) <- struct{}{}:
			default:
			}
		}
	})}
	if backoff != nil {
		opts = append(opts, rediskit.WithRetryBackoff(backoff))
	}
	waiter := rediskit.NewLocker(waiters[0].Client, opts...)
	defer waiter.Close()

	holders := newHolders(b, holderClient, newHolder)
	defer closeHolders(holders)

	handOff := func(h holder) (time.Duration, error) {
		key := uniqueKey("foreign")
		failed := make(chan struct{}, 1)
		firstFailure.Store(key, failed)
		defer firstFailure.Delete(key)
		release, err := h.hold(ctx, key, ttl)
		if err != nil {
			return 0, fmt.Errorf("holder: %w", err)
		}
		type result struct {
			at  time.Time
			lk  *rediskit.Lock
			err error
		}
		got := make(chan result, 1)
		go func() {
			lk, err := waiter.AcquireWithTimeout(ctx, key, ttl, wait)
			got <- result{time.Now(), lk, err}
		}()
		select {
		case <-failed:
		case r := <-got:
			return 0, fmt.Errorf("waiter returned while the key was held: lock %v, error %v", r.lk != nil, r.err)
		}
		time.Sleep(rand.N(3 * backoffCap))
		released, err := release(ctx)
		if err != nil {
			return 0, fmt.Errorf("holder's release: %w", err)
		}
		r := <-got
		if r.err != nil {
			return 0, fmt.Errorf("waiter: %w", r.err)
		}
		return r.at.Sub(released), r.lk.Release(ctx)
	}

	before := snapshot(b, waiters)
	b.ResetTimer()
	stopProbe := make(chan struct{})
	lateness := probeTimers(backoffCap, stopProbe)
	gaps := handOffs(b, len(holders), func(worker int) (time.Duration, error) { return handOff(holders[worker]) })
	b.StopTimer()
	close(stopProbe)
	after := snapshot(b, waiters)
	req := after.requests - before.requests - before.nodes + after.pubsubCmds - before.pubsubCmds
	b.ReportMetric(float64(req)/float64(b.N), "waiter-req/op")
	gaps.reportMs(b, "gap-")
	b.ReportMetric(float64((<-lateness).max())/float64(time.Millisecond), "timer-late-max-ms")
	reportPresend(b, holders)
}

// newHolders makes a holder for each of the hand-offs run at once (see
// foreignWorkers); close them with closeHolders.
func newHolders(b *testing.B, c *redis.Client, newHolder func(*testing.B, *redis.Client) (holder, error)) []holder {
	holders := make([]holder, 0, min(foreignWorkers, b.N))
	for range cap(holders) {
		h, err := newHolder(b, c)
		if err != nil {
			closeHolders(holders)
			b.Fatal(err)
		}
		holders = append(holders, h)
	}
	return holders
}

func closeHolders(holders []holder) {
	for _, h := range holders {
		h.close()
	}
}

// handOffs runs b.N hand-offs on workers goroutines, each calling op with
// its number, and returns their gaps.
func handOffs(b *testing.B, workers int, op func(worker int) (time.Duration, error)) latencies {
	var next atomic.Int64
	var mu sync.Mutex
	var gaps latencies
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				gap, err := op(w)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				gaps = append(gaps, gap)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return gaps
}

// probeTimers measures, until stop is closed, how late the Go runtime runs
// a goroutine whose timer has fired, under the benchmark's own load: it
// sleeps random times up to most, as the waiter does between attempts, and
// sends how late each wake-up was. That delay is the machine's, not a
// library's, and the report allows for it in the bound.
func probeTimers(most time.Duration, stop <-chan struct{}) <-chan latencies {
	out := make(chan latencies, 1)
	go func() {
		var late latencies
		for {
			d := rand.N(most) + time.Millisecond
			t := time.NewTimer(d)
			start := time.Now()
			select {
			case <-stop:
				t.Stop()
				out <- late
				return
			case <-t.C:
				late = append(late, max(time.Since(start)-d, 0))
			}
		}
	}()
	return out
}

// redisPyPattern is what redis-py's Lock does, in go-redis: SET key token NX
// PX ttl, and its compare-and-delete script, which publishes nothing.
type redisPyPattern struct{ c *redis.Client }

// redisPyRelease is redis-py's Lock.LUA_RELEASE_SCRIPT.
var redisPyRelease = redis.NewScript(`
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
    return 0
end
redis.call('del', KEYS[1])
return 1`)

func (p redisPyPattern) acquire(ctx context.Context, key string, ttl, wait time.Duration) (func(context.Context) error, error) {
	if wait != 0 {
		return nil, errors.New("redisPyPattern: one attempt only")
	}
	token := fmt.Sprintf("%d", time.Now().UnixNano())
	if err := p.c.Do(ctx, "set", key, token, "nx", "px", ttl.Milliseconds()).Err(); err != nil {
		if errors.Is(err, redis.Nil) {
			return nil, errNotObtained
		}
		return nil, err
	}
	return func(ctx context.Context) error {
		n, err := redisPyRelease.Run(ctx, p.c, []string{key}, token).Int64()
		if err == nil && n != 1 {
			err = errors.New("redis-py pattern: lock not held at release")
		}
		return err
	}, nil
}
func (redisPyPattern) close() {}

// redisPy drives redis-py's Lock in a python3 subprocess running
// testdata/redispy_lock.py, one command at a time. Its releases start when
// the script says, by the wall clock, so that the time a command spends in
// the pipe and waiting for python is not counted in the gap.
type redisPy struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	// presend is, for each release, the time redis-py took from the
	// release's start to starting to send its script.
	presend latencies
}

// newRedisPy starts a python3 holding locks with redis-py, or skips when
// there is no python3 with the redis package.
func newRedisPy(b *testing.B, c *redis.Client) (holder, error) {
	py := ""
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil && exec.Command(path, "-c", "import redis").Run() == nil {
			py = path
			break
		}
	}
	if py == "" {
		b.Skip("no python3 with the redis package (Debian: python3-redis; scripts/redis-up.sh installs it)")
	}
	cmd := exec.Command(py, "testdata/redispy_lock.py", "redis://"+c.Options().Addr+"/0")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &redisPy{cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

// do sends one command and returns the answer.
func (p *redisPy) do(line string) (string, error) {
	if _, err := io.WriteString(p.in, line+"\n"); err != nil {
		return "", err
	}
	answer, err := p.out.ReadString('\n')
	answer = strings.TrimSpace(answer)
	if err == nil && strings.HasPrefix(answer, "error") {
		err = errors.New("redis-py: " + answer)
	}
	return answer, err
}

func (p *redisPy) hold(_ context.Context, key string, ttl time.Duration) (func(context.Context) (time.Time, error), error) {
	switch answer, err := p.do(fmt.Sprintf("acquire %s %d", key, ttl.Milliseconds())); {
	case err != nil:
		return nil, err
	case answer != "ok":
		return nil, errNotObtained
	}
	return func(context.Context) (time.Time, error) {
		answer, err := p.do("release " + key)
		if err != nil {
			return time.Time{}, err
		}
		var start, sent int64
		if _, err := fmt.Sscanf(answer, "ok %d %d", &start, &sent); err != nil {
			return time.Time{}, fmt.Errorf("redis-py: release answered %q", answer)
		}
		p.presend = append(p.presend, time.Duration(sent-start))
		return time.Unix(0, start), nil
	}, nil
}

func (p *redisPy) presends() latencies { return p.presend }

// reportPresend reports, for holders that know it (redis-py), how long the
// releasing client took before it sent the release: part of each gap, and
// not rediskit's.
func reportPresend(b *testing.B, holders []holder) {
	var all latencies
	for _, h := range holders {
		if p, ok := h.(interface{ presends() latencies }); ok {
			all = append(all, p.presends()...)
		}
	}
	all.report(b, "presend-")
}

func (p *redisPy) close() {
	_ = p.in.Close() // the script ends at the end of its input
	_ = p.cmd.Wait()
}
