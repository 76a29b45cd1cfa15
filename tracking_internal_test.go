package rediskit

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A watch's read, which makes Redis track the key, runs on the waiter's
// goroutine when the tracker's connection stops at deadlines; over TLS it
// does not (go-redis's TLS handshake ignores the ctx), and a read that has
// to make its connection again must not hold the waiter past the sleep the
// watch would cut short. Set up by hand: the node counts as ready, and its
// tracked connection leads to a server that never answers a handshake.
func TestTrackerWatchOverTLSKeepsItsDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		_ = ln.Close()
		for c := range accepted {
			_ = c.Close()
		}
	}()

	const deadline, dialTimeout = 200 * time.Millisecond, time.Second
	client := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), TLSConfig: &tls.Config{InsecureSkipVerify: true},
		DialTimeout: dialTimeout, MaxRetries: -1})
	defer client.Close()
	tr := newTracker(client)
	n := &trackNode{t: tr, ready: make(chan struct{}), quit: make(chan struct{}), watches: map[string][]*keyWatch{}}
	noop := func(context.Context, *redis.Conn) error { return nil }
	n.sub = redis.NewClient(ownOptions(client.Options(), noop))
	n.tracked = redis.NewClient(ownOptions(client.Options(), noop))
	n.calls = newCalls(n.tracked)
	close(n.ready)
	tr.nodes[""] = n

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	w := tr.watch(ctx, "key")
	took := time.Since(start)
	assert.Nil(t, w, "a watch whose read got no reply")
	assert.Less(t, took, deadline+50*time.Millisecond, "watch returned %v after its start, deadline %v (the TLS dial's timeout is %v)", took, deadline, dialTimeout)
	tr.close() // waits for the read left behind
}
