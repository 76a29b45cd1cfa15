package rediskit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// store is where a Locker keeps its locks: one Redis (single) or a
// majority of independent ones (quorum, Redlock). Each method is one attempt
// with the token-checked scripts, and returns when ctx ends even if Redis
// has not answered (see calls).
type store interface {
	// obtain makes one attempt to take the lock. It returns an error
	// wrapping errLateReply when the lock was granted too late to be of
	// use, and then releases it.
	obtain(ctx context.Context, a *lockArgs, ttl time.Duration) (grant, error)
	// release, refresh and pttl take the TTL the lock was acquired with,
	// which bounds how long a Redlock node is waited for.
	release(ctx context.Context, a *lockArgs, ttl time.Duration) (held bool, err error)
	refresh(ctx context.Context, a *lockArgs, ttl time.Duration) (held bool, err error)
	pttl(ctx context.Context, a *lockArgs, ttl time.Duration) (remaining time.Duration, held bool, err error)
	// notifier is where waiters subscribe to releases.
	notifier() *notifier
	// tracker tells waiters that a key changed, whoever changed it; nil
	// where it cannot.
	tracker() *tracker
	// close ends the notifier and waits for the calls in the background.
	close()
	// minTTL is the shortest TTL the store can grant a useful lock for.
	minTTL() time.Duration
}

// grant is the outcome of one attempt to take a lock.
type grant struct {
	held       bool          // the lock was taken
	fence      int64         // when held: its fencing token
	validUntil time.Time     // when held: until when it is sure to be held
	holderTTL  time.Duration // when not held: the holder's remaining TTL, negative when it has none
}

// errLateReply says that a lock was granted after its validity had run out,
// or so close to it that the caller cannot use it; such a grant is released.
var errLateReply = fmt.Errorf("reply came after the lock's validity: %w", ErrNotObtained)

// lockArgs are one acquisition attempt's lock as its scripts take it:
// the Redis names of the lock, its token, and the argument lists go-redis is
// called with, made once so that the calls of the lock's life build none of
// their own. They never change once made, so concurrent calls share them.
//
// The names are the lock's key, with the prefix, and its companion in the
// same cluster slot, which names both the fencing counter and the channel
// its releases are published on. Channels and keys are separate namespaces;
// sharing the name saves building a second one.
type lockArgs struct {
	key, companion, token string
	keys                  [2]string // key, companion: the acquire script's KEYS; keys[:1] the others'
	acquire               [2]any    // token, TTL in ms: the acquire script's ARGV
	release               [3]any    // token, the publish command, companion: the release script's; release[:1] the TTL script's
}

// init makes a's argument lists; publish is the store's publish command.
func (a *lockArgs) init(rkey, companion, token string, ttl time.Duration, publish any) {
	a.key, a.companion, a.token = rkey, companion, token
	a.keys = [2]string{rkey, companion}
	tok := any(token)
	a.acquire = [2]any{tok, ttl.Milliseconds()}
	a.release = [3]any{tok, publish, companion}
}

// single is a store on one Redis: a single node, Sentinel, Ring or Cluster.
type single struct {
	client redis.UniversalClient
	notify *notifier
	track  *tracker
	calls  *calls
}

func newSingle(client redis.UniversalClient) *single {
	return &single{client: client, notify: newNotifier(client), track: newTracker(client), calls: newCalls(client)}
}

func (s *single) notifier() *notifier { return s.notify }

func (s *single) tracker() *tracker { return s.track }

func (s *single) minTTL() time.Duration { return MinLockTTL }

func (s *single) close() {
	s.notify.close()
	s.track.close()
	s.calls.close()
}

func (s *single) obtain(ctx context.Context, a *lockArgs, ttl time.Duration) (grant, error) {
	if err := ctx.Err(); err != nil {
		return grant{}, err // not even sent
	}
	sent := time.Now()
	var reply []int64
	var err error
	abandoned := false
	if s.calls.inline(ctx) {
		reply, err = runAcquire(ctx, s.client, a)
	} else {
		reply, abandoned, err = run(s.calls, ctx, func(ctx context.Context) ([]int64, error) {
			// If the caller gives up, the reply is still awaited, on the
			// same connection, so that a lock granted late is released
			// (a release sent on another connection could overtake the
			// acquisition). go-redis gives up on its own timeouts, or here.
			dl, ok := ctx.Deadline()
			if !ok {
				dl = time.Now() // a wait's end, as a cancellation (see acquire)
			}
			rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), dl.Add(settleWait))
			defer cancel()
			return runAcquire(rctx, s.client, a)
		}, func(reply []int64, err error) { s.settleAcquire(a, reply, err) })
	}
	if err != nil {
		if !abandoned { // else settled when the reply comes
			s.settleAcquire(a, nil, err)
		}
		return grant{}, err
	}
	g, err := parseAcquire(reply)
	if err != nil || !g.held {
		return g, err
	}
	// Redis measured the TTL from when it ran the script, which is after
	// sent: the lock is held until validUntil at least, and not a moment
	// longer can be counted on.
	g.validUntil = validUntil(sent, ttl)
	if !time.Now().Before(g.validUntil) {
		s.calls.background(func() { s.undo(a, false) })
		return grant{}, errLateReply
	}
	return g, nil
}

// settleAcquire undoes an acquisition nobody will use: one whose reply
// came after its caller gave up, or was lost. The scripts are all-or-nothing,
// so a Redis error reply means nothing was written; any other error leaves
// the outcome unknown, and releasing with the token is safe whatever
// happened.
func (s *single) settleAcquire(a *lockArgs, reply []int64, err error) {
	switch {
	case err == nil && (len(reply) == 0 || reply[0] != 1):
		return // not taken
	case err != nil && !inFlight(err):
		return // a Redis error reply (the script wrote nothing), or never sent
	}
	s.calls.background(func() { s.undo(a, err != nil) })
}

// undo releases an acquisition its caller will not use; inFlight says that
// its request may still be on its way (see calls.undo).
func (s *single) undo(a *lockArgs, inFlight bool) {
	s.calls.undo(func(ctx context.Context) (int64, error) {
		return releaseScript.Run(ctx, s.client, a.keys[:1], a.release[:]...).Int64()
	}, inFlight)
}

// settleWait is how long an acquisition's reply is awaited after its caller
// gave up, so that a lock granted late can be released.
const settleWait = 3 * time.Second

func (s *single) release(ctx context.Context, a *lockArgs, _ time.Duration) (bool, error) {
	return s.tokenScript(ctx, releaseScript, a, a.release[:]...)
}

func (s *single) refresh(ctx context.Context, a *lockArgs, ttl time.Duration) (bool, error) {
	return s.tokenScript(ctx, refreshScript, a, a.release[0], ttl.Milliseconds())
}

// tokenScript runs a token-checked script whose reply is 1 when the token,
// args[0], holds the key. Inline, it builds no closure: that is the
// uncontended path's cost.
func (s *single) tokenScript(ctx context.Context, script *redis.Script, a *lockArgs, args ...any) (bool, error) {
	if s.calls.inline(ctx) {
		n, err := script.Run(ctx, s.client, a.keys[:1], args...).Int64()
		return n == 1, err
	}
	n, _, err := run(s.calls, ctx, func(ctx context.Context) (int64, error) {
		return script.Run(ctx, s.client, a.keys[:1], args...).Int64()
	}, nil)
	return n == 1, err
}

func (s *single) pttl(ctx context.Context, a *lockArgs, _ time.Duration) (time.Duration, bool, error) {
	n, _, err := run(s.calls, ctx, func(ctx context.Context) (int64, error) {
		return pttlScript.Run(ctx, s.client, a.keys[:1], a.release[:1]...).Int64()
	}, nil)
	return pttlReply(n), err == nil && n != -3, err
}

// runAcquire runs the acquire script on one Redis.
func runAcquire(ctx context.Context, client redis.UniversalClient, a *lockArgs) ([]int64, error) {
	return acquireScript.Run(ctx, client, a.keys[:], a.acquire[:]...).Int64Slice()
}

// parseAcquire reads the acquire script's reply.
func parseAcquire(reply []int64) (grant, error) {
	switch {
	case len(reply) != 2:
		return grant{}, fmt.Errorf("unexpected acquire reply %v", reply)
	case reply[0] == 1:
		return grant{held: true, fence: reply[1]}, nil
	case reply[1] == 0: // expiring this very millisecond: retry at once
		return grant{holderTTL: time.Nanosecond}, nil
	}
	return grant{holderTTL: time.Duration(reply[1]) * time.Millisecond}, nil
}

// pttlReply turns the pttl script's reply into a TTL: -1ns for a key without
// expiry.
func pttlReply(n int64) time.Duration {
	if n < 0 {
		return -1
	}
	return time.Duration(n) * time.Millisecond
}
