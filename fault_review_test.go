package rediskit_test

// Fault scenarios a review found: each failed before its fix.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// holdLeaseHook holds back the reply of the read-or-lease script only.
type holdLeaseHook struct {
	p    *faultProxy
	hold time.Duration
	on   *atomic.Bool
}

func (holdLeaseHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (holdLeaseHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h holdLeaseHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		if h.on.Load() && len(a) > 4 && strings.HasPrefix(strings.ToLower(fmt.Sprint(a[0])), "eval") && strings.HasSuffix(fmt.Sprint(a[4]), ":lease") {
			h.p.HoldReplies(h.hold)
			defer h.p.Heal() // later bytes are not held
		}
		return next(ctx, cmd)
	}
}

// A GetOrLoad lease taken by a read-or-lease call whose caller gave up is
// dropped when the reply comes, on any client: a lease left for its TTL
// would stall the other processes' loads.
func TestFaultLeaseOfAbandonedReadIsDropped(t *testing.T) {
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skip("no redis")
	}
	for _, cte := range []bool{false, true} {
		t.Run(fmt.Sprintf("cte=%v", cte), func(t *testing.T) {
			ctx := context.Background()
			p := newFaultProxy(t, addr)
			client := redis.NewClient(&redis.Options{Addr: p.Addr(), ContextTimeoutEnabled: cte})
			t.Cleanup(func() { _ = client.Close() })
			direct := redis.NewClient(&redis.Options{Addr: addr})
			t.Cleanup(func() { _ = direct.Close() })
			on := &atomic.Bool{}
			client.AddHook(holdLeaseHook{p: p, hold: 800 * time.Millisecond, on: on})
			c := newCache[string](t, client) // lease on, 3 s
			// Warm up: scripts loaded, connection open.
			_, _ = c.GetOrLoad(ctx, fmt.Sprintf("rkfault:warm:%d", time.Now().UnixNano()), time.Second,
				func(context.Context) (string, error) { return "", errors.New("no") })
			time.Sleep(200 * time.Millisecond)
			on.Store(true)

			key := fmt.Sprintf("rkfault:lease:%d", time.Now().UnixNano())
			cctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
			_, err := c.GetOrLoad(cctx, key, time.Second, func(context.Context) (string, error) {
				return "", errors.New("load failed") // nothing written back
			})
			cancel()
			require.Error(t, err)
			time.Sleep(time.Second) // the held reply has come by now
			lease := rediskit.CompanionKey(key, ":lease")
			pttl := direct.PTTL(ctx, lease).Val()
			assert.True(t, pttl < 0, "the lease of an abandoned read is still in Redis, PTTL %v", pttl)

			// Another process now wants the key: it waits on the orphan lease.
			other := newCache[string](t, direct)
			octx, ocancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer ocancel()
			start := time.Now()
			v, err := other.GetOrLoad(octx, key, time.Second, func(context.Context) (string, error) { return "v", nil })
			assert.NoError(t, err, "other process's GetOrLoad after %v", time.Since(start))
			assert.Equal(t, "v", v)
		})
	}
}

// A client with ContextTimeoutEnabled but ReadTimeout and WriteTimeout -2
// (go-redis: "disables SetReadDeadline calls completely") does not stop at
// a ctx deadline: an acquisition must not run inline on it, or it blocks
// past its deadline against a blackholed server.
func TestFaultDeadlineOnClientWithoutSocketDeadlines(t *testing.T) {
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skip("no redis")
	}
	ctx := context.Background()
	p := newFaultProxy(t, addr)
	client := redis.NewClient(&redis.Options{Addr: p.Addr(), ContextTimeoutEnabled: true, ReadTimeout: -2, WriteTimeout: -2})
	t.Cleanup(func() { _ = client.Close() })
	l := newLocker(t, client)
	require.NoError(t, client.Ping(ctx).Err())
	p.Blackhole()
	t.Cleanup(p.Heal) // unblock before the Locker's Close
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := l.AcquireWithTimeout(cctx, fmt.Sprintf("rkfault:nodl:%d", time.Now().UnixNano()), time.Second, time.Second)
		done <- err
	}()
	select {
	case err := <-done:
		assert.Less(t, time.Since(start), 300*time.Millisecond+deadlineSlack, "err %v", err)
	case <-time.After(3 * time.Second):
		t.Errorf("AcquireWithTimeout with a 300 ms deadline still running after 3 s")
		p.Heal()
		<-done
	}
}

// A foreign release (no publish) is noticed within one backoff sleep
// (doc.go "Foreign writers", README) where Redis cannot track the key, also
// when the head of the queue leaves (its ctx is cancelled) between its
// polls: its leaving lets the next waiter in, rather than a whole backoff
// of the next waiter's after it.
func TestFaultForeignReleaseWhenOldestWaiterLeaves(t *testing.T) {
	// On miniredis, which has no CLIENT TRACKING: on a real server the
	// oldest waiter hears of the DEL through tracking, and takes the lock.
	client, _ := onMiniredis(t)
	ctx := context.Background()
	const backoff = 300 * time.Millisecond
	polls := make(chan time.Time, 100)
	// The oldest waiter's Locker, whose attempts are counted, and the next
	// one's: two processes.
	la := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(backoff)),
		rediskit.WithHook(func(e rediskit.Event) {
			if e.Kind == rediskit.EventContended {
				select {
				case polls <- time.Now():
				default:
				}
			}
		}))
	lb := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(time.Minute)))
	key := fmt.Sprintf("rkfault:foreign:%d", time.Now().UnixNano())
	require.NoError(t, client.Set(ctx, key, "foreign", time.Minute).Err())

	actx, leave := context.WithCancel(ctx)
	aDone := make(chan error, 1)
	go func() {
		_, err := la.AcquireWithTimeout(actx, key, time.Minute, 10*time.Second)
		aDone <- err
	}()
	time.Sleep(50 * time.Millisecond)
	bDone := make(chan time.Time, 1)
	go func() {
		lk, err := lb.AcquireWithTimeout(ctx, key, time.Minute, 10*time.Second)
		if assert.NoError(t, err) {
			bDone <- time.Now()
			_ = lk.Release(ctx)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	// Drain to the oldest's latest poll, then wait for the next one.
	for len(polls) > 0 {
		<-polls
	}
	p := <-polls
	time.Sleep(time.Until(p.Add(30 * time.Millisecond)))
	require.NoError(t, client.Del(ctx, key).Err()) // a foreign release: no publish
	freed := time.Now()
	time.Sleep(time.Until(p.Add(backoff - 30*time.Millisecond)))
	leave() // the oldest goes just before its next poll
	require.ErrorIs(t, <-aDone, context.Canceled)
	got := <-bDone
	gap := got.Sub(freed)
	t.Logf("freed → next waiter obtained: %v (bound: backoff %v + a round trip)", gap, backoff)
	assert.Less(t, gap, backoff+deadlineSlack)
}

// Cancelling a waiting acquisition (a ctx without a deadline) on a client
// that honours deadlines, while Redis does not answer, ends it at once, not
// at the client's ReadTimeout.
func TestFaultCancelNoticedWhileRedisIsSilent(t *testing.T) {
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skip("no redis")
	}
	ctx := context.Background()
	p := newFaultProxy(t, addr)
	client := redis.NewClient(&redis.Options{Addr: p.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = client.Close() })
	l := newLocker(t, client)
	require.NoError(t, client.Ping(ctx).Err())
	t.Cleanup(p.Heal)
	p.Blackhole()
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := l.AcquireWithTimeout(cctx, fmt.Sprintf("rkfault:cancel:%d", time.Now().UnixNano()), time.Second, 10*time.Second)
	t.Logf("returned after %v: %v", time.Since(start), err)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), 100*time.Millisecond+deadlineSlack)
}

type countHook struct{ evalsha *atomic.Int64 }

func (countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			h.evalsha.Add(1)
		}
		return err
	}
}

// An acquisition whose dial was refused sent nothing, so nothing is undone:
// no blind releases in the background, which would only meet the same
// refusal, five times each.
func TestFaultNoUndoForRequestsNeverSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	ctx := context.Background()
	var n atomic.Int64
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	client.AddHook(countHook{&n})
	t.Cleanup(func() { _ = client.Close() })
	l := newLocker(t, client)
	const calls = 20
	for i := 0; i < calls; i++ {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := l.TryAcquire(cctx, fmt.Sprintf("rkfault:refused:%d", i), time.Second)
		cancel()
		require.Error(t, err)
	}
	time.Sleep(1500 * time.Millisecond) // past three of the undo's retries
	assert.EqualValues(t, calls, n.Load(), "script calls: the attempts, and no undo")
}

// Clients with ContextTimeoutEnabled on which go-redis can still wait past a
// call's deadline, whatever its ctx, against a server that accepts
// connections and never answers: a call with a deadline must still return
// at it (a Locker's acquisitions, WithLock, a Cache's read), so the library
// must not run it on the caller's goroutine. Where go-redis waits under a
// mutex, another caller with a longer deadline gets there first.
func TestReviewClientsThatIgnoreDeadlines(t *testing.T) {
	const deadline, dialTimeout = 200 * time.Millisecond, time.Second
	oneSlot := func(addr string) func(context.Context) ([]redis.ClusterSlot, error) {
		return func(context.Context) ([]redis.ClusterSlot, error) {
			return []redis.ClusterSlot{{Start: 0, End: 16383, Nodes: []redis.ClusterNode{{Addr: addr}}}}, nil
		}
	}
	for _, c := range []struct {
		name string
		// client is the client under test, for a server at addr.
		client func(addr string) redis.UniversalClient
		// behind: another caller is waiting already when the call starts.
		behind bool
	}{
		// go-redis dials TLS with tls.DialWithDialer, whose handshake only
		// DialTimeout bounds.
		{"tls", func(addr string) redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: addr, TLSConfig: &tls.Config{InsecureSkipVerify: true},
				ContextTimeoutEnabled: true, DialTimeout: dialTimeout, MaxRetries: -1})
		}, false},
		// A Dialer of the user's, here one that does TLS as go-redis's own
		// does, ignoring its ctx.
		{"custom-dialer", func(addr string) redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1,
				Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
					return tls.DialWithDialer(&net.Dialer{Timeout: dialTimeout}, network, addr, &tls.Config{InsecureSkipVerify: true})
				}})
		}, false},
		// Functions of the user's that go-redis calls without the ctx: a
		// token fetch on each new connection, a rate limiter on each call.
		{"credentials-provider", func(addr string) redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, DialTimeout: dialTimeout, MaxRetries: -1,
				CredentialsProvider: func() (string, string) {
					time.Sleep(dialTimeout)
					return "", ""
				}})
		}, false},
		{"limiter", func(addr string) redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, DialTimeout: dialTimeout, MaxRetries: -1,
				Limiter: slowLimiter{dialTimeout}})
		}, false},
		// Sentinel: a new connection looks the master up under a mutex,
		// with the ctx of the call that holds it (go-redis 9.5).
		{"sentinel", func(addr string) redis.UniversalClient {
			return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: []string{addr},
				ContextTimeoutEnabled: true, DialTimeout: dialTimeout, MaxRetries: -1})
		}, true},
		// A Cluster routes a command once it has the nodes' COMMAND reply:
		// asked on a 5-second context of its own (go-redis 9.23), or under
		// a mutex (internal.Once, ReadOnly, go-redis 9.5).
		{"cluster", func(addr string) redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}, ClusterSlots: oneSlot(addr),
				ContextTimeoutEnabled: true, DialTimeout: dialTimeout, MaxRedirects: -1})
		}, false},
		{"cluster-readonly", func(addr string) redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}, ClusterSlots: oneSlot(addr), ReadOnly: true,
				ContextTimeoutEnabled: true, DialTimeout: dialTimeout, MaxRedirects: -1})
		}, true},
		// A Cluster whose node clients the user makes, with TLS.
		{"cluster-newclient-tls", func(addr string) redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}, ClusterSlots: oneSlot(addr),
				NewClient: func(o *redis.Options) *redis.Client {
					o.TLSConfig = &tls.Config{InsecureSkipVerify: true}
					return redis.NewClient(o)
				},
				ContextTimeoutEnabled: true, DialTimeout: dialTimeout, MaxRedirects: -1})
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, cut := rediskit.SilentServer(t)
			client := c.client(addr)
			t.Cleanup(func() { _ = client.Close() })
			locker := rediskit.NewLocker(client)
			cache := rediskit.NewCache[string](client)
			t.Cleanup(func() {
				_ = locker.Close() // waits for the calls left behind
				_ = cache.Close()
			})
			// The calls left behind end once the server is gone, rather
			// than at their own timeouts.
			t.Cleanup(cut)
			if c.behind {
				done := make(chan struct{})
				t.Cleanup(func() { <-done })
				go func() {
					defer close(done)
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					_, _ = locker.TryAcquire(ctx, "first", time.Second)
				}()
				time.Sleep(100 * time.Millisecond)
			}
			within := func(name string, op func(ctx context.Context) error) {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				start := time.Now()
				err := op(ctx)
				took := time.Since(start)
				assert.Error(t, err, "%s", name)
				assert.Less(t, took, deadline+deadlineSlack, "%s returned %v after its start, deadline %v (dial timeout %v)", name, took, deadline, dialTimeout)
			}
			within("TryAcquire", func(ctx context.Context) error {
				_, err := locker.TryAcquire(ctx, "key", time.Second)
				return err
			})
			within("AcquireWithTimeout", func(ctx context.Context) error {
				_, err := locker.AcquireWithTimeout(ctx, "key", time.Second, time.Minute)
				return err
			})
			within("WithLock", func(ctx context.Context) error {
				return locker.WithLock(ctx, "key", func(context.Context) error { return nil })
			})
			within("Cache.Get", func(ctx context.Context) error {
				_, err := cache.Get(ctx, "key")
				return err
			})
		})
	}
}

// slowLimiter is a go-redis Limiter whose every Allow takes d.
type slowLimiter struct{ d time.Duration }

func (l slowLimiter) Allow() error     { time.Sleep(l.d); return nil }
func (slowLimiter) ReportResult(error) {}
