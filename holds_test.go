package rediskit_test

import (
	"context"
	"fmt"
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

// Waiting in process behind a lock the waiter's own Locker holds
// (holds.go), under the faults and timings a review found it failed.

// orderedWaits runs acquisitions of key, each holding the lock for hold,
// and records the order they got it in.
type orderedWaits struct {
	t     *testing.T
	ctx   context.Context
	key   string
	hold  time.Duration
	mu    sync.Mutex
	order []string
	wg    sync.WaitGroup
}

func (o *orderedWaits) wait(l *rediskit.Locker, name string) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		lk, err := l.AcquireWithTimeout(o.ctx, o.key, time.Minute, 8*time.Second)
		if !assert.NoError(o.t, err, name) {
			return
		}
		o.mu.Lock()
		o.order = append(o.order, name)
		o.mu.Unlock()
		time.Sleep(o.hold)
		assert.NoError(o.t, lk.Release(o.ctx), name)
	}()
}

func (o *orderedWaits) done() []string {
	o.wg.Wait()
	return o.order
}

// waitInProcess starts an acquisition of key through l, which holds it,
// waiting up to timeout and releasing the lock once it has it, and
// returns once the acquisition waits in process; the channel gets its
// error.
func waitInProcess(t *testing.T, ctx context.Context, l *rediskit.Locker, key string, timeout time.Duration) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, timeout)
		if err == nil {
			err = lk.Release(ctx)
		}
		done <- err
	}()
	require.Eventually(t, func() bool { return rediskit.LocalWaiters(l, key) == 1 },
		5*time.Second, time.Millisecond, "the waiter waits in process")
	return done
}

// A release that is never sent (its ctx had ended: a deferred Release
// with a request's cancelled context) does not keep the waiters in
// process waiting: they look for themselves at once, and take the lock
// once it is gone (here another program deletes it).
func TestQueueLocalWaiterAfterUnsentRelease(t *testing.T) {
	// Only the release's outcome ends the wait in process early.
	defer rediskit.SetQueueTimes(time.Minute, 30*time.Second)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := wakeCtx(t)
		key := b.key("unsent-release")
		l := newLocker(t, b.client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(50*time.Millisecond)))
		holder, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		got := waitInProcess(t, ctx, l, key, 8*time.Second)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, holder.Release(cctx), context.Canceled)
		require.NoError(t, b.client.Del(ctx, key).Err())
		require.NoError(t, waitFor(t, got, 3*time.Second, "the waiter"))
	})
}

// A waiter that waited in process longer than queueBeat, and then joins
// the queue, keeps the place its arrival gives it: neither a waiter of
// another process that came later nor one of its own goes first.
func TestQueueLocalWaiterKeepsPlaceAfterBeat(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if b.mr != nil {
			t.Skip("timed arrivals: real servers only")
		}
		ctx := wakeCtx(t)
		a := newLocker(t, b.client, noPolling)
		other := newLocker(t, b.another(t), noPolling)
		o := &orderedWaits{t: t, ctx: ctx, key: b.key("place-after-beat"), hold: 20 * time.Millisecond}
		holder, err := a.TryAcquire(ctx, o.key, time.Minute)
		require.NoError(t, err)
		t0 := time.Now()
		o.wait(a, "a1") // in process
		time.Sleep(100 * time.Millisecond)
		o.wait(other, "b1") // in the queue
		queued(t, b.client, o.key, 1)
		time.Sleep(time.Until(t0.Add(350 * time.Millisecond)))
		o.wait(a, "a2") // in process
		// a1 stops waiting in process at 500 ms, and queues.
		time.Sleep(time.Until(t0.Add(750 * time.Millisecond)))
		require.NoError(t, holder.Release(ctx))
		assert.Equal(t, []string{"a1", "b1", "a2"}, o.done())
		assertNothingLeft(t, b.client, o.key)
	})
}

// When the lock leaves the Locker, its waiters in process keep their
// places, those past the ones the release names (maxNamed) included: they
// join the queue by their own attempts, at the places their arrivals give
// them, ahead of a waiter of another process that came after them.
func TestQueueLocalWaitersBeyondNamedKeepPlace(t *testing.T) {
	defer rediskit.SetQueueTimes(time.Minute, 30*time.Second)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		if b.mr != nil {
			t.Skip("timed arrivals: real servers only")
		}
		ctx := wakeCtx(t)
		a := newLocker(t, b.client, noPolling)
		other := newLocker(t, b.another(t), noPolling)
		o := &orderedWaits{t: t, ctx: ctx, key: b.key("beyond-named")}
		holder, err := a.TryAcquire(ctx, o.key, time.Minute)
		require.NoError(t, err)
		o.wait(other, "r1")
		queued(t, b.client, o.key, 1)
		want := []string{"r1"}
		for i := 1; i <= rediskit.MaxNamed+2; i++ {
			name := fmt.Sprintf("a%02d", i)
			o.wait(a, name)
			want = append(want, name)
			require.Eventually(t, func() bool { return rediskit.LocalWaiters(a, o.key) == i },
				5*time.Second, time.Millisecond)
			time.Sleep(3 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		o.wait(other, "r2")
		want = append(want, "r2")
		queued(t, b.client, o.key, 2)
		require.NoError(t, holder.Release(ctx))
		// The ones past the named join the queue by attempts of their
		// own, each placed by its own age: among themselves, arrivals
		// closer together than their attempts' delays may swap.
		got := o.done()
		named := 1 + rediskit.MaxNamed
		assert.Equal(t, want[:named], got[:named])
		assert.ElementsMatch(t, want[named:len(want)-1], got[named:len(got)-1])
		assert.Equal(t, "r2", got[len(got)-1])
		assertNothingLeft(t, b.client, o.key)
	})
}

// A waiter in process that a release named, and handed the lock over to in
// Redis, does not wait for the release's slow reply: after queueBeat it
// looks for itself, and finds the lock handed over to it.
func TestQueueLocalWaiterNotHeldUpBySlowRelease(t *testing.T) {
	addr := requireStandalone(t)
	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = client.Close() })
	h := &oneSlowRelease{d: 3 * time.Second}
	client.AddHook(h)
	ctx := context.Background()
	key := fmt.Sprintf("rkholds:slow:%d", time.Now().UnixNano())
	l := newLocker(t, client, noPolling)
	warm, err := l.TryAcquire(ctx, key+":warm", time.Minute) // the scripts loaded
	require.NoError(t, err)
	require.NoError(t, warm.Release(ctx))
	holder, err := l.TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)
	start := time.Now()
	got := make(chan *rediskit.Lock, 1)
	go func() {
		lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, 2*time.Second)
		assert.NoError(t, err, "handed the lock in Redis, the waiter never took it")
		got <- lk
	}()
	require.Eventually(t, func() bool { return rediskit.LocalWaiters(l, key) == 1 },
		5*time.Second, time.Millisecond, "the waiter waits in process")
	h.armed.Store(true)
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	require.ErrorIs(t, holder.Release(rctx), context.DeadlineExceeded, "the release's reply was held")
	cancel()
	lk := waitFor(t, got, 10*time.Second, "the waiter")
	assert.Less(t, time.Since(start), 1500*time.Millisecond, "the waiter waited for the release's reply")
	require.NotNil(t, lk)
	assert.Greater(t, lk.Fence(), holder.Fence())
	require.NoError(t, lk.Release(ctx))
	require.NoError(t, l.Close()) // waits for the held replies
}

// Goroutines of one Locker that waited in process past queueBeat join the
// queue in the order they came, however close together they came and
// however their first attempts race: the first attempt to reach Redis
// queues them all, at one instant.
func TestQueueLocalOrderAfterBeat(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if b.mr != nil {
			t.Skip("timed arrivals: real servers only")
		}
		for run := 0; run < 3; run++ {
			ctx := wakeCtx(t)
			a := newLocker(t, b.client, noPolling)
			o := &orderedWaits{t: t, ctx: ctx, key: b.key(fmt.Sprintf("order-after-beat-%d", run)), hold: time.Millisecond}
			holder, err := a.TryAcquire(ctx, o.key, time.Minute)
			require.NoError(t, err)
			var want []string
			for i := 1; i <= 8; i++ {
				name := fmt.Sprintf("a%d", i)
				o.wait(a, name)
				want = append(want, name)
				require.Eventually(t, func() bool { return rediskit.LocalWaiters(a, o.key) == i },
					5*time.Second, 50*time.Microsecond)
			}
			time.Sleep(800 * time.Millisecond) // past queueBeat: they queue
			require.NoError(t, holder.Release(ctx))
			assert.Equal(t, want, o.done(), "run %d", run)
			assertNothingLeft(t, b.client, o.key)
		}
	})
}

// oneSlowRelease holds back the reply of the next release script, once
// armed, for d after Redis ran it.
type oneSlowRelease struct {
	armed atomic.Bool
	d     time.Duration
}

func (h *oneSlowRelease) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *oneSlowRelease) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if scriptHash(cmd) == rediskit.ReleaseScriptHash && h.armed.CompareAndSwap(true, false) {
			time.Sleep(h.d)
		}
		return err
	}
}
func (h *oneSlowRelease) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A release's late reply, handing over a lock that has moved on since (its
// waiter took it by an attempt and released it), does not make the Locker
// think it still holds it: a later acquisition of the free lock is not
// kept waiting in process, and no other process takes it past that waiter.
func TestQueueLateReleaseReplyLeavesNoHold(t *testing.T) {
	addr := requireStandalone(t)
	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = client.Close() })
	h := &oneSlowRelease{d: 1500 * time.Millisecond}
	client.AddHook(h)
	otherClient := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = otherClient.Close() })
	ctx := context.Background()
	key := fmt.Sprintf("rkholds:late:%d", time.Now().UnixNano())
	l := newLocker(t, client, noPolling)
	other := newLocker(t, otherClient, noPolling)
	warm, err := l.TryAcquire(ctx, key+":warm", time.Minute) // the scripts loaded
	require.NoError(t, err)
	require.NoError(t, warm.Release(ctx))
	holder, err := l.TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)
	done := waitInProcess(t, ctx, l, key, 5*time.Second)
	h.armed.Store(true)
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	require.ErrorIs(t, holder.Release(rctx), context.DeadlineExceeded, "the release's reply was held")
	cancel()
	require.NoError(t, waitFor(t, done, 5*time.Second, "the waiter"))
	time.Sleep(1700 * time.Millisecond) // the held reply comes
	require.Zero(t, client.Exists(ctx, key).Val(), "nobody holds the lock")

	got := make(chan *rediskit.Lock, 1)
	go func() {
		lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, 5*time.Second)
		assert.NoError(t, err)
		got <- lk
	}()
	// One attempt, not a wait in process of queueBeat (500 ms) behind a
	// hold nobody has.
	lk := waitFor(t, got, 300*time.Millisecond, "the acquisition of the free lock")
	require.NotNil(t, lk)
	_, err = other.TryAcquire(ctx, key, time.Minute)
	assert.ErrorIs(t, err, rediskit.ErrNotObtained)
	require.NoError(t, lk.Release(ctx))
	require.NoError(t, l.Close())
}

// A waiter in process that a fellow waiter's first attempt put in the
// queue (its age carried by that attempt) and that gives up before its own
// leaves the queue: no entry of it is left for the lock to be handed to.
func TestQueueLocalWaiterQueuedByFellowLeaves(t *testing.T) {
	defer rediskit.SetQueueTimes(time.Minute, 200*time.Millisecond)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := wakeCtx(t)
		key := b.key("queued-by-fellow")
		a := newLocker(t, b.client, noPolling)
		holder, err := a.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		first := waitInProcess(t, ctx, a, key, 8*time.Second)
		time.Sleep(100 * time.Millisecond)
		wctx, cancel := context.WithCancel(ctx)
		second := make(chan error, 1)
		go func() {
			_, err := a.AcquireWithTimeout(wctx, key, time.Minute, 8*time.Second)
			second <- err
		}()
		// The first's attempt, at 200 ms, queues both; the second's own
		// would come 100 ms later.
		queued(t, b.client, key, 2)
		cancel()
		require.ErrorIs(t, waitFor(t, second, 5*time.Second, "the second waiter"), context.Canceled)
		require.NoError(t, holder.Release(ctx))
		require.NoError(t, waitFor(t, first, 5*time.Second, "the first waiter"))
		assertNothingLeft(t, b.client, key)
	})
}

// heldGroup holds back the first attempts that carry fellow waiters (see
// holds.go): the reply to the first until the second comes, so that each
// carries the other, and the second, before it is sent, until open is
// closed. The first is sent at once: held before it, the attempt would
// reach Redis as late as the second is made, and the ages it carries would
// place the first waiter as late as the second (the script counts an age
// from its run), so that a release could hand the lock over to either.
// Both go on once the test ends (ended is closed), so that a test that
// fails before it opens them reports, rather than its Locker's Close
// waiting for them for ever.
type heldGroup struct {
	mu            sync.Mutex
	n             int
	first, second string // the callers' entries
	secondIn      chan struct{}
	open          chan struct{}
	secondOut     chan struct{}
	ended         chan struct{}
}

func newHeldGroup() *heldGroup {
	return &heldGroup{secondIn: make(chan struct{}), open: make(chan struct{}), secondOut: make(chan struct{}),
		ended: make(chan struct{})}
}

// groupCaller returns the entry of the caller of an attempt that carries
// fellow waiters, or "".
func groupCaller(cmd redis.Cmder) string {
	if !isAttempt(cmd) {
		return ""
	}
	args := cmd.Args()
	nkeys, _ := args[2].(int)
	argv := args[3+nkeys:]
	entries := 0
	for _, a := range argv[min(4, len(argv)):] {
		if s, ok := a.(string); ok && strings.Count(s, ":") == 2 {
			entries++
		}
	}
	if entries < 2 {
		return ""
	}
	caller, _ := argv[2].(string)
	return caller
}

func (h *heldGroup) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *heldGroup) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		caller := groupCaller(cmd)
		if caller == "" {
			return next(ctx, cmd)
		}
		h.mu.Lock()
		h.n++
		n := h.n
		switch n {
		case 1:
			h.first = caller
		case 2:
			h.second = caller
			close(h.secondIn)
		}
		h.mu.Unlock()
		switch n {
		case 1:
			err := next(ctx, cmd)
			select {
			case <-h.secondIn:
			case <-h.ended:
			}
			return err
		case 2:
			select {
			case <-h.open:
			case <-h.ended:
			}
			defer close(h.secondOut)
		}
		return next(ctx, cmd)
	}
}
func (h *heldGroup) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// lateGroup is a fellow's first attempt that reaches Redis late: two
// goroutines of l wait in process behind holder, the elder first; their
// first attempts each carry the other, and the younger one's is held back
// by h until h.open is closed.
type lateGroup struct {
	ctx      context.Context
	key      string
	h        *heldGroup
	l        *rediskit.Locker
	holder   *rediskit.Lock
	elder    chan *rediskit.Lock // the elder's lock, or
	elderErr chan error          // its error
	younger  chan error          // the younger's error, once it released the lock
}

// lateGroupBeat is queueBeat in the tests of a lateGroup: the waiters'
// first attempts come a beat after each one's arrival.
const lateGroupBeat = 200 * time.Millisecond

// startLateGroup starts a lateGroup on b, the elder waiting elderWait at
// most, and returns once the younger's first attempt is held back.
func startLateGroup(t *testing.T, b *backend, name string, elderWait time.Duration) *lateGroup {
	g := &lateGroup{ctx: wakeCtx(t), key: b.key(name), h: newHeldGroup(),
		elder: make(chan *rediskit.Lock, 1), elderErr: make(chan error, 1), younger: make(chan error, 1)}
	b.client.AddHook(g.h)
	g.l = newLocker(t, b.client, noPolling)
	t.Cleanup(func() { close(g.h.ended) }) // before the Locker's Close
	var err error
	g.holder, err = g.l.TryAcquire(g.ctx, g.key, time.Minute)
	require.NoError(t, err)
	go func() {
		lk, err := g.l.AcquireWithTimeout(g.ctx, g.key, time.Minute, elderWait)
		if err != nil {
			g.elderErr <- err
			return
		}
		g.elder <- lk
	}()
	require.Eventually(t, func() bool { return rediskit.LocalWaiters(g.l, g.key) == 1 },
		5*time.Second, time.Millisecond, "the elder waits in process")
	// The younger comes half a beat later: before the elder's first
	// attempt, and late enough that the elder's arrival, as the attempt's
	// run places it, stays ahead of the younger's, as a release places it.
	time.Sleep(lateGroupBeat / 2)
	go func() {
		lk, err := g.l.AcquireWithTimeout(g.ctx, g.key, time.Minute, 5*time.Second)
		if err == nil {
			err = lk.Release(g.ctx)
		}
		g.younger <- err
	}()
	waitFor(t, g.h.secondIn, 5*time.Second, "the younger's first attempt")
	return g
}

// A fellow's first attempt that reaches Redis after a waiter it carries
// took the lock does not queue that waiter again: the holder's release
// would hand the lock over to its entry, where nobody takes it (it stayed
// there a minute, the TTL, and the younger waiter gave up).
func TestQueueLateGroupAttemptQueuesNoHolder(t *testing.T) {
	defer rediskit.SetQueueTimes(10*time.Second, lateGroupBeat)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		g := startLateGroup(t, b, "late-group-holder", 5*time.Second)
		// The elder's attempt queued both; the release hands the lock
		// over to the elder, which came first.
		require.NoError(t, g.holder.Release(g.ctx))
		lk := waitFor(t, g.elder, 5*time.Second, "the elder")
		close(g.h.open)
		waitFor(t, g.h.secondOut, 5*time.Second, "the younger's first attempt")
		token := b.client.Get(g.ctx, g.key).Val()
		for _, e := range b.client.ZRange(g.ctx, rediskit.QueueKey(g.key), 0, -1).Val() {
			assert.False(t, strings.HasSuffix(e, ":"+token), "the holder's entry %s is queued", e)
		}
		require.NoError(t, lk.Release(g.ctx))
		assert.NoError(t, waitFor(t, g.younger, 10*time.Second, "the younger"))
		assertNothingLeft(t, b.client, g.key)
	})
}

// A fellow's first attempt that reaches Redis after a waiter it carries
// gave up, and left, does not leave that waiter's entry in the queue: the
// fellow takes it out again once the attempt is done. (Left there, it
// was first in line for the entry's life, and the release handed it the
// lock, which nobody took for its TTL.)
func TestQueueLateGroupAttemptQueuesNoDeparted(t *testing.T) {
	defer rediskit.SetQueueTimes(10*time.Second, lateGroupBeat)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		g := startLateGroup(t, b, "late-group-departed", 2*lateGroupBeat)
		require.ErrorIs(t, waitFor(t, g.elderErr, 5*time.Second, "the elder"), rediskit.ErrNotObtained)
		close(g.h.open)
		waitFor(t, g.h.secondOut, 5*time.Second, "the younger's first attempt")
		q := rediskit.QueueKey(g.key)
		assert.Eventually(t, func() bool {
			return b.client.ZScore(g.ctx, q, g.h.first).Err() == redis.Nil
		}, time.Second, 5*time.Millisecond, "the elder's entry is left in the queue")
		require.NoError(t, g.holder.Release(g.ctx))
		assert.NoError(t, waitFor(t, g.younger, 10*time.Second, "the younger"))
		assertNothingLeft(t, b.client, g.key)
	})
}

// slowGroup holds the first attempt that carries fellow waiters back for
// d before sending it: the network holds it up past its caller's wait.
type slowGroup struct {
	once sync.Once
	d    time.Duration
	sent chan struct{} // closed once it has run
}

func (h *slowGroup) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *slowGroup) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		first := false
		if groupCaller(cmd) != "" {
			h.once.Do(func() { first = true })
		}
		if !first {
			return next(ctx, cmd)
		}
		time.Sleep(h.d)
		defer close(h.sent)
		return next(ctx, cmd)
	}
}
func (h *slowGroup) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A fellow's first attempt that had no reply before its caller gave up,
// and reached Redis after a waiter it carried gave up too, queues that
// waiter's entry again. The lock handed over to it then goes on at once,
// whether a release of the same Locker handed it over (it was set for the
// entry's TTL, a minute) or one of another process did (set for the claim
// bound, here 10 s, and told on the Locker's channel); and so does a lock
// kept for the entry as the head of the queue (the release of another
// process, which came when the entry was too old to be handed the lock,
// woke it, and the lock stayed free for no one but it, for its life).
func TestQueueLockHandedToDepartedGoesOn(t *testing.T) {
	defer rediskit.SetQueueTimes(10*time.Second, 30*time.Second)()
	for _, c := range []struct {
		name   string
		remote bool
		hold   time.Duration // the other process's
	}{{"same-locker", false, 0}, {"another-process", true, 0}, {"another-process-woken", true, 500 * time.Millisecond}} {
		name, remote := c.name, c.remote
		t.Run(name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b *backend) {
				ctx := wakeCtx(t)
				key := b.key("departed-" + name)
				h := &slowGroup{d: 1200 * time.Millisecond, sent: make(chan struct{})}
				b.client.AddHook(h)
				l := newLocker(t, b.client, noPolling)
				holder, err := l.TryAcquire(ctx, key, time.Minute)
				require.NoError(t, err)
				// A waiter of another process, queued first, which the
				// holder's release hands the lock to.
				var before chan *rediskit.Lock
				if remote {
					before = make(chan *rediskit.Lock, 1)
					m := newLocker(t, b.another(t), noPolling)
					go func() {
						lk, err := m.AcquireWithTimeout(ctx, key, time.Minute, 10*time.Second)
						assert.NoError(t, err)
						before <- lk
					}()
					require.Eventually(t, func() bool {
						return b.client.ZCard(ctx, rediskit.QueueKey(key)).Val() > 0
					}, 5*time.Second, time.Millisecond, "the other process's waiter queues")
				}
				elder := make(chan error, 1)
				go func() {
					_, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Second)
					elder <- err
				}()
				require.Eventually(t, func() bool { return rediskit.LocalWaiters(l, key) == 1 },
					5*time.Second, time.Millisecond, "the elder waits in process")
				time.Sleep(20 * time.Millisecond)
				younger := make(chan error, 1)
				go func() {
					_, err := l.AcquireWithTimeout(ctx, key, time.Minute, 300*time.Millisecond)
					younger <- err
				}()
				require.ErrorIs(t, waitFor(t, younger, 5*time.Second, "the younger"), rediskit.ErrNotObtained)
				require.ErrorIs(t, waitFor(t, elder, 5*time.Second, "the elder"), rediskit.ErrNotObtained)
				waitFor(t, h.sent, 5*time.Second, "the younger's late first attempt")
				require.NoError(t, holder.Release(ctx))
				if remote {
					lk := waitFor(t, before, 5*time.Second, "the other process's waiter")
					require.NotNil(t, lk)
					time.Sleep(c.hold)
					require.NoError(t, lk.Release(ctx))
				}
				third := newLocker(t, b.another(t), noPolling)
				lk, err := third.AcquireWithTimeout(ctx, key, time.Minute, 3*time.Second)
				if assert.NoError(t, err, "the lock stays with the departed waiter's entry") {
					require.NoError(t, lk.Release(ctx))
				}
				assertNothingLeft(t, b.client, key)
			})
		})
	}
}
