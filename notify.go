package rediskit

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Waiting acquisitions are woken by the release script's publish instead of
// polling. A Locker keeps one pub/sub connection (one per node on a Redis
// Cluster, where sharded pub/sub keeps a message on its slot's node) and
// subscribes it to the channels of the keys its goroutines wait for.
//
// On one Redis, where the fleet's waiters queue in Redis (see queue.go),
// each Locker has a channel of its own per key, and a message names the
// waiter it wakes: one release wakes one waiter of the fleet. Those
// channels stay subscribed for notifyLinger after their last waiter left,
// so that a lone waiter does not pay a subscription per acquisition. A
// Redlock's waiters share one channel per key, and a message wakes the
// longest-waiting goroutine of each process.
//
// Lost messages cost latency, never progress: every wait is also bounded by
// the backoff and by the holder's TTL.

// Variables, not constants, so that tests can shorten them.
var (
	// notifyLinger is how long an idle subscription is kept for the next
	// wait before its goroutine and connection go; Close ends it at once.
	notifyLinger = 30 * time.Second
	// notifyTick is how often the receive loop looks up from reading to
	// check whether it has been idle long enough.
	notifyTick = time.Second
)

// confirmWait bounds the wait for a subscription's confirmation; past it,
// the waiter goes on with backoff alone.
const confirmWait = time.Second

// subscribeRetry is the pause before a (S)SUBSCRIBE whose write failed is
// written again.
const subscribeRetry = 100 * time.Millisecond

type notifyMode int

const (
	notifyNone    notifyMode = iota // no wake-ups: backoff alone (Ring)
	notifyClassic                   // PUBLISH and SUBSCRIBE
	notifySharded                   // SPUBLISH and SSUBSCRIBE (Redis 7), per cluster node
)

func notifyModeFor(client redis.UniversalClient) notifyMode {
	switch client.(type) {
	case *redis.ClusterClient:
		return notifySharded
	case *redis.Ring: // its shard for a channel is not knowable from here
		return notifyNone
	}
	return notifyClassic
}

// publishCommand is the command the release script publishes with.
func (m notifyMode) publishCommand() string {
	switch m {
	case notifyClassic:
		return "PUBLISH"
	case notifySharded:
		return "SPUBLISH"
	}
	return ""
}

// notifier delivers release messages to a Locker's waiting goroutines.
type notifier struct {
	client  redis.UniversalClient
	mode    notifyMode
	publish any    // mode.publishCommand(), boxed once for the release script
	id      string // names this Locker in the fleet's queues and its channels
	// id, and queueLife (an entry's life, and the claim bound) and
	// queueLife - handOverFresh in milliseconds, boxed once for the
	// scripts.
	idArg, lifeArg, freshArg any
	linger, tick             time.Duration

	mu      sync.Mutex
	subs    map[string]*subscription // by node address; "" in classic mode
	entries map[string]*waiter       // the waiters queued in Redis, by queue entry
	// releases counts the releases in progress by lock key: a waiter that
	// hears through Redis's tracking that its key changed may be about to
	// be handed the lock by one.
	releases map[string]int
	// holds are the locks this Locker holds that goroutines wait for in
	// process, by lock key (see holds.go).
	holds   map[string]hold
	sweepAt int // the size of holds at which held sweeps it
	// departed are the waiters that gave up while a release or a fellow's
	// attempt may have put their entries in the queue, by entry (see
	// holds.go); ghost takes such an entry out of the queue again, and
	// releases a lock handed over to it.
	departed      map[string]departure
	departSweepAt int // the size of departed at which departLocked sweeps it
	ghost         func(key, entry string)
	closed        bool
	running       sync.WaitGroup // the subscriptions' goroutines
}

// subscription is one pub/sub connection, the goroutine reading it, and
// the goroutine writing its (un)subscriptions.
//
// The writes go through a queue, in the order the waiters came and went,
// so that the server's state follows ours, and on a goroutine of their own,
// so that a node that does not answer (a write waits for go-redis to dial
// it, up to its DialTimeout) holds up nobody: not the notifier's lock, which
// waiters on every node share, and not a waiter's deadline.
type subscription struct {
	ps        *redis.PubSub
	node      string
	channels  map[string]*channel
	idleSince time.Time      // when channels became empty
	reaped    time.Time      // when lingering channels were last reaped
	ops       []subOp        // writes not yet made
	unsubs    map[string]int // our unsubscribes not yet confirmed, by channel
	kick      chan struct{}
	quit      chan struct{} // closed when the subscription ends
	done      chan struct{} // closed when the reader has exited
	wdone     chan struct{} // closed when the writer has exited
}

// subOp is one queued write: subscribe or unsubscribe a channel.
type subOp struct {
	subscribe bool
	name      string
}

// channel holds the goroutines waiting on one key, oldest first.
type channel struct {
	name string
	// confirmed is closed when the server confirms the subscription, and
	// made anew when the channel is subscribed again.
	confirmed chan struct{}
	waiters   []*waiter
	moved     bool // the server unsubscribed it: its slot moved
	// linger keeps the channel subscribed for notifyLinger after its last
	// waiter left (idleSince); a Locker's own channels do.
	linger    bool
	idleSince time.Time
	// nextPoll is when the oldest waiter's sleep ends and it polls Redis;
	// zero when it took the lock, so that the next one starts afresh.
	nextPoll time.Time
}

// waiter is one waiting acquisition.
type waiter struct {
	sub  *subscription
	ch   *channel
	wake chan struct{} // buffered: a wake-up is never lost while it waits
	turn chan struct{} // buffered: signalled when w becomes its channel's oldest waiter
	// For a waiter queued in Redis: its queue entry, and the lock a
	// release of this Locker handed over to it, not yet taken.
	entry  string
	handed *grant
	// For a waiter in process behind a lock its Locker holds (see
	// holds.go): the lock's key, when it came, whether it still waits
	// there, or has stopped and its first attempt is not done, and whether
	// a release or a fellow waiter's attempt may have put its entry in the
	// queue; and whether its wait ended without the lock.
	holdKey                             string
	arrived                             time.Time
	local, joining, mayBeQueued, failed bool
}

func newWaiter(sub *subscription, ch *channel) *waiter {
	return &waiter{sub: sub, ch: ch, wake: make(chan struct{}, 1), turn: make(chan struct{}, 1)}
}

func newNotifier(client redis.UniversalClient) *notifier {
	mode := notifyModeFor(client)
	id := newID()
	return &notifier{client: client, mode: mode, publish: mode.publishCommand(),
		id: id, idArg: id, lifeArg: queueLife.Milliseconds(), freshArg: (queueLife - handOverFresh).Milliseconds(),
		linger: notifyLinger, tick: notifyTick, subs: map[string]*subscription{}, entries: map[string]*waiter{},
		releases: map[string]int{}, holds: map[string]hold{}, sweepAt: 64, departed: map[string]departure{}, departSweepAt: 64}
}

// releasing notes that a release of the lock on key starts (+1) or ended
// (-1).
func (n *notifier) releasing(key string, delta int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.releases[key] += delta; n.releases[key] <= 0 {
		delete(n.releases, key)
	}
}

// inRelease reports whether a release of the lock on key is in progress.
func (n *notifier) inRelease(key string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.releases[key] > 0
}

// register makes a waiter for a queue entry, known to the notifier from
// now on, so that a message or a hand-over naming the entry reaches it;
// it is subscribed to its channel later, with attach. It returns nil after
// close.
func (n *notifier) register(entry string) *waiter {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.entries == nil {
		return nil
	}
	w := newWaiter(nil, nil)
	w.entry = entry
	n.entries[entry] = w
	return w
}

// deregister forgets w, made by register, and takes it off its channel;
// failed says that its wait ended without the lock. Messages and
// hand-overs naming its entry go nowhere after it.
func (n *notifier) deregister(w *waiter, failed bool) {
	if w == nil {
		return
	}
	n.mu.Lock()
	if n.entries[w.entry] == w {
		delete(n.entries, w.entry)
	}
	w.failed = failed
	if failed && w.mayBeQueued {
		n.departLocked(w)
	}
	n.unqueueLocked(w)
	n.mu.Unlock()
	n.detach(w)
}

// detach takes w, made by register, off its channel, if it is on one; the
// channel lingers (see reap).
func (n *notifier) detach(w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch := w.ch; ch != nil {
		ch.waiters = slices.DeleteFunc(ch.waiters, func(o *waiter) bool { return o == w })
		if len(ch.waiters) == 0 {
			ch.idleSince = time.Now()
		}
		w.sub, w.ch = nil, nil
	}
}

// reap unsubscribes the lingering channels that have had no waiter for
// linger. The caller holds n.mu.
func (sub *subscription) reap(linger time.Duration) {
	for name, ch := range sub.channels {
		if ch.linger && len(ch.waiters) == 0 && time.Since(ch.idleSince) >= linger {
			delete(sub.channels, name)
			if len(sub.channels) == 0 {
				sub.idleSince = time.Now()
			}
			sub.enqueue(subOp{subscribe: false, name: name})
		}
	}
}

// takeHanded returns the lock handed over to w, if any, and forgets it.
func (n *notifier) takeHanded(w *waiter) *grant {
	if w == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	g := w.handed
	w.handed = nil
	return g
}

// newID returns 8 random bytes as 11 URL-safe characters, or, should
// crypto/rand fail, the time.
func newID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		binary.BigEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// watch registers a waiter for the channel and returns once the server has
// confirmed the subscription, so that every release published after it is
// seen. It returns nil when wake-ups are unavailable (off, closed, or the
// subscription failed): the caller then relies on backoff alone.
//
// joined reports that another waiter had already subscribed the channel
// when w was registered. The caller need not retry at once: a release it
// missed was either published to the subscription and woke an earlier
// waiter, or came before the subscription took effect, and then the waiter
// that subscribed sees it, since it retries once the subscription is
// confirmed.
func (n *notifier) watch(ctx context.Context, name string) (w *waiter, joined bool) {
	w = newWaiter(nil, nil)
	ok, joined := n.attach(ctx, w, name, false, true)
	if !ok {
		return nil, false
	}
	return w, joined
}

// attach puts w on the channel name, subscribing it if need be, and, if
// confirm, returns once the server has confirmed the subscription (see
// watch). It
// reports false when wake-ups are unavailable. A lingering channel (one of
// the Locker's own, see channel) is joined only if it was confirmed before
// w came: a message published to it earlier named one waiter, possibly w,
// and was lost.
func (n *notifier) attach(ctx context.Context, w *waiter, name string, linger, confirm bool) (ok, joined bool) {
	if n.mode == notifyNone {
		return false, false
	}
	node := ""
	var nodeClient *redis.Client
	if n.mode == notifySharded {
		cc, ok := n.client.(*redis.ClusterClient)
		if !ok {
			return false, false
		}
		var err error
		if nodeClient, err = cc.MasterForKey(ctx, name); err != nil {
			return false, false
		}
		node = nodeClient.Options().Addr
	}

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return false, false
	}
	sub := n.subs[node]
	if sub == nil {
		sub = &subscription{node: node, channels: map[string]*channel{}, unsubs: map[string]int{},
			kick: make(chan struct{}, 1), quit: make(chan struct{}),
			done: make(chan struct{}), wdone: make(chan struct{})}
		if nodeClient != nil {
			sub.ps = nodeClient.SSubscribe(context.WithoutCancel(ctx))
		} else {
			sub.ps = n.client.Subscribe(context.WithoutCancel(ctx))
		}
		n.subs[node] = sub
		n.running.Add(2)
		go n.receive(sub)
		go n.write(sub)
	}
	ch := sub.channels[name]
	switch {
	case ch == nil:
		ch = &channel{name: name, confirmed: make(chan struct{}), linger: linger}
		sub.channels[name] = ch
		sub.enqueue(subOp{subscribe: true, name: name})
	case linger:
		joined = ch.isConfirmed()
	default:
		joined = true
	}
	w.sub, w.ch = sub, ch
	ch.waiters = append(ch.waiters, w)
	confirmed := ch.confirmed
	n.mu.Unlock()
	if !confirm {
		return true, joined
	}

	t := time.NewTimer(confirmWait)
	defer t.Stop()
	select {
	case <-confirmed:
	case <-ctx.Done():
	case <-t.C:
	}
	return true, joined
}

// queue registers a waiter behind the goroutines of this process already
// waiting on the channel, if there are any; otherwise it returns nil. A
// queued waiter need not attempt before its turn: the releases that would
// let it in wake those ahead of it first, and then it (see watch for why no
// release is missed).
func (n *notifier) queue(name string) *waiter {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	for _, sub := range n.subs {
		ch := sub.channels[name]
		if ch == nil || len(ch.waiters) == 0 {
			continue
		}
		w := newWaiter(sub, ch)
		ch.waiters = append(ch.waiters, w)
		return w
	}
	return nil
}

// unwatch removes w. A wake-up w received but did not use, pending or
// taken (passOn), goes to the next waiter, and a channel nobody waits on any
// more is unsubscribed.
func (n *notifier) unwatch(w *waiter, passOn bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := w.ch
	for i, o := range ch.waiters {
		if o == w {
			ch.waiters = append(ch.waiters[:i], ch.waiters[i+1:]...)
			if i == 0 && len(ch.waiters) > 0 {
				select { // the next one polls now
				case ch.waiters[0].turn <- struct{}{}:
				default:
				}
			}
			break
		}
	}
	select {
	case <-w.wake:
		passOn = true
	default:
	}
	if passOn {
		wakeOne(ch)
	}
	if len(ch.waiters) > 0 || w.sub.channels[ch.name] != ch {
		return
	}
	delete(w.sub.channels, ch.name)
	if len(w.sub.channels) == 0 {
		w.sub.idleSince = time.Now()
	}
	w.sub.enqueue(subOp{subscribe: false, name: ch.name})
}

// enqueue queues a write for the writer. The caller holds n.mu.
func (sub *subscription) enqueue(op subOp) {
	if !op.subscribe {
		sub.unsubs[op.name]++
	}
	sub.ops = append(sub.ops, op)
	sub.kickWriter()
}

// kickWriter tells the writer there is work.
func (sub *subscription) kickWriter() {
	select {
	case sub.kick <- struct{}{}:
	default: // already kicked
	}
}

// unconfirmed takes one of our unsubscribes of name off the count, and
// reports whether there was one. The caller holds n.mu.
func (sub *subscription) unconfirmed(name string) bool {
	if sub.unsubs[name] == 0 {
		return false
	}
	if sub.unsubs[name]--; sub.unsubs[name] == 0 {
		delete(sub.unsubs, name)
	}
	return true
}

// write makes the subscription's queued writes, in order, until it ends.
// Each is bounded by confirmWait. A subscribe that fails is written again
// until it goes through, its channel is wanted no more, or the
// subscription ends; meanwhile its waiters rely on backoff, as after a
// lost message.
func (n *notifier) write(sub *subscription) {
	defer n.running.Done()
	defer close(sub.wdone)
	for {
		select {
		case <-sub.quit:
			return
		case <-sub.kick:
		}
		for {
			n.mu.Lock()
			if len(sub.ops) == 0 || n.closed {
				n.mu.Unlock()
				break
			}
			op := sub.ops[0]
			sub.ops = sub.ops[1:]
			n.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), confirmWait)
			var err error
			switch {
			case op.subscribe && n.mode == notifySharded:
				err = sub.ps.SSubscribe(ctx, op.name)
			case op.subscribe:
				err = sub.ps.Subscribe(ctx, op.name)
			case n.mode == notifySharded:
				err = sub.ps.SUnsubscribe(ctx, op.name)
			default:
				err = sub.ps.Unsubscribe(ctx, op.name)
			}
			cancel()
			if err == nil {
				continue
			}
			n.mu.Lock()
			if !op.subscribe {
				sub.unconfirmed(op.name) // no confirmation will come
				n.mu.Unlock()
				continue
			}
			// A failed write breaks the connection, and go-redis dials
			// a new one at once, subscribed to the channels it knew
			// before this one: the channel would stay deaf. Write it
			// again, before the writes queued after it, once a pause
			// has passed (the node may be down), unless it is wanted no
			// more (its waiters left, or its slot moved away).
			if sub.channels[op.name] == nil {
				n.mu.Unlock()
				continue
			}
			sub.ops = slices.Insert(sub.ops, 0, op)
			n.mu.Unlock()
			pause := time.NewTimer(subscribeRetry)
			select {
			case <-sub.quit:
				pause.Stop()
				return
			case <-pause.C:
			}
		}
	}
}

// passOn gives a wake-up w took but could not use to the oldest other
// waiter of its channel.
func (n *notifier) passOn(w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range w.ch.waiters {
		if o != w && o.signal() {
			return
		}
	}
}

// behind reports whether an older waiter of w's channel is waiting: that
// one polls Redis for the lock, so w need not.
func (n *notifier) behind(w *waiter) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(w.ch.waiters) > 0 && w.ch.waiters[0] != w
}

// polling notes that w, the oldest waiter, polls Redis next at t.
func (n *notifier) polling(w *waiter, t time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(w.ch.waiters) > 0 && w.ch.waiters[0] == w {
		w.ch.nextPoll = t
	}
}

// took notes that w took the lock: a wake-up pending on it announced the
// release it has just used (heard also through Redis's tracking), and is
// not passed on; and the next waiter starts polling afresh.
func (n *notifier) took(w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-w.wake:
	default:
	}
	if len(w.ch.waiters) > 0 && w.ch.waiters[0] == w {
		w.ch.nextPoll = time.Time{}
	}
}

// pollDue returns when the oldest waiter of w's channel was to poll
// Redis next, or zero if it took the lock.
func (n *notifier) pollDue(w *waiter) time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return w.ch.nextPoll
}

// awaitTurn waits while w is behind an older waiter: until w is woken,
// becomes its channel's oldest waiter (turn), until, or the end of ctx,
// whichever comes first. It reports whether w took a wake-up, whether its
// turn came, and ctx's error.
func (n *notifier) awaitTurn(ctx context.Context, w *waiter, until time.Time) (woken, turn bool, err error) {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false, ctx.Err()
	case <-t.C:
	case <-w.wake:
		woken = true
	case <-w.turn:
		turn = true
	}
	return woken, turn, ctx.Err()
}

// wakeOne wakes the oldest waiter that has no wake-up pending.
func wakeOne(ch *channel) {
	for _, w := range ch.waiters {
		if w.signal() {
			return
		}
	}
}

// signal gives w a wake-up, unless it has one pending, and reports whether
// it did.
func (w *waiter) signal() bool {
	select {
	case w.wake <- struct{}{}:
		return true
	default:
		return false
	}
}

// receive reads the subscription's messages until it is closed, or idle
// for notifyLinger.
func (n *notifier) receive(sub *subscription) {
	defer n.running.Done()
	defer close(sub.done)
	ctx := context.Background()
	broken := false // the connection broke and has not been seen working since
	for {
		msg, err := sub.ps.ReceiveTimeout(ctx, n.tick)
		resubscribed := false // each channel, on its own, in this round
		n.mu.Lock()
		if n.closed || n.subs[sub.node] != sub {
			n.mu.Unlock()
			return
		}
		var netErr interface{ Timeout() bool }
		var replyErr redis.Error
		if err == nil || (errors.As(err, &netErr) && netErr.Timeout()) || errors.As(err, &replyErr) {
			if broken {
				// Working again, after go-redis reconnected and
				// resubscribed; but on a Cluster all channels in one
				// SSUBSCRIBE, which Redis refuses (CROSSSLOT) when they
				// lie in several slots: subscribe each again on its own.
				// Messages may have been lost meanwhile: every waiter
				// retries.
				broken = false
				resubscribed = n.mode == notifySharded
				sub.wakeAll(resubscribed)
			}
		}
		if time.Since(sub.reaped) >= n.tick {
			sub.reaped = time.Now()
			sub.reap(n.linger)
		}
		var ghost departure
		switch {
		case err == nil:
			ghost = n.handle(sub, msg)
		case len(sub.channels) == 0 && time.Since(sub.idleSince) >= n.linger:
			delete(n.subs, sub.node)
			n.mu.Unlock()
			close(sub.quit)
			_ = sub.ps.Close()
			<-sub.wdone
			return
		case errors.As(err, &netErr) && netErr.Timeout():
		case errors.As(err, &replyErr) && strings.HasPrefix(replyErr.Error(), "MOVED") && n.mode == notifySharded:
			// A subscription made on this node after its channel's slot
			// moved away (the slot map had not caught up). The reply does
			// not name its channel: the channels still unconfirmed are
			// taken as moved, so that their waiters subscribe again once
			// the slot map is reloaded.
			if cc, ok := n.client.(*redis.ClusterClient); ok {
				cc.ReloadState(ctx)
			}
			for name, ch := range sub.channels {
				if !ch.isConfirmed() {
					sub.movedAway(name, ch)
				}
			}
		case errors.As(err, &replyErr) && n.mode == notifySharded && strings.HasPrefix(replyErr.Error(), "CROSSSLOT"):
			// go-redis's resubscription of the node's channels in one
			// SSUBSCRIBE (see above), refused, whether or not this loop
			// saw the connection break (the writer's failed subscribe
			// may have broken it), and however late the refusal comes:
			// each channel is subscribed again on its own, once per
			// round. Their confirmations are to come.
			if !resubscribed {
				sub.wakeAll(true)
			}
		case errors.As(err, &replyErr) && !resubscribed:
			// A reply to a subscription, not a broken connection:
			// NOPERM for a user without channel permissions. The reply
			// does not name its channel, so the waiters still waiting
			// for a confirmation stop waiting, and rely on backoff.
			for _, ch := range sub.channels {
				ch.confirm()
			}
		case errors.As(err, &replyErr):
			// The same in the round that subscribes each channel again
			// (NOPERM, CLUSTERDOWN in a failover): those subscriptions'
			// own replies settle them.
		case !broken:
			// The connection broke and messages may be lost: every waiter
			// retries now, then backs off as usual while it is down.
			broken = true
			sub.wakeAll(false)
		}
		n.mu.Unlock()
		if ghost.entry != "" {
			n.ghost(ghost.key, ghost.entry)
		}
		if err != nil && !broken {
			continue
		}
		if broken {
			time.Sleep(100 * time.Millisecond) // a node that is down: do not spin
		}
	}
}

// wakeAll wakes every waiter of the subscription, after subscribing each
// channel again if resubscribe. A channel subscribed again counts as
// unconfirmed until Redis confirms it anew: a waiter whose attempt goes
// out before that is woken by the confirmation (see pendingConfirmation),
// since a release meanwhile would tell nobody. The caller holds n.mu.
func (sub *subscription) wakeAll(resubscribe bool) {
	for name, ch := range sub.channels {
		if resubscribe {
			sub.enqueue(subOp{subscribe: true, name: name})
			if ch.isConfirmed() {
				ch.confirmed = make(chan struct{})
			}
		}
		for _, w := range ch.waiters {
			w.signal()
		}
	}
}

// confirm marks the channel's subscription as settled, confirmed or not.
// movedAway forgets a channel whose slot moved to another node, and wakes
// its waiters, which must subscribe again there. go-redis must forget it
// too, or it would subscribe it again on this node after a reconnect; that
// unsubscribe is not counted as ours, since this node will refuse it with
// MOVED rather than confirm it. The caller holds n.mu.
func (sub *subscription) movedAway(name string, ch *channel) {
	delete(sub.channels, name)
	if len(sub.channels) == 0 {
		sub.idleSince = time.Now()
	}
	ch.moved = true
	ch.confirm()
	for _, w := range ch.waiters {
		w.signal()
	}
	sub.ops = append(sub.ops, subOp{subscribe: false, name: name})
	sub.kickWriter()
}

// isConfirmed reports whether the server confirmed the subscription.
func (ch *channel) isConfirmed() bool {
	select {
	case <-ch.confirmed:
		return true
	default:
		return false
	}
}

func (ch *channel) confirm() {
	select {
	case <-ch.confirmed:
	default:
		close(ch.confirmed)
	}
}

// handle acts on one message of the subscription. The caller holds n.mu.
func (n *notifier) handle(sub *subscription, msg any) (ghost departure) {
	switch m := msg.(type) {
	case *redis.Subscription:
		ch := sub.channels[m.Channel]
		ours := false
		if k := m.Kind; k == "sunsubscribe" || k == "unsubscribe" {
			ours = sub.unconfirmed(m.Channel)
		}
		switch {
		case ch == nil || ours:
		case m.Kind == "subscribe" || m.Kind == "ssubscribe":
			ch.confirm()
		case m.Kind == "sunsubscribe" || m.Kind == "unsubscribe":
			// Not ours: Redis 7 unsubscribes a sharded channel whose slot
			// moved to another node.
			sub.movedAway(m.Channel, ch)
		}
	case *redis.Message:
		switch ch := sub.channels[m.Channel]; {
		case m.Payload != "":
			// A Locker's own channel: the message names the waiter, and
			// the fence of a lock handed over to it, if it was.
			entry, rest, handed := strings.Cut(m.Payload, " ")
			w := n.entries[entry]
			if w == nil {
				if d, ok := n.departed[entry]; ok && n.ghost != nil {
					// Handed over to a waiter that gave up, or woken as
					// the head, its entry queued again by a script that
					// reached Redis late: the caller takes it out (and
					// the lock with it, if it was handed over), once n.mu
					// is released.
					delete(n.departed, entry)
					ghost = d
				}
				break
			}
			if handed {
				if g, ok := parseHandOver(rest); ok {
					// Its validity is the waiter's to work out (queue.go).
					w.handed = g
				}
			}
			w.signal()
		case ch != nil:
			wakeOne(ch)
		}
	}
	return ghost
}

// parseHandOver reads the rest of a hand-over's message, "FENCE TIME PX"
// (see releaseScript), into the grant it announces. Anything else is no
// hand-over (the waiter is only woken, and looks for itself). It runs
// under n.mu on every hand-over, so it scans by hand: fmt.Sscan took
// 2.5 µs and 7 allocations to read the three numbers, where strconv
// takes 0.2 µs and none (the grant is one allocation either way).
func parseHandOver(rest string) (*grant, bool) {
	var n [3]int64
	for i := range n {
		field, tail, found := strings.Cut(rest, " ")
		if found != (i < len(n)-1) {
			return nil, false
		}
		v, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			return nil, false
		}
		n[i], rest = v, tail
	}
	return &grant{held: true, handed: true, fence: n[0], at: n[1],
		holderTTL: time.Duration(n[2]) * time.Millisecond}, true
}

// pendingConfirmation returns the confirmation of w's subscription to its
// channel while Redis has not confirmed it (nil once it has, or when w has
// none): until then, a wake-up published to w goes to nobody.
func (n *notifier) pendingConfirmation(w *waiter) <-chan struct{} {
	if w == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if w.ch == nil || w.ch.isConfirmed() {
		return nil
	}
	return w.ch.confirmed
}

// moved reports whether w's channel left its subscription because its slot
// moved to another node; w should then be unwatched and watch again.
func (n *notifier) moved(w *waiter) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return w.ch != nil && w.ch.moved
}

// close ends every subscription and waits for their goroutines. Waiters in
// progress go on with backoff alone.
func (n *notifier) close() {
	n.mu.Lock()
	n.closed = true
	subs := n.subs
	n.subs = map[string]*subscription{}
	for key, h := range n.holds { // their waiters make attempts
		delete(n.holds, key)
		n.kickLocked(h)
	}
	n.mu.Unlock()
	for _, sub := range subs {
		close(sub.quit)
		_ = sub.ps.Close()
	}
	// Every subscription's goroutines, those that were ending on their own
	// (idle) included.
	n.running.Wait()
}
