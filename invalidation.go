package rediskit

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// An invalidator tells a Cache's local tier which of its keys changed in
// Redis, whoever changed them, and when it may have missed a change.
//
// Where Redis can track keys (Redis 6 and later), it uses BCAST mode: on
// each node it keeps one connection of its own, made from the client's
// options and speaking RESP2, that turns on CLIENT TRACKING in BCAST mode
// with the Cache's key prefix, redirected to itself, and then subscribes
// to __redis__:invalidate. Redis then sends it every key written, deleted,
// expired or evicted under the prefix, by any program.
//
// BCAST, not default mode (which the lock waiters' tracker uses), because
// in default mode Redis tracks only the keys read on the tracked
// connection, so every read that may fill the tier would have to go
// through connections of the tier's own, routed to the key's node by the
// tier; BCAST leaves reads on the user's client, one round trip as before,
// at the cost of hearing of writes under the prefix that this process
// never read. A Cache with a prefix of its own ([WithKeyPrefix]) hears of
// its own keys only; one without hears of every write to the database.
//
// Where tracking is unavailable (miniredis, Redis 5, a proxy that refuses
// it, a Ring), the invalidator falls back to a pub/sub channel of its own,
// on which the Caches of every process publish the keys they write: writes
// by other programs are then bounded by the tier's TTL only.
//
// Either way, a node's listener is up only between its subscription's
// confirmation and the first sign that messages may have been lost (an
// error, a reconnect, no answer to a ping within invalidationCheck): then
// it is down, and the tier is flushed, before it comes up again.
type invalidator struct {
	client  redis.UniversalClient
	prefix  string
	channel string         // the fallback's channel
	onKeys  func([]string) // Redis keys that changed
	onFlush func()         // anything may have changed
	wg      sync.WaitGroup // the listeners

	mu       sync.Mutex
	fallback bool                 // tracking is unavailable
	tracking atomic.Bool          // a node confirmed tracking: writes need not publish
	nodes    map[string]*listener // by node address: "" for a single node or the fallback
	closed   bool
}

// A listener receives one node's invalidations (or the fallback channel's).
type listener struct {
	up     atomic.Bool
	client *redis.Client // the tracking connection's own client; nil for the fallback
	stop   chan struct{} // closed when the listener is no longer wanted
	ps     *redis.PubSub // the current subscription, guarded by inv.mu
}

// invalidationCheck is how long a listener goes without hearing from its
// connection before it pings it, and then how long it waits for the answer
// before it counts the connection as broken.
const invalidationCheck = time.Second

// invalidationChannel is the fallback's pub/sub channel for a key prefix.
func invalidationChannel(prefix string) string { return "rediskit:invalidate:" + prefix }

func newInvalidator(client redis.UniversalClient, prefix string, onKeys func([]string), onFlush func()) *invalidator {
	return &invalidator{
		client: client, prefix: prefix, channel: invalidationChannel(prefix),
		onKeys: onKeys, onFlush: onFlush,
		nodes: map[string]*listener{},
	}
}

// ready reports whether changes to rkey will be heard from now on: the
// listener of its node is up. If that listener is not running, ready starts
// it in the background and reports false.
func (inv *invalidator) ready(ctx context.Context, rkey string) bool {
	var opts *redis.Options
	addr := ""
	inv.mu.Lock()
	fallback := inv.fallback
	inv.mu.Unlock()
	if !fallback {
		switch c := inv.client.(type) {
		case *redis.Client:
			opts = c.Options()
		case *redis.ClusterClient:
			node, err := c.MasterForKey(ctx, rkey)
			if err != nil {
				return false
			}
			opts, addr = node.Options(), node.Options().Addr
		default: // a Ring, a wrapper: which node holds rkey is not known
			inv.mu.Lock()
			inv.startFallback()
			inv.mu.Unlock()
			return false
		}
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.closed {
		return false
	}
	if inv.fallback {
		addr, opts = "", nil
	}
	n := inv.nodes[addr]
	if n == nil {
		n = &listener{stop: make(chan struct{})}
		if opts != nil {
			n.client = redis.NewClient(inv.trackingOptions(opts))
		}
		inv.nodes[addr] = n
		inv.wg.Add(1)
		go inv.listen(n, addr)
		return false
	}
	return n.up.Load()
}

// startFallback switches to the fallback channel: tracking listeners stop,
// and the fallback's starts. Call with inv.mu held.
func (inv *invalidator) startFallback() {
	if inv.fallback || inv.closed {
		return
	}
	inv.fallback = true
	for addr, n := range inv.nodes {
		delete(inv.nodes, addr)
		close(n.stop)
		if n.ps != nil {
			_ = n.ps.Close()
		}
	}
	n := &listener{stop: make(chan struct{})}
	inv.nodes[""] = n
	inv.wg.Add(1)
	go inv.listen(n, "")
}

// publishes reports whether the Cache's writes must be published on the
// fallback channel: unless tracking is known to work, since a process
// that only writes never learns which the others use.
func (inv *invalidator) publishes() bool { return !inv.tracking.Load() }

// publish tells the other processes' fallback listeners that rkeys changed.
func (inv *invalidator) publish(ctx context.Context, p redis.Cmdable, rkeys ...string) {
	b, _ := json.Marshal(rkeys)
	p.Publish(ctx, inv.channel, b)
}

// trackingOptions are the options of a node's tracking connection: the
// node's, in RESP2, with one connection that turns tracking on, in BCAST
// mode under the prefix, redirected to itself, each time it connects.
func (inv *invalidator) trackingOptions(opts *redis.Options) *redis.Options {
	return ownOptions(opts, func(ctx context.Context, cn *redis.Conn) error {
		id, err := cn.ClientID(ctx).Result()
		if err != nil {
			return err
		}
		args := []any{"CLIENT", "TRACKING", "on", "REDIRECT", id, "BCAST"}
		if inv.prefix != "" {
			args = append(args, "PREFIX", inv.prefix)
		}
		return cn.Process(ctx, redis.NewCmd(ctx, args...))
	})
}

// listen keeps n's subscription up until n is stopped or the invalidator
// closed, passing on what it hears. A tracking node that refuses tracking
// (an error reply to CLIENT TRACKING: miniredis, Redis 5, a proxy) turns
// the invalidator to the fallback.
func (inv *invalidator) listen(n *listener, addr string) {
	defer inv.wg.Done()
	if n.client != nil {
		defer n.client.Close()
	}
	wait := 50 * time.Millisecond
	for {
		ps, err := inv.subscribe(n)
		var replyErr redis.Error
		switch {
		case err == nil:
			wait = 50 * time.Millisecond
			inv.receive(n, ps)
		case n.client != nil && errors.As(err, &replyErr):
			inv.mu.Lock()
			inv.startFallback()
			inv.mu.Unlock()
		}
		if ps != nil {
			_ = ps.Close()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			wait = min(2*wait, invalidationCheck)
		case <-n.stop:
			t.Stop()
			return
		}
	}
}

// subscribe opens n's subscription and waits for its confirmation: the
// tracking connection's first, on which OnConnect turned tracking on, or
// the fallback channel's, on the user's client.
func (inv *invalidator) subscribe(n *listener) (*redis.PubSub, error) {
	ctx, cancel := context.WithTimeout(context.Background(), trackWait)
	defer cancel()
	var ps *redis.PubSub
	if n.client != nil {
		ps = n.client.Subscribe(ctx, "__redis__:invalidate")
	} else {
		ps = inv.client.Subscribe(ctx, inv.channel)
	}
	inv.mu.Lock()
	select {
	case <-n.stop:
		inv.mu.Unlock()
		return ps, redis.ErrClosed
	default:
	}
	n.ps = ps
	inv.mu.Unlock()
	if _, err := ps.ReceiveTimeout(ctx, trackWait); err != nil {
		return ps, err
	}
	return ps, nil
}

// receive marks n up and passes on what ps hears until it breaks, goes
// quiet past a ping, or is closed; then it marks n down and flushes.
func (inv *invalidator) receive(n *listener, ps *redis.PubSub) {
	if n.client != nil {
		inv.tracking.Store(true)
	}
	n.up.Store(true)
	defer func() {
		n.up.Store(false)
		inv.onFlush()
	}()
	ctx := context.Background()
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, invalidationCheck)
		var netErr interface{ Timeout() bool }
		switch {
		case err == nil:
			pinged = false
		case errors.As(err, &netErr) && netErr.Timeout() && !pinged:
			// Quiet: a subscriber is exempt from the server's idle
			// timeout, so a silent connection may be a dead one.
			pinged = true
			if ps.Ping(ctx) == nil {
				continue
			}
			return
		case strings.HasPrefix(err.Error(), "redis: unsupported pubsub message payload"):
			inv.onFlush() // FLUSHALL, FLUSHDB: a message without keys
			continue
		default: // broken, closed, or no answer to the ping
			return
		}
		m, ok := msg.(*redis.Message)
		switch {
		case !ok:
		case n.client != nil:
			inv.onKeys(m.PayloadSlice)
		default:
			var rkeys []string
			if json.Unmarshal([]byte(m.Payload), &rkeys) != nil {
				inv.onFlush()
				continue
			}
			inv.onKeys(rkeys)
		}
	}
}

// close stops every listener and waits for them.
func (inv *invalidator) close() {
	inv.mu.Lock()
	if inv.closed {
		inv.mu.Unlock()
		return
	}
	inv.closed = true
	for _, n := range inv.nodes {
		close(n.stop)
		if n.ps != nil {
			_ = n.ps.Close()
		}
	}
	inv.mu.Unlock()
	inv.wg.Wait()
}
