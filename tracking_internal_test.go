package rediskit

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
)

// A watch's read, which makes Redis track the key, must not hold the
// waiter past the sleep the watch would cut short. The tracker's own
// connections have ContextTimeoutEnabled (ownOptions), but they dial as the
// user's client does: over TLS, or with a Dialer of the user's, a read that
// has to make its connection again may wait for the dial's own timeout.
// Set up by hand: the node counts as ready, and its tracked connection
// leads to a server that never answers.
func TestTrackerWatchKeepsItsDeadline(t *testing.T) {
	const deadline, dialTimeout = 200 * time.Millisecond, time.Second
	insecure := &tls.Config{InsecureSkipVerify: true}
	for _, c := range []struct {
		name string
		opts redis.Options // the user's client's, but for Addr
	}{
		{"tls", redis.Options{TLSConfig: insecure, DialTimeout: dialTimeout, MaxRetries: -1}},
		{"custom-dialer", redis.Options{MaxRetries: -1, Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return tls.DialWithDialer(&net.Dialer{Timeout: dialTimeout}, network, addr, insecure)
		}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			opts.Addr, _ = SilentServer(t)
			client := redis.NewClient(&opts)
			defer client.Close()
			tr := newTracker(client)
			n := &trackNode{t: tr, ready: make(chan struct{}), quit: make(chan struct{}), watches: map[string][]*keyWatch{}}
			noop := func(context.Context, *redis.Conn) error { return nil }
			n.sub = redis.NewClient(ownOptions(client.Options(), noop))
			n.tracked = redis.NewClient(ownOptions(client.Options(), noop))
			n.calls = newCalls(n.tracked) // as setup does
			close(n.ready)
			tr.nodes[""] = n

			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			w := tr.watch(ctx, "key")
			took := time.Since(start)
			assert.Nil(t, w, "a watch whose read got no reply")
			assert.Less(t, took, deadline+50*time.Millisecond, "watch returned %v after its start, deadline %v (dial timeout %v)", took, deadline, dialTimeout)
			tr.close() // waits for the read left behind
		})
	}
}

// Which clients the library trusts to stop at a deadline on their own, and
// so runs calls on the caller's goroutine (TestReviewClientsThatIgnoreDeadlines
// shows the others overrunning).
func TestHonoursDeadlines(t *testing.T) {
	newClient := func(o redis.Options) *redis.Client {
		o.Addr = "127.0.0.1:1"
		return redis.NewClient(&o)
	}
	ownDialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	for _, c := range []struct {
		name   string
		client redis.UniversalClient
		want   bool
	}{
		{"default", newClient(redis.Options{}), false},
		{"cte", newClient(redis.Options{ContextTimeoutEnabled: true}), true},
		{"cte-no-socket-deadlines", newClient(redis.Options{ContextTimeoutEnabled: true, ReadTimeout: -2}), false},
		{"cte-tls", newClient(redis.Options{ContextTimeoutEnabled: true, TLSConfig: &tls.Config{}}), false},
		{"cte-own-dialer", newClient(redis.Options{ContextTimeoutEnabled: true, Dialer: ownDialer}), false},
		// go-redis's NewDialer, but called by the user, with options of
		// their own (TLS, say): not the client's own dialer.
		{"cte-users-newdialer", newClient(redis.Options{ContextTimeoutEnabled: true, Dialer: redis.NewDialer(&redis.Options{})}), false},
		{"cte-on-connect", newClient(redis.Options{ContextTimeoutEnabled: true, OnConnect: func(context.Context, *redis.Conn) error { return nil }}), false},
		{"cte-credentials", newClient(redis.Options{ContextTimeoutEnabled: true, CredentialsProvider: func() (string, string) { return "", "" }}), false},
		{"cte-limiter", newClient(redis.Options{ContextTimeoutEnabled: true, Limiter: nopLimiter{}}), false},
		{"cte-sentinel", redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}, ContextTimeoutEnabled: true}), false},
		{"cte-cluster", redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}, ContextTimeoutEnabled: true}), false},
		{"cte-ring", redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}, ContextTimeoutEnabled: true}), false},
		{"nil", (*redis.Client)(nil), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Built with -l, no dialer counts as the client's own.
			want := c.want && defaultDialer() != 0
			assert.Equal(t, want, honoursDeadlines(c.client))
			if !isNilClient(c.client) {
				_ = c.client.Close()
			}
		})
	}
}

type nopLimiter struct{}

func (nopLimiter) Allow() error       { return nil }
func (nopLimiter) ReportResult(error) {}
