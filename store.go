package rediskit

import (
	"context"
	"fmt"
	"slices"
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
	// queues reports whether waiters queue in Redis (see queue.go).
	queues() bool
	// leave takes a waiter that gives up out of the queue (see
	// single.leave).
	leave(ctx context.Context, a *lockArgs)
	// leaveAgain takes the entries of waiters of this Locker that left
	// out of the queue again, in the background (see single.leaveAgain).
	leaveAgain(a *lockArgs, entries []string)
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
	handed     bool          // when held: handed over to the attempt's queue entry, under its token (then holderTTL, if set, is the TTL the hand-over gave it)
	fence      int64         // when held: its fencing token
	validUntil time.Time     // when held: until when it is sure to be held
	holderTTL  time.Duration // when not held: the holder's remaining TTL, negative when it has none
	place      int64         // when not held: the attempt's place in the queue, 0 the head, -1 none
	// at is, when the attempt left its waiter queued, the server's time in
	// microseconds when it ran; and for a lock handed over by another
	// process, when the hand-over ran.
	at int64
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
// its releases are published on (channels and keys are separate
// namespaces), and, on a store that queues waiters, the queue's key.
type lockArgs struct {
	key, companion, token string
	entry                 string // the waiter's queue entry, or ""
	names                 [3]string
	keys                  []string // the acquire and release scripts' KEYS; keys[:1] the others'
	acquire               []any    // the acquire script's ARGV
	release               []any    // the release script's ARGV; release[:1] the TTL script's
	argv                  [11]any  // acquire's and release's, end to end
}

// lockNames are the Redis names of one lock.
type lockNames struct {
	key, companion string
	queue          string // the queue's key, "" when the store keeps none
}

func newLockNames(rkey string, queued bool) lockNames {
	if !queued {
		return lockNames{key: rkey, companion: companionKey(rkey, ":fence")}
	}
	// One string for both: the companion is the queue's key less its
	// suffix.
	q := companionKey(rkey, ":fence:queue")
	return lockNames{key: rkey, companion: q[:len(q)-len(":queue")], queue: q}
}

// init makes a's argument lists for a Locker whose notifier is nt, and
// the waiter's queue entry, or "".
func (a *lockArgs) init(n *lockNames, token string, ttl time.Duration, nt *notifier, entry string) {
	a.key, a.companion, a.token, a.entry = n.key, n.companion, token, entry
	a.names = [3]string{n.key, n.companion, n.queue}
	tok := any(token)
	var e any = emptyArg
	if entry != "" {
		e = entry
	}
	// The release's last argument, the claim bound, is an entry's life.
	a.argv = [11]any{tok, ttl.Milliseconds(), e, nt.lifeArg, tok, nt.publish, n.companion, nt.idArg, emptyArg, nt.freshArg, nt.lifeArg}
	switch {
	case n.queue == "": // Redlock
		a.keys, a.acquire, a.release = a.names[:2], a.argv[:2], a.argv[4:7]
	case entry == "":
		a.keys, a.acquire, a.release = a.names[:], a.argv[:2], a.argv[4:]
	default:
		a.keys, a.acquire, a.release = a.names[:], a.argv[:4], a.argv[4:]
	}
}

// emptyArg is "" as a script argument, boxed once.
var emptyArg any = ""

// releaseKeys returns the release script's KEYS.
func (a *lockArgs) releaseKeys() []string {
	if len(a.keys) == 2 {
		return a.keys[:1]
	}
	return a.keys
}

// single is a store on one Redis: a single node, Sentinel, Ring or Cluster.
type single struct {
	client redis.UniversalClient
	notify *notifier
	track  *tracker
	calls  *calls
}

func newSingle(client redis.UniversalClient) *single {
	s := &single{client: client, notify: newNotifier(client), track: newTracker(client), calls: newCalls(client)}
	s.notify.ghost = func(key, entry string) {
		names := newLockNames(key, true)
		a := &lockArgs{}
		a.init(&names, "", 0, s.notify, entry)
		s.leaveAgain(a, []string{entry})
	}
	return s
}

func (s *single) notifier() *notifier { return s.notify }

func (s *single) queues() bool { return true }

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
		}, func(reply []int64, err error) { s.settleAcquire(a, reply, err, true) })
	}
	if err != nil {
		if !abandoned { // else settled when the reply comes
			s.settleAcquire(a, nil, err, false)
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
		s.calls.background(func() { s.undo(a, false, false) })
		return grant{}, errLateReply
	}
	token := a.token
	if g.handed {
		token = entryToken(a.entry)
	}
	s.notify.held(a.key, token, g.validUntil, a.entry)
	return g, nil
}

// settleAcquire undoes an acquisition nobody will use: one whose reply
// came after its caller gave up (ended), or was lost. The scripts are
// all-or-nothing, so a Redis error reply means nothing was written; any
// other error leaves the outcome unknown, and releasing with the token is
// safe whatever happened. The attempt of a waiter that ended may also have
// put its entry back in the queue after the waiter left it: that entry
// leaves again.
func (s *single) settleAcquire(a *lockArgs, reply []int64, err error, ended bool) {
	switch {
	case err != nil && !inFlight(err):
		return // a Redis error reply (the script wrote nothing), or never sent
	case err == nil && (len(reply) == 0 || reply[0] != 1) && (!ended || a.entry == ""):
		return // not taken, and not queued
	}
	s.calls.background(func() { s.undo(a, err != nil, ended) })
}

// undo releases an acquisition its caller will not use; inFlight says that
// its request may still be on its way (see calls.undo). The entry of a
// waiter that ended leaves the queue, and the lock with it if it was
// handed over to the entry.
func (s *single) undo(a *lockArgs, inFlight, ended bool) {
	args := slices.Clone(a.release)
	if ended && len(args) > 4 {
		args[4] = a.entry
	}
	s.calls.undo(func(ctx context.Context) (int64, error) {
		deleted, err := s.releaseWith(ctx, a, args)
		if deleted {
			return 1, err
		}
		return 0, err
	}, inFlight)
}

// leave takes the entry of a waiter that gives up out of the queue, and
// the lock with it if it was handed over to the entry: a release of the
// entry's token that leaves. It waits lastAttemptGrace at most, whatever
// ctx says, so that the caller's next attempt, a TryAcquire, finds the
// waiter gone; a call that fails or takes longer goes on in the
// background, retried for a few seconds (see calls.undo). Past that, the
// entry ends within queueLife, and a lock handed over to it within its TTL.
func (s *single) leave(ctx context.Context, a *lockArgs) {
	if a.entry == "" {
		return
	}
	args := leaveArgs(a, a.entry)
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lastAttemptGrace)
	_, err := s.releaseWith(lctx, a, args)
	cancel()
	if err != nil {
		s.leaveAgain(a, []string{a.entry})
	}
}

// leaveArgs returns the release script's arguments, for the lock a, that
// take the queue entry entry out of the queue, and release the lock if it
// was handed over to it: its token, and entry as the one leaving.
func leaveArgs(a *lockArgs, entry string) []any {
	args := slices.Clone(a.release)
	args[0], args[4] = entryToken(entry), entry
	return args
}

// settleWait is how long an acquisition's reply is awaited after its caller
// gave up, so that a lock granted late can be released.
const settleWait = 3 * time.Second

func (s *single) release(ctx context.Context, a *lockArgs, _ time.Duration) (bool, error) {
	return s.releaseWith(ctx, a, a.release)
}

// releaseWith runs the release script with args, naming the local
// waiters of this Locker if the lock is this Locker's under args[0] (see
// holds.go), and delivers the lock to the waiter of this Locker it was
// handed over to, if any. It reports whether the caller's lock was deleted.
// Inline, it builds no closure: that is the uncontended path's cost.
func (s *single) releaseWith(ctx context.Context, a *lockArgs, args []any) (bool, error) {
	s.notify.releasing(a.key, 1)
	defer s.notify.releasing(a.key, -1)
	token, _ := args[0].(string)
	named, waiters := s.notify.named(a.key, token)
	if len(named) > 0 {
		args = append(slices.Clip(args), named...)
	}
	sent := time.Now()
	if s.calls.inline(ctx) {
		return s.runRelease(ctx, a, args, waiters, sent)
	}
	ran := false
	deleted, abandoned, err := run(s.calls, ctx, func(ctx context.Context) (bool, error) {
		ran = true
		return s.runRelease(ctx, a, args, waiters, sent)
	}, nil)
	if !abandoned && !ran {
		// Never sent (ctx had ended): the waiters it named look for
		// themselves.
		s.notify.released(a.key, token, waiters, "", grant{})
	}
	return deleted, err
}

// runRelease runs the release script, sent at sent and naming the local
// waiters named, and reads its reply: where the call was made, so that a
// waiter the lock was handed over to has it as soon as the reply comes,
// even when the releasing caller stopped waiting for it.
func (s *single) runRelease(ctx context.Context, a *lockArgs, args []any, named []*waiter, sent time.Time) (bool, error) {
	token := args[0].(string)
	reply, err := releaseScript.Run(ctx, s.client, a.releaseKeys(), args...).Result()
	var deleted bool
	var to string
	var g grant
	if err == nil {
		deleted, to, g, err = s.releaseReply(reply, sent)
	}
	s.leaveAgain(a, s.notify.released(a.key, token, named, to, g))
	return deleted, err
}

// leaveAgain takes the entries of waiters of this Locker that left out of
// the queue again, in the background, and releases the lock with each if
// it was handed over to it: a script that ran after they left (a release
// naming them, a fellow's attempt carrying them) may have put them back.
func (s *single) leaveAgain(a *lockArgs, entries []string) {
	for _, entry := range entries {
		args := leaveArgs(a, entry)
		s.calls.background(func() {
			s.calls.undo(func(ctx context.Context) (int64, error) {
				_, err := s.releaseWith(ctx, a, args)
				return 0, err
			}, false)
		})
	}
}

// releaseReply reads the release script's reply to a request sent at sent:
// whether the caller's lock was deleted, and, for a lock handed over to a
// waiter of this Locker, its entry and the grant the waiter takes. The
// waiter holds the lock from the script's run, which was after sent, for
// the TTL in its entry.
func (s *single) releaseReply(reply any, sent time.Time) (deleted bool, to string, g grant, err error) {
	switch r := reply.(type) {
	case int64:
		return r == 1, "", grant{}, nil
	case []any:
		if len(r) == 4 {
			fence, ok1 := r[1].(int64)
			entry, ok2 := r[2].(string)
			del, ok3 := r[3].(int64)
			if ttl, ok4 := entryTTL(entry); ok1 && ok2 && ok3 && ok4 {
				return del == 1, entry, grant{held: true, handed: true, fence: fence, validUntil: validUntil(sent, ttl)}, nil
			}
		}
	}
	return false, "", grant{}, fmt.Errorf("unexpected release reply %v", reply)
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
	return acquireScript.Run(ctx, client, a.keys, a.acquire...).Int64Slice()
}

// parseAcquire reads the acquire script's reply.
func parseAcquire(reply []int64) (grant, error) {
	if len(reply) < 2 || len(reply) > 4 {
		return grant{}, fmt.Errorf("unexpected acquire reply %v", reply)
	}
	if reply[0] == 1 {
		return grant{held: true, fence: reply[1], handed: len(reply) == 3 && reply[2] == 1}, nil
	}
	g := grant{holderTTL: time.Duration(reply[1]) * time.Millisecond, place: -1}
	if reply[1] == 0 { // expiring this very millisecond: retry at once
		g.holderTTL = time.Nanosecond
	}
	if len(reply) >= 3 {
		g.place = reply[2]
	}
	if len(reply) == 4 {
		g.at = reply[3]
	}
	return g, nil
}

// pttlReply turns the pttl script's reply into a TTL: -1ns for a key without
// expiry.
func pttlReply(n int64) time.Duration {
	if n < 0 {
		return -1
	}
	return time.Duration(n) * time.Millisecond
}
