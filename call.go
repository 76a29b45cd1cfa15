package rediskit

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// A go-redis client ignores a context's deadline and cancellation during
// socket I/O unless it was built with ContextTimeoutEnabled; it then waits
// for its ReadTimeout (3 s by default), and retries. A Locker must not wait
// that long: its callers have deadlines, and a lock's validity does not
// stretch. So each Redis call runs where its caller can stop waiting for it,
// and what the call does after that (take a lock nobody will use, say) is
// settled in the background when its reply arrives.

// calls runs a store's Redis calls and keeps track of those their callers
// stopped waiting for, so that closing the Locker can wait for them.
type calls struct {
	// honours is whether every call on the client stops at its context's
	// deadline (see honoursDeadlines).
	honours bool

	mu      sync.Mutex
	closed  bool
	quit    chan struct{} // closed by close
	pending sync.WaitGroup
}

func newCalls(client redis.UniversalClient) *calls {
	return &calls{honours: honoursDeadlines(client), quit: make(chan struct{})}
}

// honoursDeadlines reports whether every call on client stops at its
// context's deadline, wherever it waits, so that it can run on its
// caller's goroutine. Only a single-node client can, and only with
// ContextTimeoutEnabled, socket deadlines not disabled (a ReadTimeout or
// WriteTimeout of -2, which go-redis keeps negative), connections made by
// go-redis's own dialer without TLS, and none of the user's functions that
// go-redis calls on the caller's goroutine (see userCallbacks). go-redis
// 9.5 dials TLS with tls.DialWithDialer, whose handshake only DialTimeout
// bounds; a Dialer of the user's (or of a Sentinel client, which looks the
// master up under a mutex) may ignore the ctx too. Not a Cluster: to route
// a command it may wait for the nodes' COMMAND reply under a mutex, behind
// another caller's, or (go-redis 9.23) on a 5-second context of its own.
// Not a Ring, whose shards' clients may be made by the user's NewClient,
// nor clients of unknown types. Hooks added with AddHook cannot be seen:
// the package documentation asks that they honour the ctx.
func honoursDeadlines(client redis.UniversalClient) bool {
	c, ok := client.(*redis.Client)
	if !ok || c == nil {
		return false
	}
	o := c.Options()
	return o.ContextTimeoutEnabled && o.ReadTimeout >= 0 && o.WriteTimeout >= 0 && o.TLSConfig == nil &&
		isDefaultDialer(o.Dialer) && !hasUserCallbacks(o)
}

// userCallbacks are the fields of go-redis's Options (those of the version
// in use) that hold functions of the user's which go-redis calls on the
// caller's goroutine, some without its ctx: a token fetch, a rate limiter,
// commands on a new connection.
var userCallbacks = []string{"OnConnect", "CredentialsProvider", "CredentialsProviderContext", "StreamingCredentialsProvider", "Limiter"}

// hasUserCallbacks reports whether any of userCallbacks is set in o.
func hasUserCallbacks(o *redis.Options) bool {
	v := reflect.ValueOf(o).Elem()
	for _, name := range userCallbacks {
		if f := v.FieldByName(name); f.IsValid() && !f.IsZero() {
			return true
		}
	}
	return false
}

// dialer is the type of go-redis's Options.Dialer.
type dialer = func(ctx context.Context, network, addr string) (net.Conn, error)

// defaultDialer returns the code of the dialer go-redis gives a client made
// without one: NewDialer's, inlined where the client's options are set up,
// so that a NewDialer called elsewhere (with other options: TLS, say) has
// code of its own. Where NewDialer is not inlined (built with -l, as
// debuggers do), the two cannot be told apart, and no dialer counts as the
// client's own: 0.
var defaultDialer = sync.OnceValue(func() uintptr {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"}) // never dials
	defer c.Close()
	own := reflect.ValueOf(c.Options().Dialer).Pointer()
	if own == reflect.ValueOf(redis.NewDialer(&redis.Options{})).Pointer() {
		return 0
	}
	return own
})

// isDefaultDialer reports whether d is the dialer go-redis gives a client
// made without one, which honours its ctx (but over TLS in go-redis 9.5).
func isDefaultDialer(d dialer) bool {
	return d != nil && reflect.ValueOf(d).Pointer() == defaultDialer()
}

// inline reports whether a call on ctx can run on the caller's goroutine:
// when ctx never ends, or when the client itself stops at ctx's deadline.
// A cancellation before the deadline is then noticed when the client
// returns, at the deadline at the latest. A client that stops at the
// deadline drops the reply, so what a call left behind is undone blind
// (see undo).
func (cs *calls) inline(ctx context.Context) bool {
	if ctx.Done() == nil {
		return true
	}
	_, ok := ctx.Deadline()
	return ok && cs.honours
}

// run calls op and returns its result, or ctx's error as soon as ctx ends,
// whichever comes first. In the latter case abandoned is true, op goes on in
// the background, and settle, if not nil, is called with its result when it
// returns: that is where a call's effect that nobody will use is undone.
// After close, run waits for op whatever ctx does. With settle, op always
// runs on a goroutine of its own, unless ctx never ends: on the caller's, a
// client that honours ctx's deadline would drop the reply that settle
// needs.
func run[T any](cs *calls, ctx context.Context, op func(context.Context) (T, error), settle func(T, error)) (v T, abandoned bool, err error) {
	if err := ctx.Err(); err != nil {
		return v, false, err // not even sent
	}
	if ctx.Done() == nil || (settle == nil && cs.inline(ctx)) || !cs.track() {
		v, err = op(ctx)
		return v, false, err
	}
	type result struct {
		v   T
		err error
	}
	// state decides, once, whether the caller takes op's result (1) or
	// gave up on it (2), so that the result is used or settled, never both.
	var state atomic.Int32
	done := make(chan result, 1)
	go func() {
		defer cs.pending.Done()
		v, err := op(ctx)
		if state.CompareAndSwap(0, 1) {
			done <- result{v, err}
		} else if settle != nil {
			settle(v, err)
		}
	}()
	select {
	case r := <-done:
		return r.v, false, r.err
	case <-ctx.Done():
		if !state.CompareAndSwap(0, 2) {
			r := <-done // op has just returned: take its result
			return r.v, false, r.err
		}
		return v, true, ctx.Err()
	}
}

// background runs fn on a goroutine that close waits for; after close it
// runs fn at once, on the caller's goroutine.
func (cs *calls) background(fn func()) {
	if !cs.track() {
		fn()
		return
	}
	go func() {
		defer cs.pending.Done()
		fn()
	}()
}

// undoRetries are how long undo waits before each of its retries.
var undoRetries = []time.Duration{50 * time.Millisecond, 250 * time.Millisecond, time.Second, settleWait}

// undo releases, with release (token-checked, bounded by undoTimeout), an
// acquisition nobody will use. When the acquisition's request may still be
// on its way (inFlight), held up in the network or a proxy, a release sent
// on another connection can overtake it and find nothing: undo then looks
// again after each of undoRetries, until a release finds the lock or the
// calls are closed. A release that fails is retried the same way. Run it
// with background.
func (cs *calls) undo(release func(context.Context) (int64, error), inFlight bool) {
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
		n, err := release(ctx)
		cancel()
		done := err == nil && (n == 1 || !inFlight)
		if done || i == len(undoRetries) {
			return
		}
		t := time.NewTimer(undoRetries[i])
		select {
		case <-t.C:
		case <-cs.quit:
			t.Stop()
			return
		}
	}
}

// undoTimeout bounds each release that undoes an unused acquisition.
const undoTimeout = time.Second

// track counts one more call in the background, unless closed.
func (cs *calls) track() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return false
	}
	cs.pending.Add(1)
	return true
}

// close waits for the calls in the background, which end within the
// client's own timeouts.
func (cs *calls) close() {
	cs.mu.Lock()
	if !cs.closed {
		cs.closed = true
		close(cs.quit)
	}
	cs.mu.Unlock()
	cs.pending.Wait()
}

// inFlight reports whether, after err, an acquisition's request may still
// be on its way to Redis: any error but a Redis reply and those of notSent.
// A context error counts: go-redis returns one when it gave up waiting for
// a pooled connection (nothing sent), but also when it gave up between
// retries of a request sent on a connection that then timed out.
func inFlight(err error) bool {
	var replyErr redis.Error
	return err != nil && !errors.As(err, &replyErr) && !notSent(err)
}

// notSent reports an error that a request met before it left the client:
// no connection to be had from the pool, a refused or failed dial, a closed
// client. Nothing reached Redis, so there is nothing to undo.
func notSent(err error) bool {
	var opErr *net.OpError
	return errors.Is(err, redis.ErrClosed) || (errors.As(err, &opErr) && opErr.Op == "dial") ||
		// go-redis's pool.ErrPoolTimeout, internal before v9.
		err.Error() == "redis: connection pool timeout"
}

// transient reports whether err is one a wait may outlast: a broken or
// refused connection, a timeout, or a Redis reply saying the server or the
// cluster is busy, loading or failing over. Script errors, wrong types and
// the like are not: retrying cannot help.
func transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, redis.ErrClosed) {
		return false // the client was closed: nothing will get better
	}
	var replyErr redis.Error
	if errors.As(err, &replyErr) {
		msg := replyErr.Error()
		for _, p := range transientReplies {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true // connection errors, timeouts, a pool exhausted
}

// transientReplies are the Redis error replies that go away by themselves.
var transientReplies = []string{
	"LOADING", "BUSY ", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY",
	"NOREPLICAS", "MOVED", "ASK", "OOM",
}

// isWrongType reports a WRONGTYPE reply: the key holds another Redis type.
// A script's error may carry it after a prefix of its own (Redis 6,
// miniredis: "ERR Error running script ...: WRONGTYPE ...").
func isWrongType(err error) bool {
	var replyErr redis.Error
	return errors.As(err, &replyErr) && strings.Contains(replyErr.Error(), "WRONGTYPE")
}

// unsupported reports an error reply that says the server cannot do what
// was asked (an unknown command or subcommand, a syntax it does not know,
// NOPERM: an ACL user without the command): not one that says it cannot
// now (BUSY running a script, LOADING its data, NOAUTH while a password
// changes, a cluster that is down).
func unsupported(err error) bool {
	var replyErr redis.Error
	if !errors.As(err, &replyErr) {
		return false
	}
	for _, now := range []string{"BUSY", "LOADING", "NOAUTH", "WRONGPASS", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "MISCONF", "OOM"} {
		if strings.HasPrefix(replyErr.Error(), now) {
			return false
		}
	}
	return true
}
