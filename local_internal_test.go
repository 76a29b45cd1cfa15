package rediskit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// readyTier is a local tier whose listener counts as up, with no Redis
// behind it: what is under test is the tier's rule for fills.
func readyTier(t *testing.T) *localTier[int] {
	t.Helper()
	l := newLocalTier[int](nil, "p:", 100, time.Minute)
	t.Cleanup(func() { l.store.StopAllGoroutines() })
	return l
}

// An invalidation can overtake the reply of a read made before the write
// it reports (they come on different connections): a read in flight when
// its key is invalidated, or the tier flushed, does not fill the tier;
// one that began after does.
func TestLocalTierFillRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		during func(l *localTier[int])
		filled bool
	}{
		{"nothing heard", func(*localTier[int]) {}, true},
		{"key invalidated", func(l *localTier[int]) { l.invalidateRedisKeys([]string{"p:k"}) }, false},
		{"other key invalidated", func(l *localTier[int]) { l.invalidateRedisKeys([]string{"p:other"}) }, true},
		{"unprefixed key invalidated", func(l *localTier[int]) { l.invalidateRedisKeys([]string{"k"}) }, true},
		{"tier flushed", func(l *localTier[int]) { l.flush() }, false},
		{"this process wrote it", func(l *localTier[int]) { l.invalidate("k") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := readyTier(t)
			f := l.register("k")
			tc.during(l)
			l.end(f, l.entry(1, false, -1, 0))
			_, ok := l.get("k")
			assert.Equal(t, tc.filled, ok)
			assert.Empty(t, l.pending, "pending reads are forgotten when they end")
		})
	}
	t.Run("a read begun after the invalidation fills", func(t *testing.T) {
		l := readyTier(t)
		early := l.register("k")
		l.invalidate("k")
		late := l.register("k")
		l.end(early, l.entry(1, false, -1, 0))
		l.end(late, l.entry(2, false, -1, 0))
		e, ok := l.get("k")
		assert.True(t, ok)
		assert.Equal(t, 2, e.v)
	})
	t.Run("entries end with the value's TTL", func(t *testing.T) {
		l := readyTier(t)
		assert.Equal(t, 300*time.Millisecond, l.entry(1, false, 1300*time.Millisecond, time.Second).ttl, "TTL 300ms left, then the stale window")
		assert.LessOrEqual(t, l.entry(1, false, 500*time.Millisecond, time.Second).ttl, time.Duration(0), "in its stale period: not kept")
		assert.Equal(t, time.Minute, l.entry(1, false, -1, 0).ttl, "no expiry: the tier's TTL")
	})
}
