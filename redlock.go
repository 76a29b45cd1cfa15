package rediskit

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewRedlock returns a Locker that keeps each lock on a majority of the
// given independent Redis masters, with the Redlock algorithm: an
// acquisition tries every node in parallel, each within a per-node timeout
// of a tenth of the TTL (between 10 ms and 1 s), and succeeds when a majority
// took the lock while the lock's validity, ttl minus the time the attempt
// took minus an allowance for clock drift (1% of ttl plus 2 ms), is still
// positive; otherwise it releases whatever it took. Release, Refresh and TTL
// act on every node and count a majority. Its Locks, Lock methods, WithLock,
// options and events are those of any Locker. Waiting acquisitions are woken
// through the first node's pub/sub, and fall back to backoff when it is down.
//
// There must be an odd number of at least three clients, none nil;
// otherwise every method returns an error wrapping [ErrInvalidArgument].
// Errors caused by nodes are [NodeError] values, joined, naming each node.
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
// one, as long as no node loses its counter and clock together.
func NewRedlock(clients []redis.UniversalClient, opts ...Option) *Locker {
	l := &Locker{cfg: newConfig(opts)}
	q := &quorum{nodes: make([]redisNode, len(clients))}
	for i, c := range clients {
		if isNilClient(c) {
			if l.cfg.err == nil {
				l.cfg.err = fmt.Errorf("rediskit: redlock: client %d is nil: %w", i, ErrInvalidArgument)
			}
			continue
		}
		q.nodes[i] = redisNode{name: nodeName(i, c), client: c}
	}
	if n := len(clients); l.cfg.err == nil && (n < 3 || n%2 == 0) {
		l.cfg.err = fmt.Errorf("rediskit: redlock: %d clients, want an odd number of at least 3: %w", n, ErrInvalidArgument)
	}
	if len(clients) > 0 && !isNilClient(clients[0]) {
		q.notify = newNotifier(clients[0])
	} else {
		q.notify = &notifier{mode: notifyNone}
	}
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
}

func (q *quorum) notifier() *notifier { return q.notify }

func (q *quorum) majority() int { return len(q.nodes)/2 + 1 }

// each runs fn on every node in parallel, each call bounded by timeout, and
// returns the nodes' errors, wrapped in NodeError, by position. It returns
// when every call has.
func (q *quorum) each(ctx context.Context, timeout time.Duration, fn func(ctx context.Context, i int, c redis.UniversalClient) error) []error {
	errs := make([]error, len(q.nodes))
	ctx, cancel := context.WithTimeout(ctx, timeout) // the calls run at once: one deadline serves all
	defer cancel()
	var wg sync.WaitGroup
	for i, n := range q.nodes {
		wg.Add(1)
		go func(i int, n redisNode) {
			defer wg.Done()
			if err := fn(ctx, i, n.client); err != nil {
				errs[i] = &NodeError{Node: n.name, Err: err}
			}
		}(i, n)
	}
	wg.Wait()
	return errs
}

// nodeTimeout bounds one node's part in an acquisition: a tenth of the TTL,
// between 10 ms and 1 s.
func nodeTimeout(ttl time.Duration) time.Duration {
	d := ttl / 10
	if d < 10*time.Millisecond {
		d = 10 * time.Millisecond
	}
	if d > time.Second {
		d = time.Second
	}
	return d
}

func (q *quorum) obtain(ctx context.Context, k lockKeys, token string, ttl time.Duration) (int64, time.Duration, error) {
	start := time.Now()
	fences := make([]int64, len(q.nodes))
	holders := make([]time.Duration, len(q.nodes))
	errs := q.each(ctx, nodeTimeout(ttl), func(ctx context.Context, i int, c redis.UniversalClient) error {
		reply, err := runAcquire(ctx, c, k, token, ttl)
		if err != nil {
			return err
		}
		fences[i], holders[i], err = parseAcquire(reply)
		return err
	})
	taken, best := 0, int64(0)
	holderTTL := time.Duration(0)
	for i, f := range fences {
		if errs[i] == nil && holders[i] == 0 {
			taken++
			if f > best {
				best = f
			}
		} else if errs[i] == nil && (holderTTL == 0 || holders[i] < holderTTL) {
			holderTTL = holders[i]
		}
	}
	if taken >= q.majority() && time.Now().Before(validUntil(start, ttl)) {
		q.raiseFences(ctx, k, ttl, fences, errs, best)
		return best, 0, nil
	}

	// Not obtained: undo everywhere, the nodes that failed or timed out
	// included, since their outcome is unknown.
	if taken > 0 || errors.Join(errs...) != nil {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), nodeTimeout(ttl))
		defer cancel()
		_, _ = q.release(uctx, k, token)
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if holderTTL != 0 {
		return 0, holderTTL, nil // held elsewhere: wait and retry
	}
	if err := errors.Join(errs...); err != nil {
		return 0, 0, fmt.Errorf("redlock: %d of %d nodes took the lock, %d needed: %w", taken, len(q.nodes), q.majority(), err)
	}
	return 0, time.Nanosecond, nil // the validity ran out: retry
}

// raiseFences writes the lock's fence into the counters of the nodes that
// granted it with a lower one, so that the next majority, which shares a
// node with this one, issues a larger fence. A node that fails here only
// weakens that for itself, so failures are not the acquisition's.
func (q *quorum) raiseFences(ctx context.Context, k lockKeys, ttl time.Duration, fences []int64, errs []error, best int64) {
	q.each(ctx, nodeTimeout(ttl), func(ctx context.Context, i int, c redis.UniversalClient) error {
		if errs[i] != nil || fences[i] == 0 || fences[i] >= best {
			return nil
		}
		return raiseFenceScript.Run(ctx, c, []string{k.companion}, best, ttl.Milliseconds()).Err()
	})
}

func (q *quorum) release(ctx context.Context, k lockKeys, token string) (bool, error) {
	return q.majorityOf(ctx, time.Second, func(ctx context.Context, c redis.UniversalClient) (int64, error) {
		return releaseScript.Run(ctx, c, []string{k.key}, token, notifyModeFor(c).publishCommand(), k.companion).Int64()
	})
}

func (q *quorum) refresh(ctx context.Context, k lockKeys, token string, ttl time.Duration) (bool, error) {
	return q.majorityOf(ctx, nodeTimeout(ttl), func(ctx context.Context, c redis.UniversalClient) (int64, error) {
		return refreshScript.Run(ctx, c, []string{k.key}, token, ttl.Milliseconds()).Int64()
	})
}

// majorityOf runs a token-checked script on every node and says whether a
// majority answered 1.
func (q *quorum) majorityOf(ctx context.Context, timeout time.Duration, run func(ctx context.Context, c redis.UniversalClient) (int64, error)) (bool, error) {
	var yes atomic.Int32
	errs := q.each(ctx, timeout, func(ctx context.Context, _ int, c redis.UniversalClient) error {
		n, err := run(ctx, c)
		if n == 1 {
			yes.Add(1)
		}
		return err
	})
	return q.count(int(yes.Load()), errs)
}

// pttl returns the time until fewer than a majority of the nodes hold the
// lock: the majority-th longest of their TTLs.
func (q *quorum) pttl(ctx context.Context, k lockKeys, token string) (time.Duration, bool, error) {
	ttls := make([]time.Duration, len(q.nodes))
	held := make([]bool, len(q.nodes))
	errs := q.each(ctx, time.Second, func(ctx context.Context, i int, c redis.UniversalClient) error {
		n, err := pttlScript.Run(ctx, c, []string{k.key}, token).Int64()
		ttls[i], held[i] = pttlReply(n), err == nil && n != -3
		return err
	})
	var mine []time.Duration
	for i, h := range held {
		if h {
			mine = append(mine, ttls[i])
		}
	}
	if ok, err := q.count(len(mine), errs); !ok {
		return 0, false, err
	}
	sort.Slice(mine, func(a, b int) bool { return mine[a] > mine[b] })
	return mine[q.majority()-1], true, nil
}

// count says whether n nodes are a majority; if not, and nodes failed, the
// nodes' errors are the reason.
func (q *quorum) count(n int, errs []error) (bool, error) {
	if n >= q.majority() {
		return true, nil
	}
	if err := errors.Join(errs...); err != nil {
		return false, fmt.Errorf("redlock: %d of %d nodes, %d needed: %w", n, len(q.nodes), q.majority(), err)
	}
	return false, nil
}
