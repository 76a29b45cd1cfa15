package rediskit_test

// Regression tests for the defects of issue 13, one TestReview<N> per item.
// Each fails on the code the review looked at and passes once the defect is
// fixed at its root. Waits use large backoffs, so that a fast outcome can
// only come from the mechanism under test (a wake-up), never from polling;
// the bounds are generous, for slow shared machines and -race.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// slowBackoff is a backoff no wait in these tests can reach: 5 s, stretched
// to 20 s for a subscribed waiter, against holders' TTLs of a minute. A
// waiter that gets the lock within a second or two of a release was woken.
var slowBackoff = rediskit.WithRetryBackoff(rediskit.ConstantBackoff(5 * time.Second))

// acquisition is the outcome of a background AcquireWithTimeout.
type acquisition struct {
	lk  *rediskit.Lock
	err error
	at  time.Time // when AcquireWithTimeout returned
}

// bgWaiter is an AcquireWithTimeout running on its own goroutine. The test
// that starts it ends it: its cleanup cancels the wait, waits for the
// goroutine and releases a lock it got, so no goroutine outlives the test.
type bgWaiter struct {
	done   chan acquisition
	cancel context.CancelFunc
	res    acquisition
	got    bool
}

// startWaiter starts l.AcquireWithTimeout(key, ttl, timeout) in the
// background. Call it after newLocker, so that its cleanup runs before the
// Locker is closed.
func startWaiter(t *testing.T, l *rediskit.Locker, key string, ttl, timeout time.Duration) *bgWaiter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &bgWaiter{done: make(chan acquisition, 1), cancel: cancel}
	go func() {
		lk, err := l.AcquireWithTimeout(ctx, key, ttl, timeout)
		w.done <- acquisition{lk: lk, err: err, at: time.Now()}
	}()
	t.Cleanup(func() {
		w.cancel()
		if res, ok := w.wait(time.Minute); ok && res.lk != nil {
			_ = res.lk.Release(context.Background())
		}
	})
	return w
}

// wait returns the waiter's outcome, or false if it has none within d.
func (w *bgWaiter) wait(d time.Duration) (acquisition, bool) {
	if w.got {
		return w.res, true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case w.res = <-w.done:
		w.got = true
		return w.res, true
	case <-t.C:
		return acquisition{}, false
	}
}

// assertWokenBy checks that w obtained its lock within limit of released, a
// release that only a wake-up can hand over that fast. Past limit plus a
// second it stops waiting, so a failing run does not sit out the backoff.
func assertWokenBy(t *testing.T, w *bgWaiter, released time.Time, limit time.Duration, what string) bool {
	t.Helper()
	res, ok := w.wait(time.Until(released.Add(limit + time.Second)))
	if !ok {
		return assert.Fail(t, fmt.Sprintf("%s: not obtained within %v of the release (backoff 20 s): the wake-up was lost", what, limit+time.Second))
	}
	if !assert.NoError(t, res.err, what) {
		return false
	}
	return assert.Less(t, res.at.Sub(released), limit, "%s: obtained %v after the release", what, res.at.Sub(released))
}

// contendedCounter returns an Option counting EventContended, one per
// attempt that found the lock held, and the count's reader.
func contendedCounter() (rediskit.Option, func() int64) {
	var n atomic.Int64
	return rediskit.WithHook(func(e rediskit.Event) {
		if e.Kind == rediskit.EventContended {
			n.Add(1)
		}
	}), n.Load
}

// errInjected is the error the test hooks make go-redis commands fail with.
var errInjected = errors.New("injected failure")

// errInjectedReply is an error reply from Redis that no wait can outlast,
// as a script error would be: it ends the wait that gets it.
var errInjectedReply error = injectedReply("ERR injected failure")

type injectedReply string

func (e injectedReply) Error() string { return string(e) }
func (injectedReply) RedisError()     {}

// scriptNumKeys returns the number of keys of an EVAL or EVALSHA command, or
// -1 for any other command. It tells the package's scripts apart: acquire
// has 2 keys, the others 1.
func scriptNumKeys(cmd redis.Cmder) int {
	args := cmd.Args()
	if n := cmd.Name(); (n != "evalsha" && n != "eval") || len(args) < 3 {
		return -1
	}
	k, err := strconv.Atoi(fmt.Sprint(args[2]))
	if err != nil {
		return -1
	}
	return k
}

// failNextScript is a go-redis hook that, once armed, fails the next script
// command with errInjected, as a connection reset would, and lets the rest
// through.
type failNextScript struct{ armed atomic.Bool }

func (h *failNextScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failNextScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if scriptNumKeys(cmd) >= 0 && h.armed.CompareAndSwap(true, false) {
			cmd.SetErr(errInjectedReply)
			return errInjectedReply
		}
		return next(ctx, cmd)
	}
}
func (h *failNextScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// breakAfterAcquire is a go-redis hook for a node whose connection breaks
// right after it granted a lock: once an acquire script succeeds, every
// command fails with errInjected until repair.
type breakAfterAcquire struct{ broken atomic.Bool }

func (h *breakAfterAcquire) repair() { h.broken.Store(false) }

func (h *breakAfterAcquire) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *breakAfterAcquire) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.broken.Load() {
			cmd.SetErr(errInjected)
			return errInjected
		}
		err := next(ctx, cmd)
		if err == nil && scriptNumKeys(cmd) == 2 {
			h.broken.Store(true)
		}
		return err
	}
}
func (h *breakAfterAcquire) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.broken.Load() {
			for _, cmd := range cmds {
				cmd.SetErr(errInjected)
			}
			return errInjected
		}
		return next(ctx, cmds)
	}
}

// ---- Redis Cluster helpers -------------------------------------------------

// clusterClient returns a client of the real Cluster of REDISKIT_CLUSTER_ADDRS,
// closed when the test ends, or skips the test when the variable is unset.
// edit, if not nil, adjusts the options first.
func clusterClient(t *testing.T, edit func(*redis.ClusterOptions)) *redis.ClusterClient {
	t.Helper()
	addrs := os.Getenv(envCluster)
	if addrs == "" {
		t.Skipf("set %s to run against a real Redis Cluster", envCluster)
	}
	opts := &redis.ClusterOptions{Addrs: strings.Split(addrs, ",")}
	if edit != nil {
		edit(opts)
	}
	cc := redis.NewClusterClient(opts)
	t.Cleanup(func() { _ = cc.Close() })
	require.NoError(t, cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
		return c.Ping(ctx).Err()
	}))
	return cc
}

// clusterMaster is one master of the Cluster, with a connection of its own.
type clusterMaster struct {
	addr, id string
	c        *redis.Client
}

// clusterMasters returns the Cluster's masters, sorted by address.
func clusterMasters(t *testing.T, cc *redis.ClusterClient) []clusterMaster {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var addrs []string
	require.NoError(t, cc.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		addrs = append(addrs, c.Options().Addr)
		return nil
	}))
	sort.Strings(addrs)
	require.GreaterOrEqual(t, len(addrs), 2, "the Cluster needs two masters")
	out := make([]clusterMaster, len(addrs))
	for i, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		t.Cleanup(func() { _ = c.Close() })
		id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
		require.NoError(t, err)
		out[i] = clusterMaster{addr: a, id: id, c: c}
	}
	return out
}

// keysOn returns n keys, starting with prefix, in n distinct slots all
// served by the master at addr.
func keysOn(t *testing.T, cc *redis.ClusterClient, prefix, addr string, n int) []string {
	t.Helper()
	slots := map[int]bool{}
	var keys []string
	for i := 0; len(keys) < n && i < 100000; i++ {
		key := fmt.Sprintf("%s%d", prefix, i)
		if slots[rediskit.KeySlot(key)] {
			continue
		}
		node, err := cc.MasterForKey(context.Background(), key)
		require.NoError(t, err)
		if node.Options().Addr == addr {
			slots[rediskit.KeySlot(key)] = true
			keys = append(keys, key)
		}
	}
	require.Len(t, keys, n)
	return keys
}

// channelOf is the channel on which l's waiters for a lock (no prefix) are
// woken.
func channelOf(l *rediskit.Locker, key string) string { return rediskit.LockerChannel(l, key) }

// shardSubscribers returns SHARDNUMSUB of channel on one node.
func shardSubscribers(t *testing.T, c *redis.Client, channel string) int64 {
	t.Helper()
	m, err := c.PubSubShardNumSub(context.Background(), channel).Result()
	require.NoError(t, err)
	return m[channel]
}

// eventually polls cond every 20 ms until it holds or d has passed, and
// reports whether it held.
func eventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

func uniquePrefix(name string) string {
	return fmt.Sprintf("rktest:%s:%d:%d:", name, time.Now().UnixNano(), testSeq.Add(1))
}

// ---- 1 -----------------------------------------------------------------------

// After the Cluster's pub/sub connections are killed, the waiters on two
// keys in different slots of one node must still be woken by releases. The
// library subscribes each channel separately; go-redis resubscribes them in
// one SSUBSCRIBE, which Redis rejects with CROSSSLOT, so today nothing is
// subscribed again and the waiters are left on their 20 s backoff.
func TestReview1ClusterResubscribeAfterDrop(t *testing.T) {
	holderClient := clusterClient(t, nil)
	waiterClient := clusterClient(t, nil)
	ctx := context.Background()
	masters := clusterMasters(t, holderClient)
	node := masters[0]
	keys := keysOn(t, holderClient, uniquePrefix("r1"), node.addr, 2)

	holders := newLocker(t, holderClient)
	held := make([]*rediskit.Lock, len(keys))
	for i, key := range keys {
		var err error
		held[i], err = holders.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
	}
	l := newLocker(t, waiterClient, slowBackoff)
	waiters := make([]*bgWaiter, len(keys))
	for i, key := range keys {
		waiters[i] = startWaiter(t, l, key, time.Minute, 30*time.Second)
	}
	for _, key := range keys {
		key := key
		require.True(t, eventually(3*time.Second, func() bool { return shardSubscribers(t, node.c, channelOf(l, key)) == 1 }),
			"the waiter on %s subscribes", key)
	}

	for _, m := range masters {
		require.NoError(t, m.c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	}
	// Time to reconnect and resubscribe; the waiters, woken by the drop,
	// retry and go back to sleep.
	time.Sleep(1500 * time.Millisecond)
	for _, key := range keys {
		key := key
		assert.True(t, eventually(time.Second, func() bool { return shardSubscribers(t, node.c, channelOf(l, key)) == 1 }),
			"SHARDNUMSUB %s after the drop: %d, want 1", channelOf(l, key), shardSubscribers(t, node.c, channelOf(l, key)))
	}

	for i, key := range keys {
		released := time.Now()
		require.NoError(t, held[i].Release(ctx))
		assertWokenBy(t, waiters[i], released, 2*time.Second, "waiter on "+key)
	}
}

// ---- 2 -----------------------------------------------------------------------

// A release wakes waiter A, the oldest, while A gives up; B, queued behind
// A, must then get the wake-up and the free lock at once. Today A can
// consume the wake-up and leave, so B sleeps out its backoff.
func TestReview2WakeupPassedOnWhenWaiterGivesUp(t *testing.T) {
	// A's ctx is cancelled while its wake-up is pending: pause picks one of
	// the two at random, so today about half the trials lose the wake-up.
	t.Run("ctx cancelled", func(t *testing.T) {
		for trial := 1; trial <= 10; trial++ {
			if !handOffTrial(t, trial, false) {
				break // one lost wake-up is the failure; spare the rest
			}
		}
	})
	// A's next attempt after the wake-up fails with an error: today the
	// wake-up is lost every time. Since waiters queue in Redis, the release
	// hands the lock over to A (another process's waiter that listens) for
	// the claim bound, and the attempt that fails is the one A confirms it
	// with: A gives up, releasing the lock, and B gets it.
	t.Run("next attempt fails", func(t *testing.T) {
		for trial := 1; trial <= 10; trial++ {
			if !handOffTrial(t, trial, true) {
				break
			}
		}
	})
}

// handOffTrial runs one trial of TestReview2 on a fresh miniredis and
// reports whether B was handed the lock promptly.
func handOffTrial(t *testing.T, trial int, failAttempt bool) bool {
	t.Helper()
	ctx := context.Background()
	holderClient, mr := onMiniredis(t)
	fail := &failNextScript{}
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	client.AddHook(fail)
	t.Cleanup(func() { _ = client.Close() })
	key := fmt.Sprintf("handoff:%d", trial)
	holder, err := newLocker(t, holderClient).TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)

	actx, cancelA := context.WithCancel(ctx)
	defer cancelA()
	var (
		contended atomic.Int64
		b         *bgWaiter
		released  time.Time
		relErr    error
	)
	var l *rediskit.Locker
	// A's second contended attempt is its first after subscribing: A is
	// about to sleep, the only waiter of its channel. B cannot have
	// attempted yet: queued behind A, it waits for its turn. The hook runs
	// on A's goroutine, so all of this happens before A sleeps.
	hook := rediskit.WithHook(func(e rediskit.Event) {
		if e.Kind != rediskit.EventContended || contended.Add(1) != 2 {
			return
		}
		b = startWaiter(t, l, key, time.Minute, 30*time.Second)
		time.Sleep(150 * time.Millisecond) // B queues behind A
		released = time.Now()
		relErr = holder.Release(ctx)
		time.Sleep(150 * time.Millisecond) // the release's message wakes A
		if failAttempt {
			fail.armed.Store(true)
		} else {
			cancelA()
		}
	})
	l = newLocker(t, client, slowBackoff, hook)

	lkA, errA := l.AcquireWithTimeout(actx, key, time.Minute, 30*time.Second)
	if lkA != nil {
		_ = lkA.Release(ctx)
	}
	require.NotNil(t, b, "trial %d: A never waited", trial)
	require.NoError(t, relErr, "trial %d", trial)
	if failAttempt {
		require.ErrorIs(t, errA, errInjectedReply, "trial %d: A's attempt after the wake-up fails", trial)
	} else {
		require.ErrorIs(t, errA, context.Canceled, "trial %d: A gives up", trial)
	}
	return assertWokenBy(t, b, released, 2*time.Second, fmt.Sprintf("trial %d: B, next in line", trial))
}

// ---- 3 -----------------------------------------------------------------------

// A Redlock waiter that takes only node 0 releases it again, which publishes
// on node 0, where the Locker listens: today it wakes itself and retries at
// once, hundreds of times a second. Its attempts must stay within what the
// backoff allows.
func TestReview3RedlockMinorityDoesNotWakeItself(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		ctx := context.Background()
		key := s.key("minority-spin")
		// Another owner holds the majority, nodes 1 and 2; node 0 is free.
		for _, c := range s.clients[1:] {
			require.NoError(t, c.Set(ctx, key, "other", time.Minute).Err())
		}
		t.Cleanup(func() {
			for _, c := range s.clients {
				_ = c.Del(context.Background(), key).Err()
			}
		})
		count, attempts := contendedCounter()
		l := newRedlock(t, s.universal(), rediskit.WithRetryBackoff(rediskit.ConstantBackoff(200*time.Millisecond)), count)
		before := s.commands(t, 0)
		_, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Second)
		require.ErrorIs(t, err, rediskit.ErrNotObtained)
		// 1 s at a 200 ms backoff (800 ms once subscribed) is a few
		// attempts; 8 leaves room for a random split-vote delay.
		assert.LessOrEqual(t, attempts(), int64(8), "attempts in 1 s with a 200 ms backoff")
		// The same seen from node 0, whatever the events say: two scripts
		// an attempt, plus NOSCRIPT fallbacks, the (un)subscription and
		// the connections' handshakes (about 40 for 4 attempts when the
		// waiter does not wake itself; today over a thousand).
		assert.LessOrEqual(t, s.commands(t, 0)-before, int64(80), "commands on node 0 in 1 s")
	})
}

// commands returns how many commands node i has processed.
func (s *redlockSet) commands(t *testing.T, i int) int64 {
	t.Helper()
	if s.mrs != nil {
		return int64(s.mrs[i].CommandCount())
	}
	info, err := s.clients[i].Info(context.Background(), "stats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	require.FailNow(t, "no total_commands_processed in INFO stats")
	return 0
}

// ---- 4 -----------------------------------------------------------------------

// Redlock TTLs too short for the 10 ms per-node timeout plus the drift
// allowance cannot work: they must be refused with ErrInvalidArgument at
// once. Today a 2 ms TTL is ErrNotObtained on free nodes, after a spin when
// waited for, and 10 ms is accepted. 2 and 10 ms are below any sensible
// minimum (12 to 50 ms), 100 ms above it.
func TestReview4RedlockUnworkableTTLRejected(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		ctx := context.Background()
		count, attempts := contendedCounter()
		l := newRedlock(t, s.universal(), count)
		for _, ttl := range []time.Duration{2 * time.Millisecond, 10 * time.Millisecond} {
			lk, err := l.TryAcquire(ctx, s.key(fmt.Sprintf("short:%v", ttl)), ttl)
			assert.ErrorIs(t, err, rediskit.ErrInvalidArgument, "TryAcquire with ttl %v on free nodes", ttl)
			if lk != nil {
				_ = lk.Release(ctx)
			}
		}

		start := time.Now()
		_, err := l.AcquireWithTimeout(ctx, s.key("short:wait"), 2*time.Millisecond, 300*time.Millisecond)
		assert.ErrorIs(t, err, rediskit.ErrInvalidArgument, "a wait with a 2 ms ttl")
		assert.LessOrEqual(t, attempts(), int64(5), "attempts of the waits with a 2 ms ttl")
		assert.Less(t, time.Since(start), 150*time.Millisecond, "refused at once, not after the wait")

		// A 100 ms TTL gives each node 20 ms. The first call on these
		// clients also dials and loads the scripts, and a loaded CI machine
		// can stall a round trip past 20 ms: warm the clients with a long
		// TTL, then allow a few tries. What may not happen is a refusal.
		warm, err := l.TryAcquire(ctx, s.key("warm"), time.Minute)
		require.NoError(t, err, "a one-minute ttl")
		require.NoError(t, warm.Release(ctx))
		for try := 1; ; try++ {
			lk, err := l.TryAcquire(ctx, s.key("workable"), 100*time.Millisecond)
			require.NotErrorIs(t, err, rediskit.ErrInvalidArgument, "a 100 ms ttl is refused")
			if err == nil {
				_ = lk.Release(ctx)
				break
			}
			require.Less(t, try, 5, "a 100 ms ttl never obtained: %v", err)
			t.Logf("try %d with a 100 ms ttl: %v", try, err)
			time.Sleep(100 * time.Millisecond) // what a failed try took expires
		}
	})
}

// ---- 5 -----------------------------------------------------------------------

// A Redlock fence must exceed every earlier one. The first holder's fence
// comes from node 0, 10 s ahead of the others (its clock on miniredis, its
// counter on real servers), and is granted by nodes 0 and 1 (2 is down);
// the write-back of that fence to node 1 fails, and today the lock is
// returned all the same. The next majority, nodes 1 and 2, then issues a
// lower fence. Fixed, either the write-back succeeds on a majority or the
// first acquisition fails: the fences that are handed out increase.
func TestReview5RedlockFencesNeverGoBackwards(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		ctx := context.Background()
		key := s.key("fence-back")
		if s.mrs != nil {
			s.mrs[0].SetTime(time.Now().Add(10 * time.Second))
		} else {
			ahead := time.Now().Add(10 * time.Second).UnixMicro()
			require.NoError(t, s.clients[0].Set(ctx, rediskit.CompanionKey(key, ":fence"), ahead, time.Hour).Err())
		}
		broken := &breakAfterAcquire{}
		node1 := redis.NewClient(&redis.Options{Addr: s.clients[1].Options().Addr})
		node1.AddHook(broken)
		dead := s.deadClient(1)
		t.Cleanup(func() { _ = node1.Close(); _ = dead.Close() })

		var fences []int64
		first, err := newRedlock(t, []redis.UniversalClient{s.clients[0], node1, dead}).TryAcquire(ctx, key, time.Minute)
		broken.repair()
		if err == nil {
			fences = append(fences, first.Fence())
			assert.NoError(t, first.Release(ctx))
		} else {
			t.Logf("first acquisition refused (the fix's other branch): %v", err)
		}
		// Whatever of the first lock is left (a failed undo) expires: fences
		// must increase across expired holders too.
		for _, c := range s.clients {
			require.NoError(t, c.Del(ctx, key).Err())
		}

		second, err := newRedlock(t, []redis.UniversalClient{dead, s.clients[1], s.clients[2]}).TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		fences = append(fences, second.Fence())
		assert.NoError(t, second.Release(ctx))
		for i := 1; i < len(fences); i++ {
			assert.Greater(t, fences[i], fences[i-1], "fence of holder %d after holder %d's", i+1, i)
		}
	})
}

// ---- 6 -----------------------------------------------------------------------

// ConstantBackoff(math.MaxInt64), "wake-ups only", must not overflow into a
// negative sleep: over 300 ms, a handful of attempts, not hundreds.
func TestReview6HugeBackoffDoesNotSpin(t *testing.T) {
	client, _ := onMiniredis(t)
	ctx := context.Background()
	_, err := newLocker(t, client).TryAcquire(ctx, "huge", time.Minute)
	require.NoError(t, err)
	count, attempts := contendedCounter()
	l := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(math.MaxInt64)), count)
	_, err = l.AcquireWithTimeout(ctx, "huge", time.Minute, 300*time.Millisecond)
	require.ErrorIs(t, err, rediskit.ErrNotObtained)
	assert.LessOrEqual(t, attempts(), int64(5), "attempts in 300 ms")
}

// ---- 7 -----------------------------------------------------------------------

// GetMany's docs say a Redis error fails the whole call. With one key
// holding a list (WRONGTYPE), one absent and one present, every order of
// the keys must give an error and no values. Today an absent key before the
// list hides the error from the pipeline check, and the present key comes
// back with a joined error.
func TestReview7GetManyErrorIndependentOfOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		c := newCache[int](t, b.client)
		t.Cleanup(func() { _ = c.Close() })
		list, absent, present := b.key("list"), b.key("absent"), b.key("present")
		require.NoError(t, b.client.RPush(ctx, list, "x").Err())
		require.NoError(t, c.Set(ctx, present, 7, time.Minute))
		name := map[string]string{list: "list", absent: "absent", present: "present"}

		for _, order := range [][]string{
			{list, absent, present}, {list, present, absent},
			{absent, list, present}, {absent, present, list},
			{present, list, absent}, {present, absent, list},
		} {
			desc := fmt.Sprintf("(%s, %s, %s)", name[order[0]], name[order[1]], name[order[2]])
			got, err := c.GetMany(ctx, order...)
			assert.Error(t, err, desc)
			assert.Empty(t, got, "%s: a Redis error fails the whole call", desc)
		}
	})
}

// ---- 8 -----------------------------------------------------------------------

// With node TTLs of no expiry, a minute and a second, a majority holds the
// lock for at least a minute: TTL must say so. Today "no expiry" (-1) sorts
// as the shortest and TTL reports the second.
func TestReview8RedlockTTLNoExpiryIsLongest(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		ctx := context.Background()
		key := s.key("ttl-persist")
		lk, err := newRedlock(t, s.universal()).TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		t.Cleanup(func() { _ = lk.Release(context.Background()) })
		require.True(t, s.clients[0].Persist(ctx, key).Val())
		require.True(t, s.clients[1].PExpire(ctx, key, time.Minute).Val())
		require.True(t, s.clients[2].PExpire(ctx, key, time.Second).Val())

		ttl, err := lk.TTL(ctx)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, ttl, 55*time.Second, "held for at least a minute by nodes 0 and 1")
	})
}

// ---- 9 -----------------------------------------------------------------------

// When the slot of a waited-on key moves to another master, Redis 7 sends the
// subscriber an sunsubscribe for the slot's channels. The waiter must still
// be woken by the release, which is now published on the new master. Today
// the library ignores the sunsubscribe and the waiter sleeps out its backoff.
// The holder and the waiter have clients of their own, as two processes
// would. The slot is moved back when the test ends.
func TestReview9SlotMigrationKeepsWaking(t *testing.T) {
	holderClient := clusterClient(t, nil)
	waiterClient := clusterClient(t, nil)
	ctx := context.Background()
	masters := clusterMasters(t, holderClient)
	src, dst := masters[0], masters[1]
	key := keysOn(t, holderClient, uniquePrefix("r9"), src.addr, 1)[0]
	slot := rediskit.KeySlot(key)

	holder, err := newLocker(t, holderClient).TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)
	// Registered before the waiter's Locker, so that it runs after the
	// Locker is closed: the slot goes home whatever happened.
	moved := false
	t.Cleanup(func() {
		if moved {
			restoreSlot(t, slot, src, dst, masters)
		}
	})
	l := newLocker(t, waiterClient, slowBackoff)
	w := startWaiter(t, l, key, time.Minute, 30*time.Second)
	require.True(t, eventually(3*time.Second, func() bool { return shardSubscribers(t, src.c, channelOf(l, key)) == 1 }),
		"the waiter subscribes on %s", src.addr)

	moved = true
	require.NoError(t, migrateSlot(ctx, slot, src, dst, masters))
	t.Logf("slot %d moved from %s to %s; SHARDNUMSUB there now %d", slot, src.addr, dst.addr,
		shardSubscribers(t, src.c, channelOf(l, key)))
	time.Sleep(1500 * time.Millisecond) // time to follow the slot

	released := time.Now()
	require.NoError(t, holder.Release(ctx))
	assertWokenBy(t, w, released, 2*time.Second, "waiter on the moved slot")
}

// restoreSlot gives slot back to home after a migration to away, finished
// or not: a half-done one is cancelled first.
func restoreSlot(t *testing.T, slot int, home, away clusterMaster, masters []clusterMaster) {
	t.Helper()
	ctx := context.Background()
	for _, m := range []clusterMaster{home, away} {
		assert.NoError(t, m.c.Do(ctx, "CLUSTER", "SETSLOT", slot, "STABLE").Err())
	}
	slots, err := home.c.ClusterSlots(ctx).Result()
	require.NoError(t, err)
	for _, r := range slots {
		if slot >= r.Start && slot <= r.End && len(r.Nodes) > 0 && r.Nodes[0].Addr == away.addr {
			require.NoError(t, migrateSlot(ctx, slot, away, home, masters), "moving slot %d back to %s", slot, home.addr)
		}
	}
}

// migrateSlot moves slot from one master to another, keys included, the way
// redis-cli --cluster reshard does, and tells every master the new owner.
func migrateSlot(ctx context.Context, slot int, from, to clusterMaster, masters []clusterMaster) error {
	if err := to.c.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", from.id).Err(); err != nil {
		return fmt.Errorf("importing: %w", err)
	}
	if err := from.c.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.id).Err(); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	host, port, err := net.SplitHostPort(to.addr)
	if err != nil {
		return err
	}
	for {
		keys, err := from.c.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		if err != nil {
			return fmt.Errorf("getkeysinslot: %w", err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := from.c.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	// The new owner first, then the old one, then the rest.
	order := []clusterMaster{to, from}
	for _, m := range masters {
		if m.addr != to.addr && m.addr != from.addr {
			order = append(order, m)
		}
	}
	for _, m := range order {
		if err := m.c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", to.id).Err(); err != nil {
			return fmt.Errorf("setslot node on %s: %w", m.addr, err)
		}
	}
	return nil
}

// ---- 10 ----------------------------------------------------------------------

// dialGate is a Dialer for which one address can be made unreachable: a
// dial to it hangs, as to a host that drops packets, until its ctx ends,
// the dial timeout passes, or the gate opens.
type dialGate struct {
	mu      sync.Mutex
	blocked string
	open    chan struct{}
}

func newDialGate() *dialGate { return &dialGate{open: make(chan struct{})} }

func (g *dialGate) block(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.blocked = addr
}

// unblock makes the address reachable again and ends the hanging dials.
func (g *dialGate) unblock() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.blocked != "" {
		g.blocked = ""
		close(g.open)
	}
}

func (g *dialGate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	g.mu.Lock()
	blocked, open := g.blocked == addr, g.open
	g.mu.Unlock()
	const timeout = 5 * time.Second // go-redis's default DialTimeout
	if blocked {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-open:
			return nil, fmt.Errorf("dial %s: unreachable", addr)
		case <-t.C:
			return nil, fmt.Errorf("dial %s: i/o timeout", addr)
		}
	}
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(ctx, network, addr)
}

// While the Locker's pub/sub connection to node X reconnects to an
// unreachable X, a waiter on a key of node Y must still be woken promptly
// by a release. Today a new waiter on X holds the notifier's mutex while its
// SSUBSCRIBE waits behind the reconnect's dial, and Y's wake-up waits for
// the mutex.
func TestReview10UnreachableNodeDoesNotStallOthers(t *testing.T) {
	holderClient := clusterClient(t, nil)
	gate := newDialGate()
	waiterClient := clusterClient(t, func(o *redis.ClusterOptions) { o.Dialer = gate.dial })
	ctx := context.Background()
	masters := clusterMasters(t, holderClient)
	x, y := masters[0], masters[1]
	onX := keysOn(t, holderClient, uniquePrefix("r10x"), x.addr, 2)
	onY := keysOn(t, holderClient, uniquePrefix("r10y"), y.addr, 1)[0]

	holders := newLocker(t, holderClient)
	held := map[string]*rediskit.Lock{}
	for _, key := range append([]string{onY}, onX...) {
		lk, err := holders.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		held[key] = lk
	}
	// Pooled connections to every node while all are reachable, so that
	// the waiters' attempts on X need no dial later.
	for i := 0; i < 3; i++ {
		require.NoError(t, waiterClient.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		}))
	}

	l := newLocker(t, waiterClient, slowBackoff)
	wy := startWaiter(t, l, onY, time.Minute, 30*time.Second)
	startWaiter(t, l, onX[0], time.Minute, 30*time.Second)
	require.True(t, eventually(3*time.Second, func() bool {
		return shardSubscribers(t, y.c, channelOf(l, onY)) == 1 && shardSubscribers(t, x.c, channelOf(l, onX[0])) == 1
	}), "both waiters subscribe")

	// X becomes unreachable and its pub/sub connection drops: the Locker
	// reconnects, and that dial hangs.
	gate.block(x.addr)
	require.NoError(t, x.c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	time.Sleep(300 * time.Millisecond)
	// A new waiter on X subscribes a new channel on the reconnecting
	// connection.
	startWaiter(t, l, onX[1], time.Minute, 30*time.Second)
	// Registered after the waiters, so it runs before their cleanups: a
	// failing run ends the hanging dial instead of waiting it out.
	t.Cleanup(gate.unblock)
	time.Sleep(300 * time.Millisecond)

	released := time.Now()
	require.NoError(t, held[onY].Release(ctx))
	assertWokenBy(t, wy, released, time.Second, "waiter on node Y")
}
