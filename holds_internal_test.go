package rediskit

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// A waiter whose first attempt takes the lock is no fellow of the others
// from then on: an attempt of theirs made before it is done does not
// queue it under its own lock, which its release would then hand over to
// its entry, where nobody takes it, for the TTL. The interleaving (one
// attempt's group taken between another's taking the lock and its being
// done) is rare in a run, so the steps acquireQueued makes are made here
// one by one, in the order a run was seen to make them.
func TestGroupCarriesNoHolder(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	l := NewLocker(client)
	t.Cleanup(func() { _ = l.Close() })
	s := l.store.(*single)
	n := s.notify
	ctx := context.Background()
	names := newLockNames("k", true)
	ttl := time.Minute
	// A hold whose lock is gone from Redis (it expired): its waiters in
	// process look for themselves.
	n.held(names.key, "gone", time.Now().Add(ttl), "")
	first, err := newEntry(ttl, n.id)
	require.NoError(t, err)
	second, err := newEntry(ttl, n.id)
	require.NoError(t, err)
	w1, w2 := n.register(first), n.register(second)
	require.True(t, n.waitLocal(names.key, w1))
	time.Sleep(time.Millisecond)
	require.True(t, n.waitLocal(names.key, w2))
	n.endLocal(w1)
	n.endLocal(w2)
	attempt := func(w *waiter, token, entry string) (*lockArgs, grant, []*waiter) {
		a := &lockArgs{}
		a.init(&names, token, ttl, n, entry)
		group, fellows := n.group(w)
		a.acquire = append(slices.Clip(a.acquire), group...)
		g, err := s.obtain(ctx, a, ttl)
		require.NoError(t, err)
		return a, g, fellows
	}
	// The first takes the free lock; the second's attempt is made before
	// the first's is done.
	a1, g1, fellows1 := attempt(w1, "t1", first)
	require.True(t, g1.held)
	_, g2, fellows2 := attempt(w2, "t2", second)
	require.False(t, g2.held)
	s.leaveAgain(a1, n.joined(w1, fellows1))
	n.deregister(w1, false)
	s.leaveAgain(a1, n.joined(w2, fellows2))
	require.NotContains(t, client.ZRange(ctx, names.queue, 0, -1).Val(), first, "the holder is queued")

	holder := &lockArgs{}
	holder.init(&names, "t1", ttl, n, "")
	deleted, err := s.release(ctx, holder, ttl)
	require.NoError(t, err)
	require.True(t, deleted)
	require.NotEqual(t, entryToken(first), client.Get(ctx, names.key).Val(),
		"the holder's release handed the lock over to the holder's own entry")
	n.deregister(w2, true)
}

// BenchmarkDepart is one waiter giving up while others may have queued it,
// all within departedFor: the departures are swept as they double, so
// each costs a constant time however many there are (run it with
// -benchtime 60000x: a sweep at every departure made that cost about
// 300 µs each).
func BenchmarkDepart(b *testing.B) {
	n := newNotifier(nil)
	for i := 0; b.Loop(); i++ {
		n.mu.Lock()
		n.departLocked(&waiter{entry: strconv.Itoa(i), holdKey: "k"})
		n.mu.Unlock()
	}
}
