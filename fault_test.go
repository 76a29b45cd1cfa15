package rediskit_test

// The fault suite: the Locker under the faults of issue 9 (a blackholed or
// slow holder, late replies, wrong-typed keys, Redis restarts and
// failovers, blackholed calls with deadlines, releases that publish
// nothing, connection failures around a refresh, Redlock with faulty nodes).
// Every mutual exclusion scenario goes through a csChecker. Run it alone
// with `go test -race -run Fault .`; the real-Redis scenarios need the
// servers of scripts/redis-up.sh, as the rest of the suite does.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

const (
	// deadlineSlack is how long past its deadline or timeout a call may
	// return (issue 9: "within its ctx deadline / timeout plus a small
	// slack (≤ 50 ms)").
	deadlineSlack = 50 * time.Millisecond
	// contenderEvery and contenderHold pace the healthy side of the mutual
	// exclusion scenarios: an attempt every 20 ms, a hold of 50 ms.
	contenderEvery = 20 * time.Millisecond
	contenderHold  = 50 * time.Millisecond
)

// drift is the allowance the package takes off a lock's TTL for the
// clocks' drift: a lock whose TTL was set by a request sent at s is sure to
// be held until s + ttl - drift(ttl).
func drift(ttl time.Duration) time.Duration { return ttl/100 + 2*time.Millisecond }

// csChecker records critical sections and checks that no two holders of a
// key were inside at once, and that each holder's fence is above that of
// the holder before it. Every time is read from this process's monotonic
// clock, so an overlap it reports really happened.
type csChecker struct {
	mu       sync.Mutex
	sections []*csSection
}

// csSection is one holder's critical section.
type csSection struct {
	ck          *csChecker
	key, holder string
	fence       int64
	start, end  time.Time // end is zero while the section is open
}

// Begin opens a section of holder on key, starting now.
func (ck *csChecker) Begin(key, holder string) *csSection {
	return ck.record(key, holder, 0, time.Now(), time.Time{})
}

func (ck *csChecker) record(key, holder string, fence int64, start, end time.Time) *csSection {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	s := &csSection{ck: ck, key: key, holder: fmt.Sprintf("%s#%d", holder, len(ck.sections)+1), fence: fence, start: start, end: end}
	ck.sections = append(ck.sections, s)
	return s
}

// SetFence records the fence the section's holder was given.
func (s *csSection) SetFence(fence int64) {
	s.ck.mu.Lock()
	defer s.ck.mu.Unlock()
	s.fence = fence
}

// End closes the section now.
func (s *csSection) End() {
	s.ck.mu.Lock()
	defer s.ck.mu.Unlock()
	if s.end.IsZero() {
		s.end = time.Now()
	}
}

// reporter is the part of *testing.T the checker reports to.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// Verify reports each pair of sections of a key that overlapped (a section
// still open counts as lasting until now), and each section whose fence is
// not above that of the section of the key that started before it.
func (ck *csChecker) Verify(t reporter) {
	t.Helper()
	ck.mu.Lock()
	defer ck.mu.Unlock()
	now := time.Now()
	if len(ck.sections) == 0 {
		t.Logf("checker: no critical section")
		return
	}
	origin := ck.sections[0].start
	byKey := map[string][]*csSection{}
	for _, s := range ck.sections {
		byKey[s.key] = append(byKey[s.key], s)
		if s.start.Before(origin) {
			origin = s.start
		}
	}
	span := func(s *csSection) string {
		if s.end.IsZero() {
			return fmt.Sprintf("%s (fence %d, from +%v, still open)", s.holder, s.fence, s.start.Sub(origin).Round(time.Millisecond))
		}
		return fmt.Sprintf("%s (fence %d, +%v..+%v)", s.holder, s.fence,
			s.start.Sub(origin).Round(time.Millisecond), s.end.Sub(origin).Round(time.Millisecond))
	}
	const detailed = 5 // reports in full; the rest are counted
	overlaps, fences := 0, 0
	var worst time.Duration
	for key, ss := range byKey {
		sort.Slice(ss, func(i, j int) bool { return ss[i].start.Before(ss[j].start) })
		for i, a := range ss {
			aEnd := a.end
			if aEnd.IsZero() {
				aEnd = now
			}
			for _, b := range ss[i+1:] {
				if !b.start.Before(aEnd) {
					break // sorted by start: no later section overlaps a either
				}
				bEnd := b.end
				if bEnd.IsZero() {
					bEnd = now
				}
				both := bEnd
				if aEnd.Before(both) {
					both = aEnd
				}
				d := both.Sub(b.start)
				overlaps++
				if d > worst {
					worst = d
				}
				if overlaps <= detailed {
					t.Errorf("key %q: overlap of %v: %s and %s were both inside", key, d, span(a), span(b))
				}
			}
			if i > 0 && a.fence <= ss[i-1].fence {
				fences++
				if fences <= detailed {
					t.Errorf("key %q: fence not increasing: %s came after %s", key, span(a), span(ss[i-1]))
				}
			}
		}
	}
	if overlaps > detailed || fences > detailed {
		t.Errorf("checker: %d overlaps and %d non-increasing fences in all", overlaps, fences)
	}
	t.Logf("checker: %d critical sections, %d overlaps (worst %v), %d non-increasing fences", len(ck.sections), overlaps, worst, fences)
}

// heldFn is a WithLock fn that records its critical section, from the
// moment it is called, and holds the lock, working in small steps, until
// its ctx is done (the section ends when it sees that) or hold has passed.
type heldFn struct {
	ck          *csChecker
	key, holder string
	fence       func() int64
	hold        time.Duration
	started     chan struct{} // closed by the first call

	mu          sync.Mutex
	calls       int
	cancelledAt time.Time
	cause       error
}

func newHeldFn(ck *csChecker, key, holder string, fence func() int64, hold time.Duration) *heldFn {
	return &heldFn{ck: ck, key: key, holder: holder, fence: fence, hold: hold, started: make(chan struct{})}
}

func (h *heldFn) run(ctx context.Context) error {
	s := h.ck.Begin(h.key, h.holder)
	s.SetFence(h.fence())
	h.mu.Lock()
	if h.calls++; h.calls == 1 {
		close(h.started)
	}
	h.mu.Unlock()
	limit := time.NewTimer(h.hold)
	defer limit.Stop()
	for {
		select {
		case <-ctx.Done():
			s.End()
			h.mu.Lock()
			h.cancelledAt, h.cause = time.Now(), context.Cause(ctx)
			h.mu.Unlock()
			return nil // WithLock's own error says whether the lock was lost
		case <-limit.C:
			s.End()
			return nil
		case <-time.After(10 * time.Millisecond): // a step of work
		}
	}
}

// called returns how many times fn was called.
func (h *heldFn) called() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// cancelled returns when fn saw its ctx done, and the ctx's cause; a zero
// time if it never did.
func (h *heldFn) cancelled() (time.Time, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cancelledAt, h.cause
}

// goWithLock runs WithLock with fn h in a goroutine, and returns once fn
// has been called, with the channel WithLock's error comes on.
func goWithLock(t *testing.T, l *rediskit.Locker, key string, h *heldFn, opts ...rediskit.LockOption) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- l.WithLock(context.Background(), key, h.run, opts...) }()
	select {
	case <-h.started:
		return res
	case err := <-res:
		require.FailNowf(t, "WithLock did not call fn", "error: %v", err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "WithLock did not call fn within 10s")
	}
	return nil
}

// waitFor returns what comes on ch, failing the test if nothing comes
// within d.
func waitFor[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		require.FailNowf(t, "timed out", "%s did not return within %v", what, d)
	}
	panic("unreachable")
}

// counterFence returns a function reading key's fence counter through c:
// right after an acquisition it holds the new holder's fence. WithLock
// does not show fn its Lock, so this is how a WithLock holder's fence is
// known.
func counterFence(c redis.UniversalClient, key string) func() int64 {
	counter := rediskit.CompanionKey(key, ":fence")
	return func() int64 {
		n, _ := c.Get(context.Background(), counter).Int64()
		return n
	}
}

// redlockFence is counterFence over Redlock's nodes: a Redlock fence is
// written to the counters of the majority that granted it.
func redlockFence(cs []redis.UniversalClient, key string) func() int64 {
	fences := make([]func() int64, len(cs))
	for i, c := range cs {
		fences[i] = counterFence(c, key)
	}
	return func() int64 {
		var most int64
		for _, f := range fences {
			if n := f(); n > most {
				most = n
			}
		}
		return most
	}
}

// contender takes a key again and again through its own Locker, on a
// healthy connection, alternating TryAcquire and WithLock, and records each
// critical section: the other side of the mutual exclusion scenarios.
type contender struct {
	stopc chan struct{}
	done  chan struct{}
	once  sync.Once
	held  int     // sections, read after done
	errs  []error // errors other than ErrNotObtained, read after done
}

func startContender(t *testing.T, ck *csChecker, l *rediskit.Locker, key string, ttl time.Duration, fence func() int64) *contender {
	t.Helper()
	c := &contender{stopc: make(chan struct{}), done: make(chan struct{})}
	go c.run(ck, l, key, ttl, fence)
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *contender) run(ck *csChecker, l *rediskit.Locker, key string, ttl time.Duration, fence func() int64) {
	defer close(c.done)
	ctx := context.Background()
	for i := 0; ; i++ {
		select {
		case <-c.stopc:
			return
		case <-time.After(contenderEvery):
		}
		if i%2 == 1 {
			h := newHeldFn(ck, key, "contender WithLock", fence, contenderHold)
			c.note(l.WithLock(ctx, key, h.run, rediskit.WithLockTTL(ttl)))
			c.held += h.called()
			continue
		}
		lk, err := l.TryAcquire(ctx, key, ttl)
		if err != nil {
			c.note(err)
			continue
		}
		s := ck.Begin(key, "contender TryAcquire")
		s.SetFence(lk.Fence())
		time.Sleep(contenderHold)
		s.End()
		c.held++
		c.note(lk.Release(ctx))
	}
}

func (c *contender) note(err error) {
	if err != nil && !errors.Is(err, rediskit.ErrNotObtained) {
		c.errs = append(c.errs, err)
	}
}

// stop ends the contender and returns how many times it held the key and
// its unexpected errors.
func (c *contender) stop() (held int, errs []error) {
	c.once.Do(func() { close(c.stopc) })
	<-c.done
	return c.held, c.errs
}

// waitGone reports whether key is absent by the deadline, polling.
func waitGone(c redis.UniversalClient, key string, deadline time.Time) bool {
	for {
		n, err := c.Exists(context.Background(), key).Result()
		if err == nil && n == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// first returns the first of errs, or nil.
func first(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// isConnError reports whether err carries a network error, as a Redis
// that is down gives.
func isConnError(err error) bool {
	var op *net.OpError
	return err != nil && (errors.As(err, &op) || strings.Contains(err.Error(), "connection refused"))
}

// fakeReporter collects what a checker reports, for testing the checker.
type fakeReporter struct{ errors []string }

func (*fakeReporter) Helper()             {}
func (*fakeReporter) Logf(string, ...any) {}
func (f *fakeReporter) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

// TestFaultChecker checks the checker on sections made up for it.
func TestFaultChecker(t *testing.T) {
	t0 := time.Now().Add(-time.Minute) // in the past: an open section lasts until Verify's now
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name     string
		sections func(ck *csChecker)
		want     []string // substrings of the reports, in order
	}{
		{"one after another, fences up", func(ck *csChecker) {
			ck.record("k", "a", 1, at(0), at(10))
			ck.record("k", "b", 2, at(10), at(20))
			ck.record("k", "c", 5, at(30), at(40))
		}, nil},
		{"overlap", func(ck *csChecker) {
			ck.record("k", "a", 1, at(0), at(15))
			ck.record("k", "b", 2, at(10), at(20))
		}, []string{"overlap of 5ms"}},
		{"open section overlaps what follows", func(ck *csChecker) {
			ck.record("k", "a", 1, at(0), time.Time{})
			ck.record("k", "b", 2, at(10), at(20))
		}, []string{"overlap of 10ms", "still open"}},
		{"equal fence", func(ck *csChecker) {
			ck.record("k", "a", 3, at(0), at(10))
			ck.record("k", "b", 3, at(20), at(30))
		}, []string{"fence not increasing"}},
		{"fence down", func(ck *csChecker) {
			ck.record("k", "a", 3, at(0), at(10))
			ck.record("k", "b", 2, at(20), at(30))
		}, []string{"fence not increasing"}},
		{"other keys are independent", func(ck *csChecker) {
			ck.record("k", "a", 7, at(0), at(20))
			ck.record("j", "b", 1, at(10), at(30))
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ck := &csChecker{}
			tc.sections(ck)
			var f fakeReporter
			ck.Verify(&f)
			if tc.want == nil {
				assert.Empty(t, f.errors)
				return
			}
			require.Len(t, f.errors, 1)
			for _, w := range tc.want {
				assert.Contains(t, f.errors[0], w)
			}
		})
	}
}

// TestFaultBlackholedHolder: a WithLock holder whose connections are
// blackholed for 4 s, TTL 1 s, while another Locker keeps trying the key.
// fn's ctx must be cancelled, with cause ErrLockNotHeld, by the moment the
// lock may have expired: validity from the last request that got through
// (an upper bound of the last successful refresh's send time), whatever the
// blocked refresh is doing.
func TestFaultBlackholedHolder(t *testing.T) {
	forEachFaultVariant(t, true, func(t *testing.T, v *faultVariant) {
		const ttl = time.Second
		rig := v.proxied(t)
		direct := v.direct(t)
		key := v.key("blackholed-holder")
		ck := &csChecker{}
		fence := counterFence(direct, key)

		h := newHeldFn(ck, key, "blackholed holder", fence, 10*time.Second)
		res := goWithLock(t, newLocker(t, rig.client), key, h, rediskit.WithLockTTL(ttl))
		other := startContender(t, ck, newLocker(t, direct), key, ttl, fence)
		time.Sleep(200 * time.Millisecond)
		rig.Blackhole()
		time.Sleep(4 * time.Second)
		rig.Heal()
		time.Sleep(300 * time.Millisecond) // the contender goes on after the heal
		held, errs := other.stop()
		err := waitFor(t, res, 20*time.Second, "WithLock")

		ck.Verify(t)
		assert.Empty(t, errs, "the healthy Locker's errors")
		assert.Positive(t, held, "the other Locker never got the key: the blackhole tested nothing")
		cancelledAt, cause := h.cancelled()
		if assert.False(t, cancelledAt.IsZero(), "fn's ctx was never cancelled, though its lock expired during the blackhole") {
			assert.ErrorIs(t, cause, rediskit.ErrLockNotHeld, "context.Cause of fn's ctx")
			mayExpire := rig.LastSent().Add(ttl - drift(ttl))
			assert.False(t, cancelledAt.After(mayExpire.Add(deadlineSlack)),
				"fn's ctx was cancelled %v after the lock may have expired (TTL %v)", cancelledAt.Sub(mayExpire), ttl)
		}
		assert.ErrorIs(t, err, rediskit.ErrLockNotHeld, "WithLock's error")
	})
}

// TestFaultWithLockReleaseUnanswered: Redis stops answering, or answers
// after 2.8 s, as fn returns, on a warm connection or one the release must
// make again. WithLock must return within its release's bound, the lock's
// TTL (go-redis's connection set-up, and its TLS dials, ignore a ctx, so
// only a release on a goroutine WithLock can abandon keeps that bound on a
// default client), with the error saying the release got no reply: not
// ErrLockNotHeld, though a late reply may say the lock had expired by then,
// since fn ran under the lock. The lock then expires by itself.
func TestFaultWithLockReleaseUnanswered(t *testing.T) {
	for _, fault := range []struct {
		name  string
		apply func(*faultRig)
	}{
		{"blackhole", (*faultRig).Blackhole},
		{"late-reply", func(r *faultRig) { r.SetDelay(1400 * time.Millisecond) }},
		{"new-connection-late-reply", func(r *faultRig) {
			r.each((*faultProxy).Cut)
			time.Sleep(50 * time.Millisecond) // the client sees its connections closed
			r.SetDelay(1400 * time.Millisecond)
		}},
	} {
		t.Run(fault.name, func(t *testing.T) {
			forEachFaultVariant(t, true, func(t *testing.T, v *faultVariant) {
				const ttl = time.Second
				rig := v.proxied(t)
				direct := v.direct(t)
				key := v.key("release-unanswered")
				var returned time.Time
				err := newLocker(t, rig.client).WithLock(context.Background(), key, func(context.Context) error {
					fault.apply(rig)
					returned = time.Now()
					return nil
				}, rediskit.WithLockTTL(ttl))
				took := time.Since(returned)

				require.Error(t, err, "WithLock's release got no reply in time, and said nothing")
				assert.Contains(t, err.Error(), "no reply within", "WithLock's error")
				assert.NotErrorIs(t, err, rediskit.ErrLockNotHeld, "fn ran under the lock")
				assert.Less(t, took, ttl+deadlineSlack, "WithLock returned %v after fn, TTL %v", took, ttl)

				rig.Heal()
				other := newLocker(t, direct)
				assert.Eventually(t, func() bool {
					lk, err := other.TryAcquire(context.Background(), key, ttl)
					return err == nil && lk.Release(context.Background()) == nil
				}, ttl+3*time.Second, 20*time.Millisecond, "the lock did not expire by itself")
			})
		})
	}
}

// TestFaultLatency: a WithLock holder behind 400 ms of latency each way
// (a round trip of 800 ms), TTL 1 s, with a healthy Locker trying the key
// while fn runs. Losing the lock is allowed; holding it together is not.
func TestFaultLatency(t *testing.T) {
	forEachFaultVariant(t, true, func(t *testing.T, v *faultVariant) {
		const ttl, latency, rounds = time.Second, 400 * time.Millisecond, 2
		rig := v.proxied(t)
		direct := v.direct(t)
		key := v.key("latency")
		ck := &csChecker{}
		fence := counterFence(direct, key)
		slow, fast := newLocker(t, rig.client), newLocker(t, direct)
		// Warm the client (a Cluster's slot map, the scripts' cache), or
		// the first acquisition takes several slow round trips.
		warm, err := slow.TryAcquire(context.Background(), key, ttl)
		require.NoError(t, err)
		require.NoError(t, warm.Release(context.Background()))
		rig.SetDelay(latency)
		for r := 0; r < rounds; r++ {
			// The contender starts once the slow holder is in: what is
			// tested is keeping the lock (or letting go in time), not
			// winning the race for it.
			h := newHeldFn(ck, key, "slow holder", fence, 1500*time.Millisecond)
			res := goWithLock(t, slow, key, h, rediskit.WithLockTTL(ttl))
			other := startContender(t, ck, fast, key, ttl, fence)
			err := waitFor(t, res, 15*time.Second, "WithLock")
			time.Sleep(300 * time.Millisecond)
			_, errs := other.stop()
			if err != nil {
				// Losing the lock, or refusing one granted too late to use.
				assert.True(t, errors.Is(err, rediskit.ErrLockNotHeld) || errors.Is(err, rediskit.ErrNotObtained),
					"round %d: WithLock may only fail by losing the lock or refusing a late one: %v", r, err)
			}
			assert.Empty(t, errs, "round %d: the healthy Locker's errors", r)
			require.True(t, waitGone(direct, key, time.Now().Add(5*time.Second)), "round %d: the key stayed held", r)
		}
		ck.Verify(t)
	})
}

// lateRace is the healthy side of TestFaultLateAcquisitionReply: it waits
// for the proxied acquisition's token to appear under the key, then takes
// the key as soon as it expires, and holds it until finish.
type lateRace struct {
	release chan struct{}
	done    chan struct{}
	once    sync.Once
	token   string // the proxied acquisition's, as seen in Redis
	got     bool
	err     error
}

func startLateRace(t *testing.T, ck *csChecker, direct redis.UniversalClient, l *rediskit.Locker, key string) *lateRace {
	t.Helper()
	r := &lateRace{release: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		ctx := context.Background()
		deadline := time.Now().Add(3 * time.Second)
		for r.token == "" {
			if time.Now().After(deadline) {
				return
			}
			r.token, _ = direct.Get(ctx, key).Result()
			time.Sleep(2 * time.Millisecond)
		}
		for time.Now().Before(deadline) {
			lk, err := l.TryAcquire(ctx, key, 5*time.Second)
			if errors.Is(err, rediskit.ErrNotObtained) {
				time.Sleep(2 * time.Millisecond)
				continue
			}
			if err != nil {
				r.err = err
				return
			}
			s := ck.Begin(key, "direct")
			s.SetFence(lk.Fence())
			r.got = true
			<-r.release
			s.End()
			r.err = lk.Release(ctx)
			return
		}
	}()
	t.Cleanup(r.finish)
	return r
}

// finish lets the race end, and waits for it.
func (r *lateRace) finish() {
	r.once.Do(func() { close(r.release) })
	<-r.done
}

// TestFaultLateAcquisitionReply: acquisitions whose request reaches Redis
// at once but whose reply is held back 1.5 × TTL, while a healthy Locker
// takes the key when it expires. A lock whose validity passed before its
// reply came is not a lock: TryAcquire fails with ErrNotObtained, and
// WithLock never calls fn.
func TestFaultLateAcquisitionReply(t *testing.T) {
	forEachFaultVariant(t, true, func(t *testing.T, v *faultVariant) {
		const ttl, rounds = 400 * time.Millisecond, 3
		const late = ttl * 3 / 2
		ctx := context.Background()
		rig := v.proxied(t)
		direct := v.direct(t)
		key := v.key("late-reply")
		ck := &csChecker{}
		fence := counterFence(direct, key)
		l, other := newLocker(t, rig.client), newLocker(t, direct)
		// Warm up, so that each attempt below is one round trip: the
		// connection open and the script loaded (no NOSCRIPT round trip).
		lk, err := l.TryAcquire(ctx, key, ttl)
		require.NoError(t, err)
		require.NoError(t, lk.Release(ctx))

		for r := 0; r < rounds; r++ {
			for _, mode := range []string{"TryAcquire", "WithLock"} {
				rig.HoldReplies(late)
				race := startLateRace(t, ck, direct, other, key)
				switch mode {
				case "TryAcquire":
					lk, err := l.TryAcquire(ctx, key, ttl)
					if lk != nil {
						// Used as a caller would: a critical section.
						s := ck.Begin(key, "late TryAcquire")
						s.SetFence(lk.Fence())
						time.Sleep(100 * time.Millisecond)
						s.End()
						_ = lk.Release(ctx)
					}
					assert.ErrorIs(t, err, rediskit.ErrNotObtained, "round %d: TryAcquire whose reply came %v after sending, TTL %v", r, late, ttl)
					assert.True(t, lk == nil, "round %d: TryAcquire returned a Lock from a late reply", r)
				case "WithLock":
					h := newHeldFn(ck, key, "late WithLock", fence, 100*time.Millisecond)
					err := l.WithLock(ctx, key, h.run, rediskit.WithLockTTL(ttl))
					assert.Zero(t, h.called(), "round %d: WithLock called fn on a lock whose reply came %v after sending, TTL %v", r, late, ttl)
					assert.ErrorIs(t, err, rediskit.ErrNotObtained, "round %d: WithLock", r)
				}
				now, _ := direct.Get(ctx, key).Result()
				race.finish()
				rig.Heal()
				require.NoError(t, race.err, "round %d %s: the healthy Locker", r, mode)
				require.NotEmpty(t, race.token, "round %d %s: the acquisition never reached Redis", r, mode)
				assert.True(t, race.got, "round %d %s: the healthy Locker did not get the expired key", r, mode)
				assert.NotEqual(t, race.token, now, "round %d %s: the late acquisition's token is still in Redis", r, mode)
				require.True(t, waitGone(direct, key, time.Now().Add(3*time.Second)), "round %d %s: the key stayed held", r, mode)
			}
		}
		ck.Verify(t)
	})
}

// wrongTypes are values of other types that other programs may leave
// under a lock's keys.
var wrongTypes = []struct {
	typ string
	put func(ctx context.Context, c redis.UniversalClient, key string) error
}{
	{"hash", func(ctx context.Context, c redis.UniversalClient, key string) error {
		return c.HSet(ctx, key, "f", "v").Err()
	}},
	{"list", func(ctx context.Context, c redis.UniversalClient, key string) error {
		return c.RPush(ctx, key, "v").Err()
	}},
}

// TestFaultWrongTypeWritesNothing: the scripts are all-or-nothing. A
// wrong-typed fence counter, or lock key, makes a call fail without writing
// anything; in particular a failed acquisition never leaves the lock key
// set (today SET NX runs before the counter's WRONGTYPE aborts the script).
func TestFaultWrongTypeWritesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLocker(t, b.client)
		for _, wt := range wrongTypes {
			wt := wt
			t.Run("fence counter is a "+wt.typ, func(t *testing.T) {
				key := b.key("fence-" + wt.typ)
				counter := rediskit.CompanionKey(key, ":fence")
				require.NoError(t, wt.put(ctx, b.client, counter))
				lk, err := l.TryAcquire(ctx, key, time.Minute)
				assert.Error(t, err)
				assert.True(t, lk == nil, "TryAcquire returned a Lock with error %v", err)
				assert.Zero(t, b.client.Exists(ctx, key).Val(), "the failed acquisition left the lock key set")
				assert.Equal(t, wt.typ, b.client.Type(ctx, counter).Val(), "the counter was replaced")
			})
			t.Run("lock key is a "+wt.typ, func(t *testing.T) {
				key := b.key("key-" + wt.typ)
				require.NoError(t, wt.put(ctx, b.client, key))
				lk, err := l.TryAcquire(ctx, key, time.Minute)
				assert.Error(t, err, "an error or ErrNotObtained")
				assert.True(t, lk == nil, "TryAcquire returned a Lock with error %v", err)
				assert.Equal(t, wt.typ, b.client.Type(ctx, key).Val())
				assert.Equal(t, time.Duration(-1), b.client.PTTL(ctx, key).Val(), "an expiry was set on another program's key")
				assert.Zero(t, b.client.Exists(ctx, rediskit.CompanionKey(key, ":fence")).Val(), "a fence was issued for a lock not taken")
			})
			t.Run("held lock's key replaced by a "+wt.typ, func(t *testing.T) {
				key := b.key("held-" + wt.typ)
				lk, err := l.TryAcquire(ctx, key, time.Minute)
				require.NoError(t, err)
				counter := rediskit.CompanionKey(key, ":fence")
				fenceBefore := b.client.Get(ctx, counter).Val()
				require.NoError(t, b.client.Del(ctx, key).Err())
				require.NoError(t, wt.put(ctx, b.client, key))

				assert.Error(t, lk.Refresh(ctx, time.Hour))
				_, err = lk.TTL(ctx)
				assert.Error(t, err)
				assert.Error(t, lk.Release(ctx))
				assert.Equal(t, wt.typ, b.client.Type(ctx, key).Val(), "another program's key was deleted or replaced")
				assert.Equal(t, time.Duration(-1), b.client.PTTL(ctx, key).Val(), "an expiry was set on another program's key")
				assert.Equal(t, fenceBefore, b.client.Get(ctx, counter).Val(), "the fence counter changed")
			})
		}
	})
}

// TestFaultRedlockWrongTypeWritesNothing: a node whose script fails on a
// wrong-typed fence counter keeps no lock key, whether or not the other
// nodes grant the lock.
func TestFaultRedlockWrongTypeWritesNothing(t *testing.T) {
	forEachRedlockSet(t, 3, func(t *testing.T, s *redlockSet) {
		ctx := context.Background()
		l := newRedlock(t, s.universal())
		t.Run("one node's counter is a hash", func(t *testing.T) {
			key := s.key("fault-wrongtype-one")
			require.NoError(t, s.clients[0].HSet(ctx, rediskit.CompanionKey(key, ":fence"), "f", "v").Err())
			lk, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err, "two of three nodes grant the lock")
			assert.Zero(t, s.clients[0].Exists(ctx, key).Val(), "the node whose script failed kept the lock key")
			assert.Equal(t, 2, s.holders(t, key, lk.Token()))
			require.NoError(t, lk.Release(ctx))
		})
		t.Run("every node's counter is a hash", func(t *testing.T) {
			key := s.key("fault-wrongtype-all")
			for _, c := range s.clients {
				require.NoError(t, c.HSet(ctx, rediskit.CompanionKey(key, ":fence"), "f", "v").Err())
			}
			lk, err := l.TryAcquire(ctx, key, time.Minute)
			assert.Error(t, err)
			assert.True(t, lk == nil, "TryAcquire returned a Lock with error %v", err)
			for i, c := range s.clients {
				assert.Zero(t, c.Exists(ctx, key).Val(), "node %d kept the lock key", i)
			}
		})
	})
}

// TestFaultRedisRestart: 30 acquisitions waiting (20 s) for a held lock
// when Redis is SIGKILLed and comes back 1 s later, empty. Each waiter must
// get the lock in turn (and release it), none giving up on the outage.
func TestFaultRedisRestart(t *testing.T) {
	for _, k := range faultClientKinds {
		k := k
		t.Run(k.name, func(t *testing.T) {
			const waiters = 30
			ctx := context.Background()
			srv := startOwnRedis(t)
			client := k.client(srv.addr())
			t.Cleanup(func() { _ = client.Close() })
			l := newLocker(t, client)
			key := "fault:restart"
			_, err := l.TryAcquire(ctx, key, time.Minute) // the restart wipes this holder out
			require.NoError(t, err)
			ck := &csChecker{}
			errs := startWaiters(l, ck, key, waiters)
			time.Sleep(300 * time.Millisecond) // all waiting
			srv.kill()
			time.Sleep(time.Second)
			srv.start(t)
			failed := waitersFailed(t, errs, waiters)
			assert.Empty(t, failed, "%d of %d waiters failed across a 1 s outage within their 20 s wait; the first: %v", len(failed), waiters, first(failed))
			ck.Verify(t)
		})
	}
}

// TestFaultRedisDown: when Redis stays down past a wait's timeout, the
// wait ends on time with ErrNotObtained, naming the Redis error it last
// saw; a single attempt still returns Redis's error.
func TestFaultRedisDown(t *testing.T) {
	for _, k := range faultClientKinds {
		k := k
		t.Run(k.name, func(t *testing.T) {
			const waiters, wait = 3, time.Second
			ctx := context.Background()
			srv := startOwnRedis(t)
			client := k.client(srv.addr())
			t.Cleanup(func() { _ = client.Close() })
			l := newLocker(t, client)
			key := "fault:down"
			_, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err)
			type result struct {
				err  error
				took time.Duration
			}
			results := make(chan result, waiters)
			for i := 0; i < waiters; i++ {
				go func() {
					start := time.Now()
					_, err := l.AcquireWithTimeout(ctx, key, 5*time.Second, wait)
					results <- result{err, time.Since(start)}
				}()
			}
			time.Sleep(200 * time.Millisecond) // waiting
			srv.kill()
			for i := 0; i < waiters; i++ {
				r := waitFor(t, results, 30*time.Second, "a waiter")
				assert.ErrorIs(t, r.err, rediskit.ErrNotObtained, "the wait ran out with Redis down")
				assert.True(t, isConnError(r.err), "the error does not name the outage: %v", r.err)
				assert.LessOrEqual(t, r.took, wait+deadlineSlack, "a %v wait took %v", wait, r.took)
			}

			_, err = l.TryAcquire(ctx, "fault:down:once", time.Second)
			require.Error(t, err)
			assert.NotErrorIs(t, err, rediskit.ErrNotObtained, "one attempt against a down Redis is not contention")
			assert.True(t, isConnError(err), "TryAcquire's error does not name the outage: %v", err)
		})
	}
}

// TestFaultClusterFailover: 10 acquisitions waiting (20 s) for a held lock
// while the key's master fails over to its replica (CLUSTER FAILOVER). None
// may fail. The first client kind fails the master over, the second fails
// it back, so the cluster ends as it began.
func TestFaultClusterFailover(t *testing.T) {
	addrs := os.Getenv(envCluster)
	if addrs == "" {
		t.Skipf("set %s to run against a real Redis Cluster", envCluster)
	}
	seeds := strings.Split(addrs, ",")
	expectHealthyClusterAtEnd(t, seeds)
	for _, k := range faultClientKinds {
		k := k
		t.Run(k.name, func(t *testing.T) {
			const waiters = 10
			ctx := context.Background()
			client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, ContextTimeoutEnabled: k.cte})
			t.Cleanup(func() { _ = client.Close() })
			require.NoError(t, client.Ping(ctx).Err())
			// Waiters poll every 20 ms, so that attempts land in the
			// failover itself.
			l := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(20*time.Millisecond)))
			// One hash tag for both client kinds: the same shard fails over
			// and back.
			key := fmt.Sprintf("{rkfault:failover}%d", time.Now().UnixNano())
			holder, err := l.TryAcquire(ctx, key, 30*time.Second)
			require.NoError(t, err)
			ck := &csChecker{}
			errs := startWaiters(l, ck, key, waiters)
			time.Sleep(200 * time.Millisecond) // all waiting
			from, to := failoverKeyMaster(t, seeds, key)
			t.Logf("slot %d failed over from %s to %s", rediskit.KeySlot(key), from, to)
			assert.NoError(t, holder.Release(ctx), "a manual failover loses no write: the holder still holds the lock")
			failed := waitersFailed(t, errs, waiters)
			assert.Empty(t, failed, "%d of %d waiters failed across a failover within their 20 s wait; the first: %v", len(failed), waiters, first(failed))
			ck.Verify(t)
		})
	}
}

// TestFaultDeadlines: calls against a blackholed Redis return within
// their ctx deadline or timeout plus deadlineSlack, on any client (a
// default go-redis client would block for its 3 s ReadTimeout). The
// acquisitions abandoned in flight reach Redis when the blackhole heals,
// 1.5 s later (within ReadTimeout, so their connections are still open);
// their replies then come, and their tokens must not stay.
func TestFaultDeadlines(t *testing.T) {
	forEachFaultVariant(t, false, func(t *testing.T, v *faultVariant) {
		const ttl = 10 * time.Second // long: a token left behind is still there when checked
		ctx := context.Background()
		rig := v.proxied(t)
		direct := v.direct(t)
		l := newLocker(t, rig.client)
		held, err := l.TryAcquire(ctx, v.key("held"), ttl)
		require.NoError(t, err)
		calls := []struct {
			name     string
			budget   time.Duration
			deadline bool   // the budget is ctx's deadline; else the call's own timeout
			key      string // where an acquisition could leave its token
			want     error
			run      func(ctx context.Context, key string) error
		}{
			{"AcquireWithTimeout, ctx deadline 500ms", 500 * time.Millisecond, true, v.key("wait-deadline"), context.DeadlineExceeded,
				func(ctx context.Context, key string) error {
					_, err := l.AcquireWithTimeout(ctx, key, ttl, time.Minute)
					return err
				}},
			{"AcquireWithTimeout, timeout 500ms", 500 * time.Millisecond, false, v.key("wait-timeout"), rediskit.ErrNotObtained,
				func(ctx context.Context, key string) error {
					_, err := l.AcquireWithTimeout(ctx, key, ttl, 500*time.Millisecond)
					return err
				}},
			{"TryAcquire, ctx deadline 300ms", 300 * time.Millisecond, true, v.key("try"), context.DeadlineExceeded,
				func(ctx context.Context, key string) error {
					_, err := l.TryAcquire(ctx, key, ttl)
					return err
				}},
			{"Release, ctx deadline 300ms", 300 * time.Millisecond, true, "", context.DeadlineExceeded,
				func(ctx context.Context, _ string) error { return held.Release(ctx) }},
			{"Refresh, ctx deadline 300ms", 300 * time.Millisecond, true, "", context.DeadlineExceeded,
				func(ctx context.Context, _ string) error { return held.Refresh(ctx, ttl) }},
			{"TTL, ctx deadline 300ms", 300 * time.Millisecond, true, "", context.DeadlineExceeded,
				func(ctx context.Context, _ string) error {
					_, err := held.TTL(ctx)
					return err
				}},
		}
		type result struct {
			err  error
			took time.Duration
		}
		results := make([]chan result, len(calls))
		rig.Blackhole()
		blackholed := time.Now()
		for i := range calls {
			results[i] = make(chan result, 1)
			go func(i int) {
				c := calls[i]
				cctx, cancel := context.WithCancel(ctx)
				if c.deadline {
					cctx, cancel = context.WithTimeout(ctx, c.budget)
				}
				defer cancel()
				start := time.Now()
				err := c.run(cctx, c.key)
				results[i] <- result{err, time.Since(start)}
			}(i)
		}
		time.Sleep(time.Until(blackholed.Add(1500 * time.Millisecond)))
		rig.Heal()
		healed := time.Now()
		for i, c := range calls {
			r := waitFor(t, results[i], 30*time.Second, c.name)
			assert.LessOrEqual(t, r.took, c.budget+deadlineSlack, "%s took %v against a blackholed Redis", c.name, r.took)
			assert.ErrorIs(t, r.err, c.want, c.name)
		}
		for _, c := range calls {
			if c.key != "" {
				assert.True(t, waitGone(direct, c.key, healed.Add(time.Second)),
					"%s: its token stayed in Redis after the blackhole healed (PTTL %v)", c.name, direct.PTTL(ctx, c.key).Val())
			}
		}
	})
}

// TestFaultBackoff: a waiter on a key held by another program (a plain
// SET PX from a raw client, whose release publishes nothing) must notice
// the release (DEL) within its backoff: with ConstantBackoff(100ms) within
// 100 ms, with the default ExponentialBackoff(8ms, 512ms) within its
// 512 ms cap, plus backoffSlack. The deletes are spread over four times the
// bound after the backoff has reached its longest sleeps, so that a waiter
// sleeping up to four times too long (as a subscribed one does today) is
// caught at some phase of its sleep.
func TestFaultBackoff(t *testing.T) {
	const backoffSlack = 60 * time.Millisecond
	forEachFaultVariant(t, true, func(t *testing.T, v *faultVariant) {
		ctx := context.Background()
		raw := v.direct(t)
		for _, tc := range []struct {
			name   string
			opts   []rediskit.LockerOption
			most   time.Duration // the longest sleep the backoff allows
			settle time.Duration // to let the backoff reach its longest sleeps
			trials int
		}{
			{"ConstantBackoff(100ms)", []rediskit.LockerOption{rediskit.WithRetryBackoff(rediskit.ConstantBackoff(100 * time.Millisecond))},
				100 * time.Millisecond, 300 * time.Millisecond, 6},
			// 8+16+...+256 ms: the cap is reached after about 0.5 s.
			{"default ExponentialBackoff(8ms, 512ms)", nil, 512 * time.Millisecond, 600 * time.Millisecond, 5},
		} {
			tc := tc
			t.Run(tc.name, func(t *testing.T) {
				l := newLocker(t, v.direct(t), tc.opts...)
				type acquired struct {
					lk  *rediskit.Lock
					err error
					at  time.Time
				}
				var lat []time.Duration
				for i := 0; i < tc.trials; i++ {
					key := v.key(fmt.Sprintf("backoff-%d-%d", tc.most.Milliseconds(), i))
					require.NoError(t, raw.Set(ctx, key, "x", time.Minute).Err())
					got := make(chan acquired, 1)
					go func() {
						lk, err := l.AcquireWithTimeout(ctx, key, 5*time.Second, 30*time.Second)
						got <- acquired{lk, err, time.Now()}
					}()
					time.Sleep(tc.settle + time.Duration(i)*4*tc.most/time.Duration(tc.trials))
					deleted := time.Now()
					require.NoError(t, raw.Del(ctx, key).Err())
					a := waitFor(t, got, 10*time.Second, "AcquireWithTimeout")
					require.NoError(t, a.err)
					d := a.at.Sub(deleted)
					lat = append(lat, d)
					assert.LessOrEqual(t, d, tc.most+backoffSlack, "trial %d: the release was noticed %v after it, backoff %s", i, d, tc.name)
					require.NoError(t, a.lk.Release(ctx))
				}
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				t.Logf("release by another program noticed by a waiting %s after median %v, max %v (bound %v + %v), %d trials",
					tc.name, lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), tc.most, backoffSlack, len(lat))
			})
		}
	})
}

// TestFaultRefreshRetriedPromptly: a WithLock holder, TTL 3 s (refreshed
// every second; the lock may expire 2.968 s after it was taken), loses its
// connections twice, each time every connection cut and new ones refused:
// from 850 to 1750 ms, over the refresh due at 1 s, and from 1900 to
// 2750 ms, over the one due at 2 s. Redis is reachable between the outages
// and after them, before the lock may expire. A failed refresh retried
// promptly keeps the lock; one left to the next third of the TTL loses it.
//
// The outages are long because a failed refresh, as the library sees it, is
// a call whose every go-redis attempt failed: a default single-node client
// retries a broken connection three times, and each new connection's HELLO
// three times, with backoff, which spans up to about 680 ms (a cluster
// client gives up within about 150 ms). A bare Cut between two requests
// fails no call at all: go-redis drops dead pooled connections before use.
func TestFaultRefreshRetriedPromptly(t *testing.T) {
	forEachFaultVariant(t, false, func(t *testing.T, v *faultVariant) {
		const ttl = 3 * time.Second
		rig := v.proxied(t)
		direct := v.direct(t)
		key := v.key("refresh-retry")
		ck := &csChecker{}
		fence := counterFence(direct, key)
		h := newHeldFn(ck, key, "holder", fence, ttl+500*time.Millisecond)
		res := goWithLock(t, newLocker(t, rig.client), key, h, rediskit.WithLockTTL(ttl))
		start := time.Now()
		other := startContender(t, ck, newLocker(t, direct), key, ttl, fence)
		for _, outage := range [][2]time.Duration{{850 * time.Millisecond, 1750 * time.Millisecond}, {1900 * time.Millisecond, 2750 * time.Millisecond}} {
			time.Sleep(time.Until(start.Add(outage[0])))
			rig.Refuse()
			time.Sleep(time.Until(start.Add(outage[1])))
			rig.Heal()
		}
		// Stop the contender while fn still runs: after fn, WithLock
		// releases, and the contender may then rightly take the key.
		time.Sleep(time.Until(start.Add(ttl + 200*time.Millisecond)))
		held, errs := other.stop()
		err := waitFor(t, res, 15*time.Second, "WithLock")

		ck.Verify(t)
		cancelledAt, cause := h.cancelled()
		assert.True(t, cancelledAt.IsZero(), "fn's ctx was cancelled %v after fn started (cause: %v)", cancelledAt.Sub(start), cause)
		assert.NoError(t, err, "WithLock")
		assert.Zero(t, held, "the other Locker got the key: the holder did not keep it")
		assert.Empty(t, errs, "the healthy Locker's errors")
	})
}

// TestFaultRedlock: Redlock over three independent masters, each behind
// its own proxy, with one node blackholed, and then one blackholed and one
// refusing. A call costs at most the per-node timeout (a tenth of the TTL,
// between 10 ms and 1 s); a minority down loses no lock; a majority down
// fails with NodeErrors, not with context.DeadlineExceeded while the
// caller's ctx is alive.
func TestFaultRedlock(t *testing.T) {
	addrs := os.Getenv(envRedlock)
	if addrs == "" {
		t.Skipf("set %s to run against real independent masters", envRedlock)
	}
	list := strings.Split(addrs, ",")
	if len(list) < 3 {
		t.Skipf("%s has %d masters; this test wants 3", envRedlock, len(list))
	}
	list = list[:3]
	nodeTimeout := func(ttl time.Duration) time.Duration { return ttl / 10 } // within [10ms, 1s] for the TTLs here
	for _, k := range faultClientKinds {
		k := k
		t.Run(k.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := fmt.Sprintf("rkfault:rl:%d:%d:", time.Now().UnixNano(), testSeq.Add(1))
			var directs []redis.UniversalClient
			for _, a := range list {
				c := redis.NewClient(&redis.Options{Addr: a})
				t.Cleanup(func() { _ = c.Close() })
				directs = append(directs, c)
			}
			proxied := func(t *testing.T) ([]*faultProxy, []redis.UniversalClient) {
				t.Helper()
				var ps []*faultProxy
				var cs []redis.UniversalClient
				for _, a := range list {
					p := newFaultProxy(t, a)
					c := k.client(p.Addr())
					t.Cleanup(func() { _ = c.Close() })
					ps, cs = append(ps, p), append(cs, c)
				}
				return ps, cs
			}

			t.Run("one node blackholed", func(t *testing.T) {
				const ttl = 2 * time.Second
				budget := nodeTimeout(ttl) + deadlineSlack
				ps, cs := proxied(t)
				l := newRedlock(t, cs)
				warm, err := l.TryAcquire(ctx, prefix+"warm", ttl) // connections open, scripts loaded
				require.NoError(t, err)
				require.NoError(t, warm.Release(ctx))
				ps[0].Blackhole()
				key := prefix + "one-blackholed"

				start := time.Now()
				lk, err := l.TryAcquire(ctx, key, ttl)
				assert.LessOrEqual(t, time.Since(start), budget, "TryAcquire")
				require.NoError(t, err, "two of three nodes are up")
				start = time.Now()
				assert.NoError(t, lk.Refresh(ctx, ttl))
				assert.LessOrEqual(t, time.Since(start), budget, "Refresh")
				start = time.Now()
				assert.NoError(t, lk.Release(ctx))
				assert.LessOrEqual(t, time.Since(start), budget, "Release")
				for i, c := range directs[1:] {
					assert.Zero(t, c.Exists(ctx, key).Val(), "healthy node %d still holds the released lock", i+1)
				}
			})

			t.Run("WithLock survives a blackholed minority", func(t *testing.T) {
				const ttl = 1500 * time.Millisecond // refreshed every 500 ms
				ps, cs := proxied(t)
				key := prefix + "minority-blackholed"
				ck := &csChecker{}
				fence := redlockFence(directs, key)
				h := newHeldFn(ck, key, "holder", fence, 4*time.Second)
				res := goWithLock(t, newRedlock(t, cs), key, h, rediskit.WithLockTTL(ttl))
				start := time.Now()
				other := startContender(t, ck, newRedlock(t, directs), key, ttl, fence)
				time.Sleep(100 * time.Millisecond)
				ps[0].Blackhole()
				time.Sleep(3 * time.Second) // six refresh periods
				ps[0].Heal()
				// Stop the contender while fn still runs (4 s): after fn,
				// WithLock releases, and the contender may then rightly
				// take the key.
				time.Sleep(300 * time.Millisecond)
				held, errs := other.stop()
				err := waitFor(t, res, 20*time.Second, "WithLock")

				ck.Verify(t)
				cancelledAt, cause := h.cancelled()
				assert.True(t, cancelledAt.IsZero(), "fn's ctx was cancelled %v after fn started (cause: %v)", cancelledAt.Sub(start), cause)
				assert.NoError(t, err, "WithLock")
				assert.Zero(t, held, "the other Locker got the key: the holder did not keep it")
				assert.Empty(t, errs, "the healthy Locker's errors")
			})

			t.Run("one node blackholed, one refusing", func(t *testing.T) {
				const ttl = 2 * time.Second
				ps, cs := proxied(t)
				dead := k.client(deadAddr) // nothing listens there: connections are refused
				t.Cleanup(func() { _ = dead.Close() })
				cs[1] = dead
				l := newRedlock(t, cs)
				ps[0].Blackhole()
				key := prefix + "majority-down"

				start := time.Now()
				lk, err := l.TryAcquire(ctx, key, ttl)
				took := time.Since(start)
				assert.LessOrEqual(t, took, nodeTimeout(ttl)+deadlineSlack, "TryAcquire")
				assert.True(t, lk == nil, "TryAcquire returned a Lock with error %v", err)
				require.Error(t, err)
				var nodeErr *rediskit.NodeError
				assert.ErrorAs(t, err, &nodeErr)
				assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's ctx is alive, yet the error says its deadline passed")
				assert.True(t, waitGone(directs[2], key, time.Now().Add(time.Second)), "the healthy node kept the lock key of a failed acquisition")
			})
		})
	}
}

// waitersFailed waits for n waiters of startWaiters and returns the errors
// of those that failed.
func waitersFailed(t *testing.T, errs <-chan error, n int) []error {
	t.Helper()
	var failed []error
	for i := 0; i < n; i++ {
		if err := waitFor(t, errs, 30*time.Second, "a waiter"); err != nil {
			failed = append(failed, err)
		}
	}
	return failed
}

// startWaiters starts n goroutines that each wait up to 20 s for key, hold
// it a millisecond as a checked critical section, and release it; each
// sends its error, or nil, on the returned channel.
func startWaiters(l *rediskit.Locker, ck *csChecker, key string, n int) <-chan error {
	ctx := context.Background()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			lk, err := l.AcquireWithTimeout(ctx, key, 5*time.Second, 20*time.Second)
			if err == nil {
				s := ck.Begin(key, "waiter")
				s.SetFence(lk.Fence())
				time.Sleep(time.Millisecond)
				s.End()
				err = lk.Release(ctx)
			}
			errs <- err
		}()
	}
	return errs
}

// TestFaultUndoOvertaken: an acquisition whose caller's deadline passed
// while its request was held up on the way to Redis is undone in the
// background by its token. The undo travels on another connection and can
// overtake the request: it must look again, so that the grant, which lands
// after it, does not sit in Redis for its whole TTL. On a client that
// honours deadlines, go-redis closes the connection at the deadline, so
// nothing can wait for the acquisition's reply.
func TestFaultUndoOvertaken(t *testing.T) {
	forEachFaultVariant(t, true, func(t *testing.T, v *faultVariant) {
		const ttl = 20 * time.Second // far longer than the test waits
		ctx := context.Background()
		rig := v.proxied(t)
		direct := v.direct(t)
		l := newLocker(t, rig.client)
		key := v.key("overtaken")
		// Load the script first, on the key's node (same slot): a NOSCRIPT
		// round trip cut off at the deadline would leave the script itself
		// unsent.
		warm, err := l.TryAcquire(ctx, "{"+key+"}warm", ttl)
		require.NoError(t, err)
		require.NoError(t, warm.Release(ctx))

		rig.SetDelay(time.Second) // the request, and the reply, lag a second
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err = l.TryAcquire(cctx, key, ttl)
		cancel()
		rig.SetDelay(0) // the undo does not
		require.ErrorIs(t, err, context.DeadlineExceeded)
		sent := time.Now()

		fence := counterFence(direct, key)
		require.Eventually(t, func() bool { return fence() > 0 }, 5*time.Second, 10*time.Millisecond,
			"the delayed acquisition reached Redis")
		assert.True(t, waitGone(direct, key, sent.Add(5*time.Second)),
			"the late grant stayed in Redis (PTTL %v)", direct.PTTL(ctx, key).Val())
	})
}
