package rediskit_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// The defects an adversarial review of the fleet's queue found, each
// failing before its fix.

// standaloneKey skips without a real standalone Redis, and returns its
// address, a client of it closed when the test ends, and a key unique to
// the run, ending in name.
func standaloneKey(t *testing.T, name string) (addr string, admin *redis.Client, key string) {
	t.Helper()
	addr = requireStandalone(t)
	admin = redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = admin.Close() })
	return addr, admin, "rkqueue:" + time.Now().Format("150405.000000") + ":" + name
}

// pubsubGate holds back what the server sends on a client's pub/sub connections
// (those that wrote a SUBSCRIBE: the Locker's channels and key tracking's
// redirect) while shut: a pub/sub TCP flow slower than the command flow.
type pubsubGate struct {
	mu   sync.Mutex
	shut bool
	open chan struct{}
}

func newPubsubGate() *pubsubGate { return &pubsubGate{open: make(chan struct{})} }

func (g *pubsubGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.shut, g.open = true, make(chan struct{})
	}
}

func (g *pubsubGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		g.shut = false
		close(g.open)
	}
}

func (g *pubsubGate) wait(done <-chan struct{}) {
	g.mu.Lock()
	shut, open := g.shut, g.open
	g.mu.Unlock()
	if shut {
		select {
		case <-open:
		case <-done:
		}
	}
}

type gatedConn struct {
	net.Conn
	g      *pubsubGate
	pubsub atomic.Bool
	done   chan struct{}
	once   sync.Once
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(p), []byte("subscribe")) {
		c.pubsub.Store(true)
	}
	return c.Conn.Write(p)
}

func (c *gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.pubsub.Load() {
		c.g.wait(c.done) // delivered late
	}
	return n, err
}

func (c *gatedConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}

func gatedClient(t *testing.T, addr string, g *pubsubGate) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &gatedConn{Conn: conn, g: g, done: make(chan struct{})}, nil
	}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// afterAttempt calls fn after each reply to the acquire script.
type afterAttempt struct{ fn func() }

func (h afterAttempt) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h afterAttempt) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if isAttempt(cmd) {
			h.fn()
		}
		return err
	}
}
func (h afterAttempt) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// scriptHash returns the SHA1 of the script cmd runs (EVALSHA, or EVAL,
// which go-redis sends when the server did not know the SHA1), or "".
func scriptHash(cmd redis.Cmder) string {
	args := cmd.Args()
	if len(args) < 2 {
		return ""
	}
	s, _ := args[1].(string)
	switch cmd.Name() {
	case "evalsha":
		return s
	case "eval":
		return fmt.Sprintf("%x", sha1.Sum([]byte(s)))
	}
	return ""
}

// isAttempt reports whether cmd runs the acquire script.
func isAttempt(cmd redis.Cmder) bool { return scriptHash(cmd) == rediskit.AcquireScriptHash }

// watchAttempts adds a hook to client, before it is used, that calls
// then, if not nil, after each reply to the acquire script, and sends on
// attempts (without blocking) while watching is true.
func watchAttempts(client redis.UniversalClient, then func()) (attempts chan struct{}, watching *atomic.Bool) {
	attempts, watching = make(chan struct{}, 100), new(atomic.Bool)
	client.AddHook(afterAttempt{func() {
		if then != nil {
			then()
		}
		if watching.Load() {
			select {
			case attempts <- struct{}{}:
			default:
			}
		}
	}})
	return attempts, watching
}

// A hand-over to another process's waiter whose message comes after the
// lock it announced expired, and after an attempt of the waiter's that
// found it gone, is stale: the waiter must not count on it. It did, and
// two processes held the lock at once.
func TestQueueReviewStaleHandOver(t *testing.T) {
	addr, admin, key := standaloneKey(t, "stale")
	ctx := context.Background()

	holder, err := newLocker(t, admin).TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)

	// W: the waiter whose pub/sub flow is slow; its TTL is 200 ms.
	g := newPubsubGate()
	wClient := gatedClient(t, addr, g)
	var openOnNext atomic.Bool
	attempts, watching := watchAttempts(wClient, func() {
		if openOnNext.Load() {
			g.release() // the late message arrives just after this reply
		}
	})
	wL := newLocker(t, wClient, noPolling)
	type res struct {
		lk  *rediskit.Lock
		err error
		at  time.Time
	}
	wGot := make(chan res, 1)
	go func() {
		lk, err := wL.AcquireWithTimeout(ctx, key, 200*time.Millisecond, 20*time.Second)
		wGot <- res{lk, err, time.Now()}
	}()
	queued(t, admin, key, 1)

	// C: another process, queued behind W, TTL 10 s.
	cClient := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = cClient.Close() })
	cGot := make(chan res, 1)
	go func() {
		lk, err := newLocker(t, cClient, noPolling).AcquireWithTimeout(ctx, key, 10*time.Second, 20*time.Second)
		cGot <- res{lk, err, time.Now()}
	}()
	queued(t, admin, key, 2)
	time.Sleep(400 * time.Millisecond) // both subscribed, tracking armed

	g.close()
	watching.Store(true)
	waitFor(t, attempts, 5*time.Second, "W's attempt") // fresh: the release hands over
	require.NoError(t, holder.Release(ctx))
	openOnNext.Store(true) // W's pub/sub flow catches up after its next attempt

	var holders []res
	for _, ch := range []chan res{wGot, cGot} {
		r := waitFor(t, ch, 20*time.Second, "a waiter")
		require.NoError(t, r.err)
		holders = append(holders, r)
	}
	w, c := holders[0], holders[1]
	t.Logf("W obtained at %v (valid until %v), C at %v (valid until %v)", w.at.Format("15:04:05.000"),
		rediskit.ValidUntil(w.lk).Format("15:04:05.000"), c.at.Format("15:04:05.000"), rediskit.ValidUntil(c.lk).Format("15:04:05.000"))
	// Whoever got the lock second got it after the first's validity.
	first, second := w, c
	if c.at.Before(w.at) {
		first, second = c, w
	}
	assert.False(t, second.at.Before(rediskit.ValidUntil(first.lk)), "two holders at once")
	_ = w.lk.Release(ctx)
	_ = c.lk.Release(ctx)
}

// On a Ring there are no wake-ups: a release that cannot tell the head of
// the queue must not take it for gone. It did, and a waiter that came
// later got the lock first.
func TestQueueReviewRingKeepsOrder(t *testing.T) {
	addr, admin, key := standaloneKey(t, "ring")
	ctx := context.Background()
	ring := func() *redis.Ring {
		r := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr}})
		t.Cleanup(func() { _ = r.Close() })
		return r
	}

	holder, err := newLocker(t, ring(), noPolling).TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)
	order := make(chan string, 2)
	start := func(name string) {
		go func() {
			lk, err := newLocker(t, ring(), noPolling).AcquireWithTimeout(ctx, key, time.Second, 20*time.Second)
			if assert.NoError(t, err) {
				order <- name
				time.Sleep(50 * time.Millisecond)
				_ = lk.Release(ctx)
			}
		}()
	}
	start("first")
	queued(t, admin, key, 1)
	time.Sleep(2200 * time.Millisecond) // longer ago than a listener has to subscribe
	start("second")
	queued(t, admin, key, 2)
	require.NoError(t, holder.Release(ctx))
	got := []string{waitFor(t, order, 10*time.Second, "a waiter"), waitFor(t, order, 10*time.Second, "a waiter")}
	assert.Equal(t, []string{"first", "second"}, got, "FIFO across processes on a Ring")
	assertNothingLeft(t, admin, key)
}

// A waiter cut off right after its attempt is handed the lock by the next
// release (its connections are still open): the lock sits with it for the
// claim bound (queueLife, 2 s), not for its TTL (10 s here).
func TestQueueReviewHandOverToCutOffWaiter(t *testing.T) {
	addr, admin, key := standaloneKey(t, "cutoff")
	ctx := context.Background()
	holder, err := newLocker(t, admin).TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)

	p := newFaultProxy(t, addr)
	wClient := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() { _ = wClient.Close() })
	attempts, watching := watchAttempts(wClient, nil)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = newLocker(t, wClient, noPolling).AcquireWithTimeout(wctx, key, 10*time.Second, time.Minute)
	}()
	queued(t, admin, key, 1)
	time.Sleep(300 * time.Millisecond)

	other := newLocker(t, admin, noPolling)
	watching.Store(true)
	waitFor(t, attempts, 5*time.Second, "the waiter's attempt")
	p.Blackhole() // the waiter's process is cut off right after its attempt
	require.NoError(t, holder.Release(ctx))
	t.Logf("after the release the key holds %q, pttl %v", admin.Get(ctx, key).Val(), admin.PTTL(ctx, key).Val())
	start := time.Now()
	lk, err := other.AcquireWithTimeout(ctx, key, time.Minute, 15*time.Second)
	require.NoError(t, err)
	wait := time.Since(start)
	t.Logf("another process got the lock after %v", wait)
	assert.Less(t, wait, 3*time.Second, "the lock sat with a cut-off waiter")
	_ = lk.Release(ctx)
	cancel()
	p.Heal()
}

// The second review's defects.

// A lock handed over across processes for the claim bound (2 s) to a
// waiter that asked for more (3 s) must be confirmed for its TTL before
// the waiter counts on it. It was not, when the message came soon enough:
// the caller held a 3 s lock that Redis kept 2 s.
func TestQueueReviewHandOverShorterThanTTL(t *testing.T) {
	addr, admin, key := standaloneKey(t, "short")
	ctx := context.Background()
	const ttl = 3 * time.Second

	holder, err := newLocker(t, admin).TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)

	wClient := redis.NewClient(&redis.Options{Addr: addr}) // a default client
	t.Cleanup(func() { _ = wClient.Close() })
	attempts, watching := watchAttempts(wClient, nil)
	type res struct {
		lk  *rediskit.Lock
		err error
		at  time.Time
	}
	got := make(chan res, 1)
	go func() {
		lk, err := newLocker(t, wClient, noPolling).AcquireWithTimeout(ctx, key, ttl, 10*time.Second)
		got <- res{lk, err, time.Now()}
	}()
	queued(t, admin, key, 1)
	time.Sleep(300 * time.Millisecond) // subscribed
	hand := handToken(t, admin, key)

	watching.Store(true)
	waitFor(t, attempts, 5*time.Second, "the waiter's attempt") // fresh: the release hands over
	require.NoError(t, holder.Release(ctx))
	r := waitFor(t, got, 10*time.Second, "the waiter")
	require.NoError(t, r.err)
	require.Equal(t, hand, r.lk.Token(), "handed over across processes")
	pttl, err := r.lk.TTL(ctx)
	require.NoError(t, err)
	t.Logf("acquired for %v; Redis says %v left; ValidUntil in %v", ttl, pttl, time.Until(rediskit.ValidUntil(r.lk)))
	assert.Greater(t, pttl, ttl-500*time.Millisecond, "the lock is not held for its TTL")
	assert.Greater(t, rediskit.ValidUntil(r.lk), r.at.Add(ttl-500*time.Millisecond), "the Lock counts on less than its TTL")
	require.NoError(t, r.lk.Release(ctx))
}

// stepHook drives a waiter's client: it can hold its acquire calls back,
// drop their replies after Redis ran them (a lost reply), and hold back
// every script call.
type stepHook struct {
	holdAcq    atomic.Pointer[chan struct{}] // while set and open, acquire calls wait
	dropAcq    atomic.Bool
	onDrop     atomic.Pointer[func()]
	holdAll    atomic.Pointer[chan struct{}] // while set and open, every script call waits
	holdOthers atomic.Pointer[chan struct{}] // while set and open, every script call but acquire waits
}

func (h *stepHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *stepHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if scriptHash(cmd) == "" {
			return next(ctx, cmd)
		}
		if ch := h.holdAll.Load(); ch != nil {
			<-*ch
		}
		if !isAttempt(cmd) {
			if ch := h.holdOthers.Load(); ch != nil {
				<-*ch
			}
			return next(ctx, cmd)
		}
		if ch := h.holdAcq.Load(); ch != nil {
			<-*ch
		}
		err := next(ctx, cmd)
		if h.dropAcq.Load() {
			if f := h.onDrop.Load(); f != nil {
				(*f)()
			}
			err = errLostReply
			cmd.SetErr(err)
		}
		return err
	}
}
func (h *stepHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type lostReply struct{}

func (lostReply) Error() string   { return "read tcp: connection reset by peer (reply lost)" }
func (lostReply) Timeout() bool   { return false }
func (lostReply) Temporary() bool { return true }

var errLostReply error = lostReply{}

// A hand-over message that comes late, after replies of the waiter's that
// would have shown it stale were lost, and whose entry's token has since
// been handed a later lock: the waiter must not report the old hand-over's
// fence, lower than the holder's in between. It did, when it confirmed the
// lock with a refresh that ran after the later hand-over.
func TestQueueReviewStaleHandOverFence(t *testing.T) {
	addr, admin, key := standaloneKey(t, "fence")
	ctx := context.Background()

	holder, err := newLocker(t, admin).TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)

	g := newPubsubGate()
	wClient := gatedClient(t, addr, g)
	attempts, watching := watchAttempts(wClient, nil)
	h := &stepHook{}
	wClient.AddHook(h)
	wLocker := newLocker(t, wClient, noPolling)
	// The steps below hold W's scripts back until they open them; a test
	// that fails before that opens them as it ends, before wLocker's Close
	// waits for those scripts.
	hold, holdConfirm := make(chan struct{}), make(chan struct{})
	openHold, openConfirm := sync.OnceFunc(func() { close(hold) }), sync.OnceFunc(func() { close(holdConfirm) })
	t.Cleanup(func() { openHold(); openConfirm() })
	type res struct {
		lk  *rediskit.Lock
		err error
	}
	wGot := make(chan res, 1)
	go func() {
		lk, err := wLocker.AcquireWithTimeout(ctx, key, 10*time.Second, 30*time.Second)
		wGot <- res{lk, err}
	}()
	queued(t, admin, key, 1)
	time.Sleep(400 * time.Millisecond) // subscribed, tracking armed

	// 1. Right after an attempt of W's, W's pub/sub flow stalls, its next
	// attempts are held back, and the holder releases: handed over to W
	// for 2 s, the message held back.
	watching.Store(true)
	waitFor(t, attempts, 5*time.Second, "W's attempt")
	g.close()
	h.holdAcq.Store(&hold)
	require.NoError(t, holder.Release(ctx))
	watching.Store(false)
	pttl := admin.PTTL(ctx, key).Val()
	t.Logf("after the release: pttl %v", pttl)
	require.LessOrEqual(t, pttl, 2*time.Second, "handed over across processes")

	// 2. X, another process, gets the lock once the hand-over expired.
	xClient := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = xClient.Close() })
	xGot := make(chan res, 1)
	go func() {
		lk, err := newLocker(t, xClient, noPolling).AcquireWithTimeout(ctx, key, 10*time.Second, 20*time.Second)
		xGot <- res{lk, err}
	}()
	x := waitFor(t, xGot, 10*time.Second, "X")
	require.NoError(t, x.err)
	t.Logf("X holds the lock, fence %d", x.lk.Fence())

	// 3. W's held attempt runs (X holds the lock: W's entry queues again)
	// and its reply is lost; W's pub/sub catches up, and W hears of the
	// old hand-over; the script it confirms it with is held back.
	onDrop := func() {
		h.dropAcq.Store(false)
		h.holdAll.Store(&holdConfirm)
		g.release()
	}
	h.onDrop.Store(&onDrop)
	h.dropAcq.Store(true)
	openHold()
	time.Sleep(100 * time.Millisecond)

	// 4. X releases: W's entry is fresh and its Locker listens: handed
	// over to it again. Then W's confirmation runs.
	require.NoError(t, x.lk.Release(ctx))
	time.Sleep(20 * time.Millisecond)
	t.Logf("after X's release: key %q pttl %v", admin.Get(ctx, key).Val(), admin.PTTL(ctx, key).Val())
	openConfirm()

	w := waitFor(t, wGot, 15*time.Second, "W")
	require.NoError(t, w.err)
	t.Logf("W holds the lock, fence %d (X's was %d), counter %s", w.lk.Fence(), x.lk.Fence(),
		admin.Get(ctx, rediskit.CompanionKey(key, ":fence")).Val())
	assert.Greater(t, w.lk.Fence(), x.lk.Fence(), "a later holder's fence is lower than an earlier holder's")
	_ = w.lk.Release(ctx)
}

// noTrackConn makes the server refuse CLIENT TRACKING (as a proxy or
// Redis 5 would), so that only the hand-over message wakes a waiter.
type noTrackConn struct{ net.Conn }

func (c noTrackConn) Write(p []byte) (int, error) {
	q := bytes.ReplaceAll(p, []byte("TRACKING"), []byte("TRACKINX"))
	n, err := c.Conn.Write(q)
	if n == len(q) {
		n = len(p)
	}
	return n, err
}

func noTrackClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return noTrackConn{conn}, nil
	}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// isRefresh reports whether cmd runs the refresh script: one key, token
// and TTL (the pttl script has one argument, release three keys).
func isRefresh(cmd redis.Cmder) bool {
	return scriptHash(cmd) != "" && !isAttempt(cmd) && len(cmd.Args()) == 6
}

// stuckRefreshes makes the first n refreshes sit on a connection that
// does not answer for d (a half-open pooled connection, given up by the
// default client's ReadTimeout of 3 s); later ones go through.
type stuckRefreshes struct {
	n     atomic.Int64
	d     time.Duration
	armed atomic.Bool
	seen  atomic.Int64
}

func (h *stuckRefreshes) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *stuckRefreshes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isRefresh(cmd) && h.armed.Load() {
			h.seen.Add(1)
			if h.n.Add(-1) >= 0 {
				select {
				case <-time.After(h.d):
				case <-ctx.Done():
				}
				err := &net.OpError{Op: "read", Net: "tcp", Err: errTimeout{}}
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}
func (h *stuckRefreshes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

// The third review's defect.

// One refresh stuck on a dead pooled connection must not cost fn its lock
// while Redis answers on every other connection: the watchdog starts a
// second refresh beside a slow one (maxRefreshes), within the lock's
// validity. For a lock WithLock takes from another process's hand-over,
// the validity is the claim bound (about 1-2 s), but the second refresh
// came an interval (TTL/3) after the first: fn's context was cancelled
// although Redis would have extended the lock.
func TestQueueReviewStuckFirstRefreshAfterHandOver(t *testing.T) {
	for _, backendName := range []string{"miniredis", "redis"} {
		t.Run(backendName, func(t *testing.T) {
			var addr string
			if backendName == "miniredis" {
				addr = miniredis.RunT(t).Addr()
			} else {
				addr = requireStandalone(t)
			}
			for _, handOver := range []bool{false, true} {
				name := "free lock"
				if handOver {
					name = "handed over"
				}
				t.Run(name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					admin := redis.NewClient(&redis.Options{Addr: addr})
					t.Cleanup(func() { _ = admin.Close() })
					key := "rkqueue:" + time.Now().Format("150405.000000") + ":" + name
					const ttl = 6 * time.Second // refreshes every 2 s

					wClient := noTrackClient(t, addr)
					h := &stuckRefreshes{d: 3 * time.Second}
					h.n.Store(1)
					wClient.AddHook(h)
					attempts, watching := watchAttempts(wClient, nil)
					h.armed.Store(true)
					w := newLocker(t, wClient, noPolling)

					var holder *rediskit.Lock
					if handOver {
						var err error
						holder, err = newLocker(t, admin).TryAcquire(ctx, key, time.Minute)
						require.NoError(t, err)
					}
					started := make(chan time.Time, 1)
					done := make(chan error, 1)
					go func() {
						done <- w.WithLock(ctx, key, func(fctx context.Context) error {
							started <- time.Now()
							select {
							case <-fctx.Done():
								return context.Cause(fctx)
							case <-time.After(5 * time.Second): // a short job
								return nil
							}
						}, rediskit.WithLockTTL(ttl), rediskit.WithLockWait(30*time.Second))
					}()
					if handOver {
						queued(t, admin, key, 1)
						time.Sleep(400 * time.Millisecond) // subscribed
						watching.Store(true)
						waitFor(t, attempts, 5*time.Second, "the waiter's attempt")
						watching.Store(false)
						time.Sleep(50 * time.Millisecond) // fresh: the release hands over
						require.NoError(t, holder.Release(ctx))
						t.Logf("after the release: key pttl %v", admin.PTTL(ctx, key).Val())
					}
					at := waitFor(t, started, 10*time.Second, "fn")
					err := waitFor(t, done, 15*time.Second, "WithLock")
					t.Logf("fn ran %v; refreshes sent %d; WithLock: %v", time.Since(at).Round(time.Millisecond), h.seen.Load(), err)
					assert.NoError(t, err, "one stuck refresh cost fn its lock, Redis answering all along")
				})
			}
		})
	}
}

// heldSubscriptions holds back the (S)SUBSCRIBE commands a client writes
// until open is closed: until then the server does not know that the
// client listens.
type heldSubscriptions struct {
	net.Conn
	open <-chan struct{}
}

func (c heldSubscriptions) Write(p []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(p), []byte("subscribe")) {
		<-c.open
	}
	return c.Conn.Write(p)
}

// heldSubscriptionsClient returns a client of addr whose (S)SUBSCRIBEs
// wait until open is closed, closed when the test ends.
func heldSubscriptionsClient(t *testing.T, addr string, open <-chan struct{}) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return heldSubscriptions{conn, open}, nil
	}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// beforeAttempt holds back the attempt number n of a client (1 for its
// first) until gate is closed.
type beforeAttempt struct {
	n     int32
	count *atomic.Int32
	gate  <-chan struct{}
}

func (h beforeAttempt) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h beforeAttempt) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isAttempt(cmd) && h.count.Add(1) == h.n {
			<-h.gate
		}
		return next(ctx, cmd)
	}
}
func (h beforeAttempt) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// takeTurn waits up to 5 s for an acquisition's result, requires the
// lock, and releases it.
func takeTurn(t *testing.T, ctx context.Context, got <-chan lockResult, what string) {
	t.Helper()
	r := waitFor(t, got, 5*time.Second, what)
	require.NoError(t, r.err, what)
	require.NoError(t, r.lk.Release(ctx), what)
}

// lockResult is what an acquisition returned.
type lockResult struct {
	lk  *rediskit.Lock
	err error
}

// acquireAsync starts an AcquireWithTimeout of key by l (TTL a minute,
// wait 30 s), and returns its result's channel.
func acquireAsync(ctx context.Context, l *rediskit.Locker, key string) <-chan lockResult {
	got := make(chan lockResult, 1)
	go func() {
		lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, 30*time.Second)
		got <- lockResult{lk, err}
	}()
	return got
}

// waitersOf returns, for the lock on key of the Redis at addr, acquire,
// which starts an acquisition of it by a Locker (acquireAsync), and other,
// which returns a new client, as another process would have, closed when
// the test ends.
func waitersOf(t *testing.T, ctx context.Context, addr, key string) (acquire func(*rediskit.Locker) <-chan lockResult, other func() *redis.Client) {
	acquire = func(l *rediskit.Locker) <-chan lockResult { return acquireAsync(ctx, l, key) }
	other = func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	return acquire, other
}

// A waiter behind the head whose turn comes before the server knows it
// listens: the release that finds it at the head cannot tell it, and keeps
// the lock free for it (it came within listenWait). It looks again once it
// has subscribed (its subscription confirmed, or confirmWait passed),
// rather than sleep the beat a waiter behind the head sleeps (here 10 s:
// it slept that long before). That second attempt is held back until the
// lock is free, so that it comes after the releases however slow the
// machine.
func TestQueueReviewTurnBeforeSubscribed(t *testing.T) {
	defer rediskit.SetQueueTimes(10*time.Second, 10*time.Second)()
	addr, admin, key := standaloneKey(t, "turn-before-it-listens")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acquire, other := waitersOf(t, ctx, addr, key)
	holder, err := newLocker(t, other()).TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)
	// W1, the head, listens.
	w1 := acquire(newLocker(t, other(), noPolling))
	queued(t, admin, key, 1)
	time.Sleep(300 * time.Millisecond) // subscribed
	// W2, behind it, does not yet.
	open := make(chan struct{})
	w2Client := heldSubscriptionsClient(t, addr, open)
	free := make(chan struct{})
	w2Client.AddHook(beforeAttempt{2, new(atomic.Int32), free})
	w2Locker := newLocker(t, w2Client, noPolling)
	subscribe, freed := sync.OnceFunc(func() { close(open) }), sync.OnceFunc(func() { close(free) })
	t.Cleanup(func() { subscribe(); freed() }) // before w2Locker's Close waits for them
	w2 := acquire(w2Locker)
	queued(t, admin, key, 2)

	// The lock goes to W1, whose release finds W2 at the head.
	require.NoError(t, holder.Release(ctx))
	takeTurn(t, ctx, w1, "W1")
	assert.Zero(t, admin.Exists(ctx, key).Val(), "the lock is kept free for W2")
	freed()
	subscribe()
	takeTurn(t, ctx, w2, "W2")
	assertNothingLeft(t, admin, key)
}

// The same, for a waiter that first waited in process behind its own
// Locker's lock: its subscription, made as it began to wait, is not
// confirmed when the release gives the lock to another process's waiters,
// who came earlier, and queues it behind them; the second of them to
// release meets it at the head. Its subscription's confirmation makes it
// look (it slept the 10 s beat before). The SUBSCRIBE is held for the
// tens of milliseconds the releases take; held past confirmWait (1 s), the
// Locker's write of it times out, and the test shows another path: how
// go-redis subscribes the channel again.
func TestQueueReviewLocalWaiterTurnBeforeSubscribed(t *testing.T) {
	defer rediskit.SetQueueTimes(10*time.Second, 10*time.Second)()
	addr, admin, key := standaloneKey(t, "local-turn-before-it-listens")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acquire, other := waitersOf(t, ctx, addr, key)
	// A holds the lock, on a client whose SUBSCRIBEs wait.
	open := make(chan struct{})
	aClient := heldSubscriptionsClient(t, addr, open)
	aLocker := newLocker(t, aClient, noPolling)
	subscribe := sync.OnceFunc(func() { close(open) })
	t.Cleanup(subscribe) // before aLocker's Close waits for its writer
	holder, err := aLocker.TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)
	// B and C, of other processes, wait, listening.
	b := acquire(newLocker(t, other(), noPolling))
	queued(t, admin, key, 1)
	c := acquire(newLocker(t, other(), noPolling))
	queued(t, admin, key, 2)
	time.Sleep(300 * time.Millisecond) // subscribed
	// G waits in process behind A's lock.
	attempts, watching := watchAttempts(aClient, nil)
	watching.Store(true)
	g := acquire(aLocker)
	require.Eventually(t, func() bool { return rediskit.LocalWaiters(aLocker, key) == 1 },
		5*time.Second, time.Millisecond, "G waits in process")

	// A's release gives the lock to B, which came first, and queues G
	// behind C; G's own attempt finds it there.
	require.NoError(t, holder.Release(ctx))
	rb := waitFor(t, b, 5*time.Second, "B")
	require.NoError(t, rb.err)
	waitFor(t, attempts, 5*time.Second, "G's attempt")
	require.NoError(t, rb.lk.Release(ctx))
	takeTurn(t, ctx, c, "C") // meets G at the head
	assert.Zero(t, admin.Exists(ctx, key).Val(), "the lock is kept free for G")
	subscribe()
	takeTurn(t, ctx, g, "G")
	assertNothingLeft(t, admin, key)
}

// brokenSubscribe breaks its connection under the first (S)SUBSCRIBE it is
// asked to write that names match, as a connection that broke then would:
// the write fails.
type brokenSubscribe struct {
	net.Conn
	match string
	fired *atomic.Bool
	done  chan struct{}
}

func (c brokenSubscribe) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("subscribe")) && bytes.Contains(p, []byte(c.match)) && c.fired.CompareAndSwap(false, true) {
		_ = c.Conn.Close()
		close(c.done)
		return 0, fmt.Errorf("injected: connection broken under a subscribe of %s", c.match)
	}
	return c.Conn.Write(p)
}

// A SUBSCRIBE whose write fails makes go-redis reconnect at once and
// subscribe the new connection to the channels it knew, which do not yet
// include the one that write was for. Before the fix the Locker left it
// so: deaf on that channel while it lingered, its waiters heard no release
// and slept their beat (here 10 s; on real Redis, key tracking still woke
// the head). The Locker now writes a failed SUBSCRIBE again. (Its
// connection already listens on another key's channel: go-redis v9.5
// races with itself when the first SUBSCRIBE of a connection fails while
// its first receive starts.)
func TestQueueReviewFailedSubscribeIsWrittenAgain(t *testing.T) {
	defer rediskit.SetQueueTimes(10*time.Second, 10*time.Second)()
	run := func(t *testing.T, addr string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		prefix := "rkqueue:" + time.Now().Format("150405.000000")
		first, key := prefix+":first-channel", prefix+":deaf-channel"
		acquire, other := waitersOf(t, ctx, addr, key)
		admin := other()
		holders := newLocker(t, other())
		firstHolder, err := holders.TryAcquire(ctx, first, time.Minute)
		require.NoError(t, err)
		holder, err := holders.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)

		broken := make(chan struct{})
		fired := new(atomic.Bool)
		wClient := redis.NewClient(&redis.Options{Addr: addr, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return brokenSubscribe{conn, key, fired, broken}, nil
		}})
		t.Cleanup(func() { _ = wClient.Close() })
		wLocker := newLocker(t, wClient, noPolling)
		subscribed := func(k string) func() bool {
			return func() bool {
				chans, err := admin.PubSubChannels(ctx, "*"+k+"*").Result()
				return err == nil && len(chans) > 0
			}
		}
		firstWaiter := acquireAsync(ctx, wLocker, first)
		require.Eventually(t, subscribed(first), 5*time.Second, 10*time.Millisecond, "the first waiter's channel")

		w := acquire(wLocker)
		queued(t, admin, key, 1)
		waitFor(t, broken, 5*time.Second, "the subscribe's failure")
		assert.Eventually(t, subscribed(key), 5*time.Second, 10*time.Millisecond, "the waiter's channel is subscribed again")
		assert.True(t, subscribed(first)(), "the first waiter's channel, subscribed again by go-redis")
		require.NoError(t, holder.Release(ctx))
		takeTurn(t, ctx, w, "the waiter, told of the release")
		assertNothingLeft(t, admin, key)

		require.NoError(t, firstHolder.Release(ctx))
		takeTurn(t, ctx, firstWaiter, "the first waiter")
	}
	t.Run("miniredis", func(t *testing.T) { run(t, miniredis.RunT(t).Addr()) })
	t.Run("standalone", func(t *testing.T) { run(t, requireStandalone(t)) })
}

// gatedShardSubscribes loses, while its gate is armed, the SSUBSCRIBEs a
// client writes that name exactly one of two channels: the write reports
// success, and the gate keeps the bytes until it opens, then sends them.
// (Holding the write instead would hold go-redis's PubSub lock, and with
// it the reader.) One naming both (go-redis's resubscription after a
// reconnect) goes through, and with the gate's late set, the read that
// follows it waits until that read's deadline (the Locker's receive tick,
// 1 s) has passed.
type gatedShardSubscribes struct {
	net.Conn
	gate      *shardGate
	delayRead atomic.Bool
}

type shardGate struct {
	channels [2]string // set before armed
	late     bool      // set before armed
	armed    atomic.Bool
	held     chan struct{} // closed when a write is first kept
	once     sync.Once
	conns    sync.Map // the connections that wrote an SSUBSCRIBE
	mu       sync.Mutex
	opened   bool
	kept     []keptWrite
}

type keptWrite struct {
	conn net.Conn
	p    []byte
}

// open sends the writes the gate kept, in order, and lets the next ones
// through.
func (g *shardGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.opened {
		return
	}
	g.opened = true
	for _, k := range g.kept {
		_, _ = k.conn.Write(k.p) // a connection closed since: lost
	}
}

func (c *gatedShardSubscribes) Write(p []byte) (int, error) {
	if !c.gate.armed.Load() {
		if bytes.Contains(p, []byte("ssubscribe")) {
			c.gate.conns.Store(c.Conn, true)
		}
		return c.Conn.Write(p)
	}
	c.gate.mu.Lock() // no write between the kept ones sent by open
	defer c.gate.mu.Unlock()
	if bytes.Contains(p, []byte("ssubscribe")) {
		switch one, other := bytes.Contains(p, []byte(c.gate.channels[0])), bytes.Contains(p, []byte(c.gate.channels[1])); {
		case one != other && !c.gate.opened:
			c.gate.once.Do(func() { close(c.gate.held) })
			c.gate.kept = append(c.gate.kept, keptWrite{c.Conn, bytes.Clone(p)})
			return len(p), nil
		case one && other && c.gate.late:
			c.delayRead.Store(true)
		}
	}
	return c.Conn.Write(p)
}

func (c *gatedShardSubscribes) Read(p []byte) (int, error) {
	if c.delayRead.CompareAndSwap(true, false) {
		time.Sleep(1500 * time.Millisecond)
	}
	return c.Conn.Read(p)
}

// After a Cluster node's pub/sub connection breaks, go-redis resubscribes
// its channels in one SSUBSCRIBE, refused (CROSSSLOT) when they lie in
// several slots, and the Locker subscribes each again on its own while it
// wakes its waiters. A waiter whose attempt goes out before its channel's
// new subscription reaches Redis, and whose turn then comes, is told of it
// by nobody: the release publishes to no subscriber and leaves the lock
// free for it. Before the fix it slept the beat a waiter behind the head
// sleeps (here 10 s); now the channel counts as unconfirmed again, and its
// confirmation wakes the waiter. The same when the refusal comes after a
// round of the receive loop with nothing to read (late): it confirmed
// every channel, and a waiter's attempt then went out unconfirmed.
func TestQueueReviewShardedResubscribeTurnNotLost(t *testing.T) {
	t.Cleanup(rediskit.SetQueueTimes(10*time.Second, 10*time.Second)) // after the Lockers' Close
	t.Run("refused-at-once", func(t *testing.T) { shardedResubscribeTurn(t, false) })
	t.Run("refusal-late", func(t *testing.T) { shardedResubscribeTurn(t, true) })
}

func shardedResubscribeTurn(t *testing.T, late bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := clusterClient(t, nil)
	node := clusterMasters(t, admin)[0]
	keys := keysOn(t, admin, uniquePrefix("shard-turn"), node.addr, 2)
	key, other := keys[0], keys[1]
	holders := newLocker(t, clusterClient(t, nil))
	holder, err := holders.TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)
	otherHolder, err := holders.TryAcquire(ctx, other, time.Minute)
	require.NoError(t, err)
	subscribed := func(l *rediskit.Locker, k string) func() bool {
		return func() bool { return shardSubscribers(t, node.c, channelOf(l, k)) == 1 }
	}

	// W1, the head, listens.
	l1 := newLocker(t, clusterClient(t, nil), noPolling)
	w1 := acquireAsync(ctx, l1, key)
	queued(t, admin, key, 1)
	require.Eventually(t, subscribed(l1, key), 5*time.Second, 10*time.Millisecond, "W1's channel")
	// W2, behind it, and W3, on the other key, share a Locker whose
	// SSUBSCRIBEs of one channel the gate holds back once armed.
	gate := &shardGate{late: late, held: make(chan struct{})}
	l2Client := clusterClient(t, func(o *redis.ClusterOptions) {
		o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &gatedShardSubscribes{Conn: conn, gate: gate}, nil
		}
	})
	contended := make(chan struct{}, 100) // W2's failed attempts
	l2 := newLocker(t, l2Client, noPolling, rediskit.WithHook(func(e rediskit.Event) {
		if e.Kind == rediskit.EventContended && strings.HasSuffix(e.Key, key) {
			select {
			case contended <- struct{}{}:
			default:
			}
		}
	}))
	gate.channels = [2]string{channelOf(l2, key), channelOf(l2, other)}
	w2, w3 := acquireAsync(ctx, l2, key), acquireAsync(ctx, l2, other)
	queued(t, admin, key, 2)
	queued(t, admin, other, 1)
	require.Eventually(t, subscribed(l2, key), 5*time.Second, 10*time.Millisecond, "W2's channel")
	require.Eventually(t, subscribed(l2, other), 5*time.Second, 10*time.Millisecond, "W3's channel")

	// W2's pub/sub connection breaks; go-redis's resubscription is
	// refused, and the Locker's own is lost on the way, for now. W2,
	// woken by both, makes an attempt after the second (the Locker's
	// resubscription comes before the held write): its attempts are over
	// once none has come for a while.
	for len(contended) > 0 {
		<-contended
	}
	gate.armed.Store(true)
	gate.conns.Range(func(c, _ any) bool {
		_ = c.(net.Conn).Close()
		return true
	})
	waitFor(t, gate.held, 5*time.Second, "the Locker's SSUBSCRIBE after the break")
	waitFor(t, contended, 5*time.Second, "W2's attempt after the break")
	for quiet := false; !quiet; {
		select {
		case <-contended:
		case <-time.After(250 * time.Millisecond):
			quiet = true
		}
	}

	// The lock goes to W1, whose release finds W2 at the head, not
	// listening.
	require.NoError(t, holder.Release(ctx))
	takeTurn(t, ctx, w1, "W1")
	assert.Zero(t, admin.Exists(ctx, key).Val(), "the lock is kept free for W2")
	gate.open()
	takeTurn(t, ctx, w2, "W2, once subscribed again")
	assertNothingLeft(t, admin, key)

	require.NoError(t, otherHolder.Release(ctx))
	takeTurn(t, ctx, w3, "W3")
	assertNothingLeft(t, admin, other)
}
