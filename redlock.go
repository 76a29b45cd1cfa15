package rediskit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewRedlock returns a Locker that keeps each lock on a majority of the
// given independent Redis masters, with the Redlock algorithm: an
// acquisition tries every node in parallel, each within a per-node timeout
// of a tenth of the TTL (between 20 ms and 1 s), and succeeds when a majority
// took the lock while the lock's validity, ttl minus the time the attempt
// took minus an allowance for clock drift (1% of ttl plus 2 ms), is still
// positive, and its fence was written back to a majority (see below);
// otherwise it releases whatever it took, without waking anyone, and a
// waiting acquisition sleeps its backoff before trying again, so that
// contenders do not split the vote in lockstep. Release, Refresh and TTL act
// on every node and count a majority. Each operation waits for a node at
// most the per-node timeout of the lock's TTL, once, whatever the client's
// own timeouts: a node that does not answer costs that, a minority of them
// never loses a lock, and a call abandoned on a node is settled (a lock
// nobody will use is released there) when the node answers. Its Locks, Lock
// methods, WithLock, options and events are those of any Locker. Waiting
// acquisitions are woken through the first node's pub/sub, and fall back to
// backoff when it is down.
//
// There must be an odd number of at least three clients, none nil and no
// two of them the same client or the same address; otherwise every method
// returns an error wrapping [ErrInvalidArgument].
// A TTL below [MinRedlockTTL] is an ErrInvalidArgument too. Errors caused
// by nodes are [NodeError] values, joined on one line, naming each node; a
// node that did not answer in time says so, and does not make the error
// match context.DeadlineExceeded, which means the caller's own deadline.
//
// What Redlock gives: the lock survives the failure of a minority of nodes,
// where a single Redis (even with replicas, whose replication is
// asynchronous) can lose a lock in a failover. What it does not: it relies
// on bounded clock drift and on the holder finishing within the validity;
// a process paused past its TTL (GC, a stopped VM) or a node whose clock
// jumps can let two holders overlap (Martin Kleppmann's critique, "How to
// do distributed locking", 2016). Use [Lock.Fence] where that matters: a
// Redlock fence is the largest fence of the majority that granted the lock,
// and that value is then written to the counters of that majority, so any
// later majority, which shares a node with it, issues a strictly larger
// one, as long as no node loses its counter and clock together; an
// acquisition whose write-back does not reach a majority fails.
func NewRedlock(clients []redis.UniversalClient, opts ...LockerOption) *Locker {
	l := &Locker{cfg: newLockerConfig(opts)}
	q := &quorum{nodes: make([]redisNode, len(clients))}
	for i, c := range clients {
		if isNilClient(c) {
			if l.cfg.err == nil {
				l.cfg.err = fmt.Errorf("redlock: client %d is nil: %w", i, ErrInvalidArgument)
			}
			continue
		}
		q.nodes[i] = redisNode{name: nodeName(i, c), client: c}
		for j := range i {
			// The same node twice would count twice towards a majority.
			if same := q.nodes[j].client == c || q.nodes[j].name == q.nodes[i].name; same && l.cfg.err == nil {
				l.cfg.err = fmt.Errorf("redlock: clients %d and %d are the same node (%s): %w", j, i, q.nodes[i].name, ErrInvalidArgument)
			}
		}
	}
	if n := len(clients); l.cfg.err == nil && (n < 3 || n%2 == 0) {
		l.cfg.err = fmt.Errorf("redlock: %d clients, want an odd number of at least 3: %w", n, ErrInvalidArgument)
	}
	if len(clients) > 0 && !isNilClient(clients[0]) {
		q.notify = newNotifier(clients[0])
	} else {
		q.notify = &notifier{mode: notifyNone}
	}
	q.calls = &calls{quit: make(chan struct{})} // every node call runs on a goroutine of its own
	l.store = q
	return l
}

// NodeError is the error of one node of a Redlock [Locker]. It wraps the
// node's error.
type NodeError struct {
	Node string // the node's address, or its position among the clients
	Err  error
}

// Error returns the node and its error.
func (e *NodeError) Error() string { return "node " + e.Node + ": " + e.Err.Error() }

// Unwrap returns the node's error.
func (e *NodeError) Unwrap() error { return e.Err }

type redisNode struct {
	name   string
	client redis.UniversalClient
}

func nodeName(i int, c redis.UniversalClient) string {
	if cl, ok := c.(*redis.Client); ok {
		return cl.Options().Addr
	}
	return fmt.Sprintf("#%d", i)
}

// quorum is a store on independent Redis masters: Redlock.
type quorum struct {
	nodes  []redisNode
	notify *notifier
	calls  *calls
}

func (q *quorum) notifier() *notifier { return q.notify }

// A Redlock keeps no queue of waiters (see queue.go).
func (q *quorum) queues() bool                     { return false }
func (q *quorum) leave(context.Context, *lockArgs) {}

func (q *quorum) leaveAgain(*lockArgs, []string) {}

func (q *quorum) majority() int { return len(q.nodes)/2 + 1 }

// tracker is nil: a Redlock's nodes would each have to be watched.
func (q *quorum) tracker() *tracker { return nil }

func (q *quorum) close() {
	q.notify.close()
	q.calls.close()
}

// MinRedlockTTL is the shortest TTL a [NewRedlock] lock may have: its
// validity must cover two rounds of the per-node timeout (the acquisition
// and the fence write-back) and the drift allowance.
const MinRedlockTTL = 50 * time.Millisecond

func (q *quorum) minTTL() time.Duration { return MinRedlockTTL }

// nodeTimeout bounds one node's part in one round of an operation: a tenth
// of the TTL, between 20 ms and 1 s.
func nodeTimeout(ttl time.Duration) time.Duration {
	d := ttl / 10
	if d < 20*time.Millisecond {
		d = 20 * time.Millisecond
	}
	if d > time.Second {
		d = time.Second
	}
	return d
}

// nodeReply is one node's answer in a round of an operation.
type nodeReply[T any] struct {
	v   T
	err error // a *NodeError
	ok  bool  // the node answered
}

// round runs op on every node in parallel and returns their replies by
// position. It returns once every node has answered, or when the per-node
// timeout passes or ctx ends, whichever is first: a node that does not
// answer costs the timeout once, whatever the client's own timeouts. A node
// that answers after round returned has its reply passed to late, if not
// nil, on a goroutine the Locker's Close waits for.
func round[T any](q *quorum, ctx context.Context, timeout time.Duration,
	op func(ctx context.Context, i int, c redis.UniversalClient) (T, error),
	late func(i int, v T, err error)) []nodeReply[T] {
	type result struct {
		i   int
		v   T
		err error
	}
	n := len(q.nodes)
	replies := make([]nodeReply[T], n)
	if err := ctx.Err(); err != nil { // not even sent
		for i := range replies {
			replies[i].err = &NodeError{Node: q.nodes[i].name, Err: err}
		}
		return replies
	}
	// For clients that honour it; cancelled when the last call returns, not
	// when round does: a call goes on on the nodes nobody waited for.
	nctx, cancel := context.WithTimeout(ctx, timeout)
	var running atomic.Int32
	running.Store(int32(n))
	returned := func() {
		if running.Add(-1) == 0 {
			cancel()
		}
	}
	results := make(chan result, n)
	var mu sync.Mutex
	collecting := true
	for i, node := range q.nodes {
		i, c := i, node.client
		q.calls.background(func() {
			v, err := op(nctx, i, c)
			returned()
			mu.Lock()
			if collecting {
				results <- result{i, v, err}
				mu.Unlock()
				return
			}
			mu.Unlock()
			if late != nil {
				late(i, v, err)
			}
		})
	}
	record := func(r result) {
		err := r.err
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = errNoReply(timeout) // the node's timeout, not the caller's
		}
		if err != nil {
			err = &NodeError{Node: q.nodes[r.i].name, Err: err}
		}
		replies[r.i] = nodeReply[T]{v: r.v, err: err, ok: true}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for answered := 0; answered < n; answered++ {
		select {
		case r := <-results:
			record(r)
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		break
	}
	mu.Lock()
	collecting = false
	mu.Unlock()
	for len(results) > 0 { // sent before collecting ended
		record(<-results)
	}
	for i := range replies {
		if !replies[i].ok {
			err := ctx.Err()
			if err == nil {
				err = errNoReply(timeout)
			}
			replies[i].err = &NodeError{Node: q.nodes[i].name, Err: err}
		}
	}
	return replies
}

// errNoReply is the error of a node that did not answer within timeout. It
// is not context.DeadlineExceeded: callers test for that to learn whether
// their own context ran out.
func errNoReply(timeout time.Duration) error {
	return fmt.Errorf("no reply within %v", timeout)
}

func (q *quorum) obtain(ctx context.Context, a *lockArgs, ttl time.Duration) (grant, error) {
	start := time.Now()
	timeout := nodeTimeout(ttl)
	// A node's reply is awaited past the round, on its connection, so that
	// a grant that comes late is released (see single.obtain).
	actx, cancel := context.WithDeadline(context.WithoutCancel(ctx), start.Add(timeout+settleWait))
	time.AfterFunc(timeout+settleWait, cancel)
	replies := round(q, ctx, timeout, func(_ context.Context, _ int, c redis.UniversalClient) (grant, error) {
		reply, err := runAcquire(actx, c, a)
		if err != nil {
			return grant{}, err
		}
		return parseAcquire(reply)
	}, func(i int, g grant, err error) {
		if unknownOutcome(g, err) {
			q.undoOn(q.nodes[i].client, a, err != nil) // a grant nobody counted
		}
	})
	taken, best := 0, int64(0)
	holderTTL := time.Duration(0)
	var errs []error
	for _, r := range replies {
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.v.held:
			taken++
			best = max(best, r.v.fence)
		case holderTTL == 0 || r.v.holderTTL < holderTTL:
			holderTTL = r.v.holderTTL
		}
	}
	valid := validUntil(start, ttl)
	var err error
	if taken >= q.majority() {
		if err = q.raiseFences(ctx, a, ttl, replies, best); err == nil {
			if time.Now().Before(valid) {
				return grant{held: true, fence: best, validUntil: valid}, nil
			}
			err = errLateReply
		}
	}

	// Not obtained: undo what was taken, and in the background what may
	// have been (a node that failed or did not answer), so that such a node
	// costs its timeout only once.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	round(q, uctx, timeout, func(ctx context.Context, i int, c redis.UniversalClient) (int64, error) {
		if r := replies[i]; r.ok && r.v.held {
			return q.undoScript(ctx, c, a)
		}
		return 0, nil
	}, nil)
	for i, r := range replies {
		// A node that did not answer is settled when it does (late);
		// one whose call failed may have taken the lock all the same.
		if r.ok && r.err != nil && unknownOutcome(r.v, r.err) {
			c := q.nodes[i].client
			q.calls.background(func() { q.undoOn(c, a, true) })
		}
	}
	switch {
	case ctx.Err() != nil:
		return grant{}, ctx.Err()
	case err != nil:
		return grant{}, err
	case holderTTL != 0:
		return grant{holderTTL: holderTTL}, nil // held elsewhere: wait and retry
	}
	return grant{}, fmt.Errorf("redlock: %d of %d nodes took the lock, %d needed: %w", taken, len(q.nodes), q.majority(), joinNodeErrors(errs))
}

// unknownOutcome says whether an acquire's reply leaves the lock possibly
// taken on its node: taken, or an error other than a Redis error reply
// (the script is all-or-nothing, so such a reply means nothing was written).
func unknownOutcome(g grant, err error) bool {
	return g.held || inFlight(err)
}

// undoScript releases token on one node without publishing a wake-up: an
// attempt that took only a minority has nothing to hand on, and its own
// Locker, listening on the first node, would wake itself and skip the
// backoff that keeps contenders from splitting the vote again.
func (q *quorum) undoScript(ctx context.Context, c redis.UniversalClient, a *lockArgs) (int64, error) {
	return releaseScript.Run(ctx, c, a.keys[:1], a.release[0], "", a.companion).Int64()
}

// undoOn releases token on one node; inFlight says that the request may
// still be on its way (see calls.undo).
func (q *quorum) undoOn(c redis.UniversalClient, a *lockArgs, inFlight bool) {
	q.calls.undo(func(ctx context.Context) (int64, error) { return q.undoScript(ctx, c, a) }, inFlight)
}

// raiseFences writes the lock's fence into the counters of the nodes that
// granted it with a lower one, so that every later majority, which shares
// a node with this one, issues a larger fence. That holds only if a
// majority's counters reach the fence, so an acquisition whose write-back
// falls short of a majority fails.
func (q *quorum) raiseFences(ctx context.Context, a *lockArgs, ttl time.Duration, granted []nodeReply[grant], best int64) error {
	timeout := nodeTimeout(ttl)
	replies := round(q, ctx, timeout, func(ctx context.Context, i int, c redis.UniversalClient) (bool, error) {
		if g := granted[i]; g.err != nil || !g.ok || !g.v.held {
			return false, nil
		} else if g.v.fence >= best {
			return true, nil
		}
		return true, raiseFenceScript.Run(ctx, c, a.keys[1:], best, ttl.Milliseconds()).Err()
	}, nil)
	n := 0
	var errs []error
	for _, r := range replies {
		if r.err != nil {
			errs = append(errs, r.err)
		} else if r.v {
			n++
		}
	}
	if n >= q.majority() {
		return nil
	}
	return fmt.Errorf("redlock: fence written on %d of %d nodes, %d needed: %w", n, len(q.nodes), q.majority(), joinNodeErrors(errs))
}

func (q *quorum) release(ctx context.Context, a *lockArgs, ttl time.Duration) (bool, error) {
	return q.majorityOf(ctx, nodeTimeout(ttl), func(ctx context.Context, _ int, c redis.UniversalClient) (int64, error) {
		return releaseScript.Run(ctx, c, a.keys[:1], a.release[0], notifyModeFor(c).publishCommand(), a.companion).Int64()
	})
}

func (q *quorum) refresh(ctx context.Context, a *lockArgs, ttl time.Duration) (bool, error) {
	return q.majorityOf(ctx, nodeTimeout(ttl), func(ctx context.Context, _ int, c redis.UniversalClient) (int64, error) {
		return refreshScript.Run(ctx, c, a.keys[:1], a.release[0], ttl.Milliseconds()).Int64()
	})
}

// majorityOf runs a token-checked script on every node and says whether a
// majority answered 1.
func (q *quorum) majorityOf(ctx context.Context, timeout time.Duration, run func(ctx context.Context, i int, c redis.UniversalClient) (int64, error)) (bool, error) {
	replies := round(q, ctx, timeout, run, nil)
	yes := 0
	var errs []error
	for _, r := range replies {
		if r.err != nil {
			errs = append(errs, r.err)
		} else if r.v == 1 {
			yes++
		}
	}
	return q.count(ctx, yes, errs)
}

// pttl returns the time until fewer than a majority of the nodes hold the
// lock: the majority-th longest of their TTLs, a node holding it without
// expiry counting as the longest.
func (q *quorum) pttl(ctx context.Context, a *lockArgs, ttl time.Duration) (time.Duration, bool, error) {
	replies := round(q, ctx, nodeTimeout(ttl), func(ctx context.Context, _ int, c redis.UniversalClient) (int64, error) {
		return pttlScript.Run(ctx, c, a.keys[:1], a.release[:1]...).Int64()
	}, nil)
	var mine []time.Duration
	var errs []error
	for _, r := range replies {
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.v == -1:
			mine = append(mine, time.Duration(math.MaxInt64)) // no expiry
		case r.v != -3:
			mine = append(mine, pttlReply(r.v))
		}
	}
	if ok, err := q.count(ctx, len(mine), errs); !ok {
		return 0, false, err
	}
	sort.Slice(mine, func(a, b int) bool { return mine[a] > mine[b] })
	if d := mine[q.majority()-1]; d != math.MaxInt64 {
		return d, true, nil
	}
	return -1, true, nil
}

// count says whether n nodes are a majority; if not, and nodes failed, the
// nodes' errors are the reason.
func (q *quorum) count(ctx context.Context, n int, errs []error) (bool, error) {
	if n >= q.majority() {
		return true, nil
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if len(errs) > 0 {
		return false, fmt.Errorf("redlock: %d of %d nodes, %d needed: %w", n, len(q.nodes), q.majority(), joinNodeErrors(errs))
	}
	return false, nil
}

// nodeErrors is the errors of several nodes, on one line.
type nodeErrors []error

func joinNodeErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return nodeErrors(errs)
}

func (e nodeErrors) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (e nodeErrors) Unwrap() []error { return e }
