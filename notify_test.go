package rediskit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rediskit/rediskit"
)

// noPolling makes waiters sleep a minute between attempts. With holders'
// TTLs of a minute and waits of an hour, only a release message can hand a
// lock over before the tests' watchdog contexts (wakeCtx) run out.
var noPolling = rediskit.WithRetryBackoff(rediskit.ConstantBackoff(time.Minute))

// wakeCtx returns a context that fails the waits of a test after 10 s.
func wakeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestReleaseWakesWaiter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("wake")
		holderLocker := newLocker(t, b.client)
		holder, err := holderLocker.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)

		waiter := newLocker(t, b.client, noPolling)
		got := make(chan error, 1)
		go func() {
			lk, err := waiter.AcquireWithTimeout(wakeCtx(t), key, time.Minute, time.Hour)
			if err == nil {
				err = lk.Release(ctx)
			}
			got <- err
		}()
		time.Sleep(200 * time.Millisecond) // the waiter fails once and subscribes
		require.NoError(t, holder.Release(ctx))
		assert.NoError(t, <-got)
	})
}

func TestReleaseBeforeSubscribeIsNotMissed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("race")
		holder, err := newLocker(t, b.client).TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)

		var once sync.Once
		// The hook runs right after the first failed attempt, before the
		// subscription: the release it makes is published to nobody.
		waiter := newLocker(t, b.client, noPolling, rediskit.WithHook(func(e rediskit.Event) {
			if e.Kind == rediskit.EventContended {
				once.Do(func() { require.NoError(t, holder.Release(ctx)) })
			}
		}))
		lk, err := waiter.AcquireWithTimeout(wakeCtx(t), key, time.Minute, time.Hour)
		require.NoError(t, err)
		require.NoError(t, lk.Release(ctx))
	})
}

func TestWaitersAreWokenInArrivalOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("fifo")
		l := newLocker(t, b.client, noPolling)
		holder, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)

		const n = 4
		var mu sync.Mutex
		var order []int
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				lk, err := l.AcquireWithTimeout(wakeCtx(t), key, time.Minute, time.Hour)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				assert.NoError(t, lk.Release(ctx))
			}(i)
			time.Sleep(100 * time.Millisecond) // arrive one after the other
		}
		require.NoError(t, holder.Release(ctx))
		wg.Wait()
		assert.Equal(t, []int{0, 1, 2, 3}, order, "each release wakes the longest waiter")
		assert.EqualValues(t, n+1, l.Stats().Acquired)
	})
}

func TestCloseEndsSubscription(t *testing.T) {
	client, _ := onMiniredis(t)
	ignore := goleak.IgnoreCurrent()
	ctx := context.Background()
	holder, err := newLocker(t, client).TryAcquire(ctx, "k", time.Minute)
	require.NoError(t, err)

	l := rediskit.NewLocker(client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(20*time.Millisecond)))
	got := make(chan error, 1)
	go func() {
		lk, err := l.AcquireWithTimeout(ctx, "k", time.Minute, 10*time.Second)
		if err == nil {
			err = lk.Release(ctx)
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, l.Close())
	// The waiter goes on polling after Close.
	require.NoError(t, holder.Release(ctx))
	require.NoError(t, <-got)
	require.NoError(t, l.Close(), "Close twice is fine")
	goleak.VerifyNone(t, append(ignoreMiniredis, ignore)...)
}

func TestIdleSubscriptionGoesAway(t *testing.T) {
	defer rediskit.SetNotifyTimes(50*time.Millisecond, 10*time.Millisecond)()
	client, _ := onMiniredis(t)
	ignore := goleak.IgnoreCurrent()
	ctx := context.Background()
	l := rediskit.NewLocker(client) // never closed: the linger must end it
	holder, err := l.TryAcquire(ctx, "k", time.Minute)
	require.NoError(t, err)
	time.AfterFunc(50*time.Millisecond, func() { _ = holder.Release(ctx) })
	lk, err := l.AcquireWithTimeout(ctx, "k", time.Minute, 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, lk.Release(ctx))
	goleak.VerifyNone(t, append(ignoreMiniredis, ignore)...)
}

func TestReleaserWaitsItsTurn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := wakeCtx(t)
		key := b.key("turn")
		l := newLocker(t, b.client, noPolling)
		holder, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)

		var mu sync.Mutex
		var order []string
		got := func(who string) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, who)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
			if !assert.NoError(t, err) {
				return
			}
			got("waiter")
			time.Sleep(50 * time.Millisecond)
			assert.NoError(t, lk.Release(ctx))
		}()
		time.Sleep(200 * time.Millisecond) // the waiter subscribes and queues

		// The holder releases and asks again at once: it must not snatch the
		// lock from the waiter its release woke.
		require.NoError(t, holder.Release(ctx))
		lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
		require.NoError(t, err)
		got("releaser")
		require.NoError(t, lk.Release(ctx))
		<-done
		assert.Equal(t, []string{"waiter", "releaser"}, order)
	})
}

// A process's waiters for one key poll Redis through the oldest of them
// only: the others are behind it, and polling would only tell them the lock
// is held (or, after a foreign release, let them snatch it from the oldest).
func TestOnlyTheOldestWaiterPolls(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("poll")
		// A foreign lock: its release publishes nothing.
		require.NoError(t, b.client.Set(ctx, key, "foreign", time.Minute).Err())

		var attempts atomic.Int64
		l := newLocker(t, b.client,
			rediskit.WithRetryBackoff(rediskit.ConstantBackoff(20*time.Millisecond)),
			rediskit.WithHook(func(e rediskit.Event) {
				if e.Kind == rediskit.EventContended {
					attempts.Add(1)
				}
			}))
		const n = 5
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lk, err := l.AcquireWithTimeout(wakeCtx(t), key, time.Minute, time.Hour)
				if assert.NoError(t, err) {
					assert.NoError(t, lk.Release(ctx))
				}
			}()
			time.Sleep(20 * time.Millisecond)
		}
		const waited = 500 * time.Millisecond
		time.Sleep(waited)
		// The oldest waiter polls every 20 ms; five polling waiters would
		// make five times as many attempts. The others make one attempt
		// each when they come, and keep their place in the queue with one
		// every 500 ms, at most two each here.
		polls := int64((waited+n*20*time.Millisecond)/(20*time.Millisecond)) + n
		assert.LessOrEqual(t, attempts.Load(), polls+2*(n-1), "attempts while the key was held")

		require.NoError(t, b.client.Del(ctx, key).Err()) // noticed by polling
		wg.Wait()
		assert.EqualValues(t, n, l.Stats().Acquired)
	})
}

// When the oldest waiter gives up, the next one takes over its polling, so
// a release that publishes nothing still reaches the process.
func TestNextWaiterPollsWhenTheOldestLeaves(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		key := b.key("poll-next")
		require.NoError(t, b.client.Set(ctx, key, "foreign", time.Minute).Err())
		l := newLocker(t, b.client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(20*time.Millisecond)))

		oldestCtx, leave := context.WithCancel(ctx)
		oldest := make(chan error, 1)
		go func() {
			_, err := l.AcquireWithTimeout(oldestCtx, key, time.Minute, time.Hour)
			oldest <- err
		}()
		time.Sleep(100 * time.Millisecond)
		next := make(chan error, 1)
		go func() {
			lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, 5*time.Second)
			if err == nil {
				err = lk.Release(ctx)
			}
			next <- err
		}()
		time.Sleep(100 * time.Millisecond)
		leave()
		require.ErrorIs(t, <-oldest, context.Canceled)
		require.NoError(t, b.client.Del(ctx, key).Err())
		// Had the next waiter gone on waiting behind nobody, it would wait
		// its whole 5 s and fail.
		assert.NoError(t, <-next)
	})
}
