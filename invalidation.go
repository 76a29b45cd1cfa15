package rediskit

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
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
	onKeys  func([]string) // Redis keys that changed
	onFlush func()         // anything may have changed
	wg      sync.WaitGroup // the listeners

	mu       sync.Mutex
	fallback bool                 // tracking is unavailable
	tracking atomic.Bool          // a node confirmed tracking: writes need not publish
	nodes    map[string]*listener // by node address: "" for a single node or the fallback
	closed   bool
	// masters are a Cluster's masters, read at mastersAt; reading is
	// whether they are being read again.
	masters   []*redis.Options
	mastersAt time.Time
	reading   bool
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
const invalidationCheck = 500 * time.Millisecond

// invalidationChannel is the fallback's pub/sub channel: one for every
// Cache, whatever its prefix, since Caches with different prefixes may
// reach the same Redis keys ("a:" and "a:b:"). Its messages are the
// changed Redis keys, a JSON array of base64 strings (keys are any bytes).
const invalidationChannel = "rediskit:invalidate"

func newInvalidator(client redis.UniversalClient, prefix string, onKeys func([]string), onFlush func()) *invalidator {
	return &invalidator{
		client: client, prefix: prefix,
		onKeys: onKeys, onFlush: onFlush,
		nodes: map[string]*listener{},
	}
}

// ready reports whether changes to the Cache's keys will be heard from now
// on: the listeners it needs are up. It starts, in the background, those
// that are not running, and then reports false. On a Cluster it needs one
// on every master, not only on a key's: a read may follow a MOVED to a
// node the client's slot map does not name yet, and a slot may move
// between masters while its keys are in the tier.
func (inv *invalidator) ready() bool {
	inv.mu.Lock()
	fallback := inv.fallback
	inv.mu.Unlock()
	if fallback {
		return inv.readyAt(nil, "")
	}
	switch c := inv.client.(type) {
	case *redis.Client:
		return inv.readyAt(c.Options(), "")
	case *redis.ClusterClient:
		masters := inv.clusterMasters(c)
		up := len(masters) > 0
		for _, o := range masters {
			up = inv.readyAt(o, o.Addr) && up
		}
		return up
	default: // a Ring, a wrapper: which node holds rkey is not known
		inv.mu.Lock()
		inv.startFallback()
		inv.mu.Unlock()
		return false
	}
}

// readyAt reports whether the listener of the node of opts, at addr, is
// up, and starts it if it is not running. opts nil is the fallback's.
func (inv *invalidator) readyAt(opts *redis.Options, addr string) bool {
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

// clusterMasters returns the options of the Cluster's masters as last
// read, and reads them again, in the background and at most once per
// masterCheck, when they are older: never on the caller's goroutine, since
// reading them may reload the slot map from a node that does not answer.
// The listeners of nodes that are no longer masters stop (which flushes
// the tier: whatever they heard for is no longer theirs to hear).
func (inv *invalidator) clusterMasters(c *redis.ClusterClient) []*redis.Options {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if !inv.closed && !inv.reading && time.Since(inv.mastersAt) >= masterCheck {
		inv.reading = true
		inv.wg.Add(1)
		go inv.readMasters(c)
	}
	return inv.masters
}

// masterCheck is how often a Cluster's masters are read again while the
// tier is being filled.
const masterCheck = time.Second

// readMasters reads the Cluster's masters, for clusterMasters.
func (inv *invalidator) readMasters(c *redis.ClusterClient) {
	defer inv.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), trackWait)
	defer cancel()
	var mu sync.Mutex
	var masters []*redis.Options
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		masters = append(masters, m.Options())
		return nil
	})
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.reading, inv.mastersAt = false, time.Now()
	if err != nil || inv.closed {
		return
	}
	inv.masters = masters
	for addr, n := range inv.nodes {
		if addr != "" && !slices.ContainsFunc(masters, func(o *redis.Options) bool { return o.Addr == addr }) {
			delete(inv.nodes, addr)
			n.close()
		}
	}
}

// startFallback switches to the fallback channel: tracking listeners stop,
// and the fallback's starts. Call with inv.mu held.
func (inv *invalidator) startFallback() {
	if inv.fallback || inv.closed {
		return
	}
	inv.fallback = true
	inv.tracking.Store(false) // this process's writes are published again
	for addr, n := range inv.nodes {
		delete(inv.nodes, addr)
		n.close()
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
	raw := make([][]byte, len(rkeys))
	for i, k := range rkeys {
		raw[i] = []byte(k)
	}
	b, _ := json.Marshal(raw)
	p.Publish(ctx, invalidationChannel, b)
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

// close stops n, once. Call with inv.mu held.
func (n *listener) close() {
	select {
	case <-n.stop:
		return
	default:
	}
	close(n.stop)
	if n.ps != nil {
		_ = n.ps.Close()
	}
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
		switch {
		case err == nil:
			wait = 50 * time.Millisecond
			inv.receive(n, ps)
		case n.client != nil && unsupported(err):
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
		ps = inv.client.Subscribe(ctx, invalidationChannel)
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
	// What was filled from this node before it was heard (a node new to
	// the Cluster, read through a MOVED or an ASK) goes.
	inv.onFlush()
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
			var raw [][]byte
			if json.Unmarshal([]byte(m.Payload), &raw) != nil {
				inv.onFlush()
				continue
			}
			rkeys := make([]string, len(raw))
			for i, k := range raw {
				rkeys[i] = string(k)
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
		n.close()
	}
	inv.mu.Unlock()
	inv.wg.Wait()
}
