package rediskit

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Waiting acquisitions are woken by the release script's publish instead of
// polling. A Locker keeps one pub/sub connection (one per node on a Redis
// Cluster, where sharded pub/sub keeps a message on its slot's node) and
// subscribes it to the channels of the keys its goroutines wait for. A
// message wakes the longest-waiting goroutine of the key, so that one
// release costs one retry per process, not a stampede. Lost messages cost
// latency, never progress: every wait is also bounded by the backoff and by
// the holder's TTL.

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
	client       redis.UniversalClient
	mode         notifyMode
	publish      any // mode.publishCommand(), boxed once for the release script
	linger, tick time.Duration

	mu     sync.Mutex
	subs   map[string]*subscription // by node address; "" in classic mode
	closed bool
}

// subscription is one pub/sub connection and the goroutine reading it.
type subscription struct {
	ps        *redis.PubSub
	node      string
	channels  map[string]*channel
	idleSince time.Time // when channels became empty
	done      chan struct{}
}

// channel holds the goroutines waiting on one key, oldest first.
type channel struct {
	name      string
	confirmed chan struct{} // closed when the server confirms the subscription
	waiters   []*waiter
}

// waiter is one waiting acquisition.
type waiter struct {
	sub  *subscription
	ch   *channel
	wake chan struct{} // buffered: a wake-up is never lost while it waits
}

func newNotifier(client redis.UniversalClient) *notifier {
	mode := notifyModeFor(client)
	return &notifier{client: client, mode: mode, publish: mode.publishCommand(),
		linger: notifyLinger, tick: notifyTick, subs: map[string]*subscription{}}
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
	if n.mode == notifyNone {
		return nil, false
	}
	node := ""
	var nodeClient *redis.Client
	if n.mode == notifySharded {
		cc, ok := n.client.(*redis.ClusterClient)
		if !ok {
			return nil, false
		}
		var err error
		if nodeClient, err = cc.MasterForKey(ctx, name); err != nil {
			return nil, false
		}
		node = nodeClient.Options().Addr
	}

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, false
	}
	sub := n.subs[node]
	if sub == nil {
		sub = &subscription{node: node, channels: map[string]*channel{}, done: make(chan struct{})}
		if nodeClient != nil {
			sub.ps = nodeClient.SSubscribe(ctx)
		} else {
			sub.ps = n.client.Subscribe(ctx)
		}
		n.subs[node] = sub
		go n.receive(sub)
	}
	ch := sub.channels[name]
	if ch == nil {
		ch = &channel{name: name, confirmed: make(chan struct{})}
		// Written under n.mu, so subscribes and unsubscribes of a channel
		// reach the server in the order the waiters came and went; bounded,
		// since the first one dials, and a node that does not answer must
		// not hold up the other waiters.
		sctx, cancel := context.WithTimeout(ctx, confirmWait)
		var err error
		if n.mode == notifySharded {
			err = sub.ps.SSubscribe(sctx, name)
		} else {
			err = sub.ps.Subscribe(sctx, name)
		}
		cancel()
		if err != nil {
			n.mu.Unlock()
			return nil, false
		}
		sub.channels[name] = ch
	} else {
		joined = true
	}
	w = &waiter{sub: sub, ch: ch, wake: make(chan struct{}, 1)}
	ch.waiters = append(ch.waiters, w)
	n.mu.Unlock()

	t := time.NewTimer(confirmWait)
	defer t.Stop()
	select {
	case <-ch.confirmed:
	case <-ctx.Done():
	case <-t.C:
	}
	return w, joined
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
		w := &waiter{sub: sub, ch: ch, wake: make(chan struct{}, 1)}
		ch.waiters = append(ch.waiters, w)
		return w
	}
	return nil
}

// unwatch removes w. A wake-up w received but did not use passes to the
// next waiter, and a channel nobody waits on any more is unsubscribed.
func (n *notifier) unwatch(w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := w.ch
	for i, o := range ch.waiters {
		if o == w {
			ch.waiters = append(ch.waiters[:i], ch.waiters[i+1:]...)
			break
		}
	}
	select {
	case <-w.wake:
		wakeOne(ch)
	default:
	}
	if len(ch.waiters) > 0 || w.sub.channels[ch.name] != ch {
		return
	}
	delete(w.sub.channels, ch.name)
	if len(w.sub.channels) == 0 {
		w.sub.idleSince = time.Now()
	}
	if !n.closed {
		ctx, cancel := context.WithTimeout(context.Background(), confirmWait)
		defer cancel()
		if n.mode == notifySharded {
			_ = w.sub.ps.SUnsubscribe(ctx, ch.name)
		} else {
			_ = w.sub.ps.Unsubscribe(ctx, ch.name)
		}
	}
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
	defer close(sub.done)
	ctx := context.Background()
	for {
		msg, err := sub.ps.ReceiveTimeout(ctx, n.tick)
		n.mu.Lock()
		if n.closed || n.subs[sub.node] != sub {
			n.mu.Unlock()
			return
		}
		if err != nil {
			var netErr interface{ Timeout() bool }
			idle := len(sub.channels) == 0 && time.Since(sub.idleSince) >= n.linger
			if idle {
				delete(n.subs, sub.node)
				n.mu.Unlock()
				_ = sub.ps.Close()
				return
			}
			if !errors.As(err, &netErr) || !netErr.Timeout() {
				// The connection broke and messages may be lost: wake every
				// waiter to retry. The next read reconnects and resubscribes.
				for _, ch := range sub.channels {
					for _, w := range ch.waiters {
						w.signal()
					}
				}
				n.mu.Unlock()
				time.Sleep(100 * time.Millisecond)
				continue
			}
			n.mu.Unlock()
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if ch := sub.channels[m.Channel]; ch != nil && (m.Kind == "subscribe" || m.Kind == "ssubscribe") {
				select {
				case <-ch.confirmed:
				default:
					close(ch.confirmed)
				}
			}
		case *redis.Message:
			if ch := sub.channels[m.Channel]; ch != nil {
				wakeOne(ch)
			}
		}
		n.mu.Unlock()
	}
}

// close ends every subscription and waits for their goroutines. Waiters in
// progress go on with backoff alone.
func (n *notifier) close() {
	n.mu.Lock()
	n.closed = true
	subs := n.subs
	n.subs = map[string]*subscription{}
	n.mu.Unlock()
	for _, sub := range subs {
		_ = sub.ps.Close()
		<-sub.done
	}
}
