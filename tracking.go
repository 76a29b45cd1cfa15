package rediskit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// A tracker learns from Redis itself which keys changed, whoever changed
// them: a release by another library, a DEL from redis-cli, an expiry. It
// uses server-assisted client-side caching (Redis 6 and later) in the form
// that works over RESP2, and so with every go-redis version we support: on
// each node, one connection subscribes to __redis__:invalidate, and a
// second one has CLIENT TRACKING on, redirecting its invalidations to the
// first. Keys read on the second connection are then tracked, and Redis
// sends the first connection a message when any client modifies one of
// them, or when it expires or is evicted.
//
// Default mode, not BCAST, because a lock waiter wants to hear of one key:
// BCAST sends every change under its prefixes, and a client's prefixes may
// not overlap (keys "lock:1" and "lock:10" could not both be watched
// exactly). In default mode a key is tracked once it is read, until the
// next invalidation, so a watch reads its key on the tracked connection
// (one GET) when it starts, and again only after it has fired.
//
// The pair is the tracker's own: two go-redis clients made from the user's
// client's options (its address, credentials, TLS, dialer), each with one
// connection, in RESP2. When either connection breaks, whatever it
// tracked may have changed unseen, so every watch fires. A tracker on a
// server without tracking (miniredis, Redis 5, a proxy that refuses the
// commands) says so once, and its watches never fire: callers rely on
// their backoff, as they would without it.
type tracker struct {
	client redis.UniversalClient

	mu     sync.Mutex
	nodes  map[string]*trackNode // by node address; "" for a single node
	closed bool
	wg     sync.WaitGroup // the nodes' receivers
}

// trackNode is one node's pair of connections and the keys watched there.
type trackNode struct {
	t       *tracker
	sub     *redis.Client // holds the subscribed connection
	tracked *redis.Client // holds the tracked connection
	ps      *redis.PubSub
	calls   *calls        // the tracked connection's reads, run where a watch can leave them
	subID   atomic.Int64  // the subscribed connection's CLIENT ID, set when it connects
	dials   atomic.Int64  // connections the tracked client has made
	ready   chan struct{} // closed once set up, or failed to
	err     error         // tracking unavailable: set before ready is closed
	quit    chan struct{} // closed by close
	watches map[string][]*keyWatch
}

// keyWatch is one watch of one key: changed is closed when the key changes.
type keyWatch struct {
	node    *trackNode
	key     string
	changed chan struct{}
	once    sync.Once
}

func (w *keyWatch) fire() { w.once.Do(func() { close(w.changed) }) }

// trackWait bounds the setup of a node's pair and a watch's read.
const trackWait = time.Second

func newTracker(client redis.UniversalClient) *tracker {
	return &tracker{client: client, nodes: map[string]*trackNode{}}
}

// nodeOptions returns the options of the node that holds rkey, and its
// address, or nil for a client of a kind whose node cannot be known (a
// Ring, a wrapper).
func (t *tracker) nodeOptions(ctx context.Context, rkey string) (*redis.Options, string) {
	switch c := t.client.(type) {
	case *redis.Client:
		return c.Options(), ""
	case *redis.ClusterClient:
		node, err := c.MasterForKey(ctx, rkey)
		if err != nil {
			return nil, ""
		}
		return node.Options(), node.Options().Addr
	}
	return nil, ""
}

// watch starts watching rkey, which its caller last saw present. It
// returns a watch whose changed channel is closed when the key is
// modified, expires or is evicted, or is found absent already, or when the
// tracker may have missed a change (a connection broke); nil when tracking
// is unavailable. Stop it with unwatch.
func (t *tracker) watch(ctx context.Context, rkey string) *keyWatch {
	if t == nil {
		return nil
	}
	opts, addr := t.nodeOptions(ctx, rkey)
	if opts == nil {
		return nil
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	n := t.nodes[addr]
	if n == nil {
		// Set up once, in the background (two round trips, bounded by
		// trackWait), while watches wait for it within their ctx.
		n = &trackNode{t: t, ready: make(chan struct{}), quit: make(chan struct{}), watches: map[string][]*keyWatch{}}
		t.nodes[addr] = n
		t.wg.Add(1)
		go n.start(opts, addr)
	}
	t.mu.Unlock()
	select {
	case <-n.ready:
	case <-ctx.Done():
		return nil
	}
	if n.err != nil {
		return nil
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	w := &keyWatch{node: n, key: rkey, changed: make(chan struct{})}
	n.watches[rkey] = append(n.watches[rkey], w)
	t.mu.Unlock()

	// The read that makes Redis track the key, after the watch is in
	// place, so that a change right after it is not missed. On a
	// goroutine the watch can leave (see honoursDeadlines): the tracked
	// connection dials as the user's client does and runs its OnConnect,
	// which may ignore the deadline. A read left behind only tracks a key
	// for nobody.
	rctx, cancel := context.WithTimeout(ctx, trackWait)
	defer cancel()
	_, _, err := run(n.calls, rctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, n.tracked.Get(ctx, rkey).Err()
	}, nil)
	switch {
	case errors.Is(err, redis.Nil):
		// Gone already: released between the caller's last look and
		// this read. The change this watch is for has happened.
		w.fire()
	case err != nil && !isWrongType(err):
		// Not tracked: the wait goes on with its backoff.
		t.unwatch(w)
		return nil
	}
	return w
}

// unavailable reports that a node refused tracking: the server cannot
// track (miniredis, Redis 5), so no watch is worth asking for. A Cluster
// whose nodes differ is not expected.
func (t *tracker) unavailable() bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.nodes {
		select {
		case <-n.ready:
			if n.err != nil {
				return true
			}
		default:
		}
	}
	return t.closed
}

// unwatch stops w.
func (t *tracker) unwatch(w *keyWatch) {
	if w == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ws := w.node.watches[w.key]
	for i, o := range ws {
		if o == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(w.node.watches, w.key)
	} else {
		w.node.watches[w.key] = ws
	}
}

// start sets up the node's pair and then receives its invalidations until
// closed. When the server cannot track (an error reply such as an unknown
// command: miniredis, Redis 5, a proxy), the node keeps the error, and
// tracking is unavailable there; after any other failure (the server
// unreachable, or busy, for now), the node is dropped, and the next watch
// sets it up again.
func (n *trackNode) start(opts *redis.Options, addr string) {
	defer n.t.wg.Done()
	if !n.setup(opts) {
		if !unsupported(n.err) {
			n.t.mu.Lock()
			if n.t.nodes[addr] == n {
				delete(n.t.nodes, addr)
			}
			n.t.mu.Unlock()
		}
		return
	}
	n.receive()
}

// setup connects the node's pair, and closes ready.
func (n *trackNode) setup(opts *redis.Options) bool {
	defer close(n.ready)
	n.sub = redis.NewClient(ownOptions(opts, func(ctx context.Context, cn *redis.Conn) error {
		id, err := cn.ClientID(ctx).Result()
		if err == nil {
			n.subID.Store(id)
		}
		return err
	}))
	n.tracked = redis.NewClient(ownOptions(opts, func(ctx context.Context, cn *redis.Conn) error {
		cmd := redis.NewCmd(ctx, "CLIENT", "TRACKING", "on", "REDIRECT", n.subID.Load())
		if err := cn.Process(ctx, cmd); err != nil {
			return err
		}
		if n.dials.Add(1) > 1 {
			// A new connection: what the last one tracked is not.
			n.fireAll()
		}
		return nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), trackWait)
	defer cancel()
	n.ps = n.sub.Subscribe(ctx, "__redis__:invalidate")
	_, err := n.ps.ReceiveTimeout(ctx, trackWait) // the confirmation
	if err == nil {
		err = n.tracked.Ping(ctx).Err() // connects, and turns tracking on
	}
	if err != nil {
		n.err = err
		n.closeConns()
		return false
	}
	n.calls = newCalls(n.tracked)
	return true
}

// receive reads invalidations until the node is closed, and fires the
// watches of the keys they name. A message without keys (FLUSHALL,
// FLUSHDB: go-redis cannot parse its nil payload), or a broken
// subscription, fires every watch.
func (n *trackNode) receive() {
	ctx := context.Background()
	broken := false
	for {
		msg, err := n.ps.ReceiveTimeout(ctx, trackCheck)
		n.t.mu.Lock()
		closed := n.t.closed
		watching := len(n.watches) > 0
		n.t.mu.Unlock()
		if closed || errors.Is(err, redis.ErrClosed) {
			return
		}
		var netErr interface{ Timeout() bool }
		if errors.As(err, &netErr) && netErr.Timeout() {
			if watching {
				n.checkTracked()
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Message:
			n.fire(m.PayloadSlice)
		case *redis.Subscription:
			if broken {
				// Subscribed again, on a new connection with a new ID,
				// after messages may have been lost: point the tracked
				// connection's redirection at it.
				broken = false
				rctx, cancel := context.WithTimeout(ctx, trackWait)
				_ = n.tracked.Do(rctx, "CLIENT", "TRACKING", "on", "REDIRECT", n.subID.Load()).Err()
				cancel()
				n.fireAll()
			}
		}
		switch {
		case err == nil:
		case strings.HasPrefix(err.Error(), "redis: unsupported pubsub message payload"):
			n.fireAll()
		default: // the connection broke; go-redis redials on the next Receive
			if !broken {
				broken = true
				n.fireAll()
			}
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-t.C:
			case <-n.quit:
				t.Stop()
				return
			}
		}
	}
}

// trackCheck is how often the tracked connection is checked while keys are
// watched: Redis closes it unseen (a client idle past the server's
// timeout, CLIENT KILL), and its tracking with it, while the subscriber,
// exempt from the timeout, keeps receiving nothing.
const trackCheck = 500 * time.Millisecond

// checkTracked pings the tracked connection. A new connection (the old one
// was closed) turns tracking on again and fires every watch (see setup's
// OnConnect); a failed ping fires them too: whatever was tracked may have
// changed unseen.
func (n *trackNode) checkTracked() {
	ctx, cancel := context.WithTimeout(context.Background(), trackWait)
	defer cancel()
	if err := n.tracked.Ping(ctx).Err(); err != nil {
		n.fireAll()
	}
}

// fire fires the watches of keys and forgets them: Redis tracks a key once
// per read.
func (n *trackNode) fire(keys []string) {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	for _, k := range keys {
		for _, w := range n.watches[k] {
			w.fire()
		}
		delete(n.watches, k)
	}
}

// fireAll fires every watch of the node.
func (n *trackNode) fireAll() {
	n.t.mu.Lock()
	defer n.t.mu.Unlock()
	for k, ws := range n.watches {
		for _, w := range ws {
			w.fire()
		}
		delete(n.watches, k)
	}
}

// closeConns closes the pair's clients.
func (n *trackNode) closeConns() {
	if n.ps != nil {
		_ = n.ps.Close()
	}
	_ = n.sub.Close()
	_ = n.tracked.Close()
}

// close ends every node's pair, fires their watches, and waits for the
// receivers.
func (t *tracker) close() {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.closed = true
	nodes := t.nodes
	t.nodes = map[string]*trackNode{}
	t.mu.Unlock()
	for _, n := range nodes {
		close(n.quit)
		<-n.ready // set up, or failed: within trackWait, or a TLS or custom dial's own timeout
		n.fireAll()
		if n.err == nil {
			n.closeConns()
			n.calls.close() // reads left behind end within the client's timeouts
		}
	}
	t.wg.Wait()
}

// ownOptions are the options of a client of the library's own for the
// node of opts: its address, credentials, TLS and dialer, in RESP2 (which
// invalidation messages need), with one connection, whose calls end at
// their deadlines, and onConnect run on each new connection after the
// user's own OnConnect.
func ownOptions(opts *redis.Options, onConnect func(ctx context.Context, cn *redis.Conn) error) *redis.Options {
	userConnect := opts.OnConnect
	o := *opts
	o.Protocol = 2
	o.ContextTimeoutEnabled = true
	o.PoolSize, o.MinIdleConns, o.MaxIdleConns = 1, 0, 1
	o.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if userConnect != nil {
			if err := userConnect(ctx, cn); err != nil {
				return err
			}
		}
		return onConnect(ctx, cn)
	}
	return &o
}
