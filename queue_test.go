package rediskit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rediskit/rediskit"
)

// The fleet's queue of waiters (queue.go). Lockers on their own stand for
// processes: each has its own id, channel and entries, and a release of one
// reaches the waiters of another only through Redis.

// queued waits until n acquisitions wait for key in its queue.
func queued(t *testing.T, client redis.UniversalClient, key string, n int64) {
	t.Helper()
	q := rediskit.QueueKey(key)
	require.Eventually(t, func() bool {
		// The arrivals, scored in microseconds; the deadlines, in
		// milliseconds, score below 1e14.
		return client.ZCount(context.Background(), q, "100000000000000", "+inf").Val() == n
	}, 5*time.Second, time.Millisecond, "%d waiters in the queue", n)
}

// handToken returns the token a lock handed over to the one waiter queued
// for key would hold.
func handToken(t *testing.T, client redis.UniversalClient, key string) string {
	t.Helper()
	entries, err := client.ZRangeByScore(context.Background(), rediskit.QueueKey(key),
		&redis.ZRangeBy{Min: "100000000000000", Max: "+inf"}).Result()
	require.NoError(t, err)
	require.Len(t, entries, 1)
	return entries[0][strings.LastIndexByte(entries[0], ':')+1:]
}

// assertNothingLeft checks that the lock and its queue are gone from
// Redis (the fencing counter stays, by design).
func assertNothingLeft(t *testing.T, client redis.UniversalClient, key string) {
	t.Helper()
	q := rediskit.QueueKey(key)
	assert.Eventually(t, func() bool {
		return client.Exists(context.Background(), key, q).Val() == 0
	}, 5*time.Second, 5*time.Millisecond, "the lock and its queue are left in Redis")
}

// Waiters of several processes get the lock in the order they came, the
// releaser asking again at once included: it queues behind them.
func TestQueueFIFOAcrossProcesses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := wakeCtx(t)
		key := b.key("fifo")
		holderL := newLocker(t, b.client, noPolling)
		holder, err := holderL.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)

		const n = 5
		var mu sync.Mutex
		var order []int
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			l := newLocker(t, b.another(t), noPolling) // a process each
			wg.Add(1)
			go func() {
				defer wg.Done()
				lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
				assert.NoError(t, lk.Release(ctx))
			}()
			queued(t, b.client, key, int64(i+1))
		}
		require.NoError(t, holder.Release(ctx))
		again, err := holderL.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
		require.NoError(t, err)
		wg.Wait()
		assert.Equal(t, []int{0, 1, 2, 3, 4}, order, "the order the waiters got the lock in")
		require.NoError(t, again.Release(ctx))
		assertNothingLeft(t, b.client, key)
	})
}

// Goroutines of one process keep their order too. Behind a lock their
// Locker holds, they wait in process: they make no request of their own,
// and each release hands the lock over to the next, so the queue in Redis
// never holds them.
func TestQueueFIFOInProcess(t *testing.T) {
	// No attempt to keep a place in the queue while the test runs.
	defer rediskit.SetQueueTimes(time.Minute, 30*time.Second)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := wakeCtx(t)
		key := b.key("fifo-local")
		attempts, count := countAttempts(b.client)
		l := newLocker(t, b.client, noPolling)
		holder, err := l.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		count.Store(true)
		const n = 4
		var mu sync.Mutex
		var order []int
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				ttl, err := lk.TTL(ctx)
				assert.NoError(t, err, "the handed-over lock is held under its token")
				assert.Greater(t, ttl, 50*time.Second, "with the waiter's TTL")
				assert.NoError(t, lk.Release(ctx))
			}()
			require.Eventually(t, func() bool { return rediskit.LocalWaiters(l, key) == i+1 },
				5*time.Second, time.Millisecond, "%d waiters in process", i+1)
		}
		assert.Zero(t, b.client.Exists(ctx, rediskit.QueueKey(key)).Val(), "waiters in process in the queue in Redis")
		require.NoError(t, holder.Release(ctx))
		wg.Wait()
		assert.Equal(t, []int{0, 1, 2, 3}, order)
		assert.Zero(t, attempts.Load(), "attempts by waiters in process")
		assertNothingLeft(t, b.client, key)
	})
}

// countAttempts counts the acquire script's runs through client while on
// is true. Call it before client is used: adding a hook is not safe for
// concurrent use.
func countAttempts(client redis.UniversalClient) (n *atomic.Int64, on *atomic.Bool) {
	n, on = new(atomic.Int64), new(atomic.Bool)
	client.AddHook(afterAttempt{func() {
		if on.Load() {
			n.Add(1)
		}
	}})
	return n, on
}

// A release hands the lock over to a waiter of another process that made
// an attempt lately and listens on its channel: the waiter holds it, under
// its entry's token, with a higher fence, without an attempt of its own.
func TestQueueHandOverAcrossProcesses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := wakeCtx(t)
		key := b.key("handover")
		waiterClient := b.another(t)
		attempts, count := countAttempts(waiterClient)
		holder, err := newLocker(t, b.client).TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		got := make(chan *rediskit.Lock, 1)
		go func() {
			lk, err := newLocker(t, waiterClient, noPolling).AcquireWithTimeout(ctx, key, 30*time.Second, time.Hour)
			assert.NoError(t, err)
			got <- lk
		}()
		queued(t, b.client, key, 1)
		time.Sleep(50 * time.Millisecond) // subscribed, and retried once
		hand := handToken(t, b.client, key)
		count.Store(true)
		require.NoError(t, holder.Release(ctx))
		lk := waitFor(t, got, 15*time.Second, "the waiter")
		require.NotNil(t, lk)
		assert.Equal(t, hand, lk.Token(), "the lock was not handed over: the waiter took it")
		assert.Equal(t, hand, b.client.Get(ctx, key).Val())
		// Once told, the waiter makes no attempt; but Redis's tracking can
		// tell its head waiter that the key changed before the hand-over's
		// message comes, and then it looks.
		assert.LessOrEqual(t, attempts.Load(), int64(1), "attempts after the hand-over")
		assert.Greater(t, lk.Fence(), holder.Fence())
		ttl, err := lk.TTL(ctx)
		require.NoError(t, err)
		assert.Greater(t, ttl, 25*time.Second, "the waiter's TTL")
		require.NoError(t, lk.Release(ctx))
		assertNothingLeft(t, b.client, key)
	})
}

// WithLock's watchdog ends fn's context when the lock may have expired, so
// a waiting WithLock takes a lock handed over by another process for the
// claim bound (2 s) without confirming it first: fn runs at once, and the
// watchdog extends the lock to its TTL. When that extension cannot get
// through, fn's context ends while Redis still holds the lock for it.
func TestQueueWithLockTakesHandOver(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		const ttl = 10 * time.Second
		for _, stall := range []bool{false, true} {
			t.Run(fmt.Sprintf("extension stalls: %v", stall), func(t *testing.T) {
				key := b.key(fmt.Sprintf("withlock-%v", stall))
				// No key tracking (miniredis has none; on the standalone
				// server the waiter's client makes it refuse), so that the
				// hand-over's message alone wakes the waiter.
				wClient, tracking := b.another(t), b.mr == nil
				if b.name == "standalone" {
					wClient, tracking = noTrackClient(t, os.Getenv(envStandalone)), false
				}
				attempts, watching := watchAttempts(wClient, nil)
				h := &stepHook{}
				wClient.AddHook(h)
				type lost struct {
					err      error
					redisHas string // what the lock key held when the loss was told
				}
				lostCh := make(chan lost, 1)
				hook := rediskit.WithHook(func(e rediskit.Event) {
					if e.Kind == rediskit.EventLost {
						// On the watchdog's goroutine, as it cancels fn's
						// context: Redis is asked at once.
						lostCh <- lost{e.Err, b.client.Get(context.Background(), key).Val()}
					}
				})
				w := newLocker(t, wClient, noPolling, hook)
				holder, err := newLocker(t, b.client).TryAcquire(ctx, key, time.Minute)
				require.NoError(t, err)

				started := make(chan int64, 1) // the lock's PTTL in Redis when fn began
				done := make(chan error, 1)
				go func() {
					done <- w.WithLock(ctx, key, func(fctx context.Context) error {
						started <- b.client.PTTL(context.Background(), key).Val().Milliseconds()
						<-fctx.Done()
						return nil
					}, rediskit.WithLockTTL(ttl), rediskit.WithLockWait(30*time.Second))
				}()
				queued(t, b.client, key, 1)
				time.Sleep(300 * time.Millisecond) // subscribed
				hand := handToken(t, b.client, key)

				watching.Store(true)
				waitFor(t, attempts, 5*time.Second, "the waiter's attempt")
				watching.Store(false)
				// A little later than the attempt, still fresh for a
				// hand-over: the hand-over's lead over the attempt the
				// waiter counts from is the margin the last check has.
				time.Sleep(100 * time.Millisecond)
				// The waiter's scripts other than attempts (its refreshes)
				// wait from now on, until let through.
				hold := make(chan struct{})
				var once sync.Once
				letThrough := func() { once.Do(func() { close(hold) }) }
				t.Cleanup(letThrough)
				h.holdOthers.Store(&hold)
				if !stall {
					defer letThrough()
				}
				require.NoError(t, holder.Release(ctx))
				pttl := waitFor(t, started, 10*time.Second, "fn")
				assert.Equal(t, hand, b.client.Get(ctx, key).Val(), "handed over across processes")
				if !tracking {
					// Only the hand-over's message woke the waiter, which
					// confirms nothing: no round trip.
					assert.LessOrEqual(t, pttl, int64(2000), "fn waited for a confirmation")
				} else {
					// Redis's tracking can tell the waiter that the key
					// changed before the message comes: it then looks, and
					// renews the lock for its TTL.
					t.Logf("when fn began, the lock had %d ms left in Redis", pttl)
				}
				if !stall {
					letThrough()
					assert.Eventually(t, func() bool {
						return b.client.PTTL(ctx, key).Val() > ttl-time.Second
					}, 5*time.Second, 5*time.Millisecond, "the watchdog extends the lock to its TTL")
					select {
					case l := <-lostCh:
						t.Fatalf("lost: %v", l.err)
					default:
					}
					return // fn ends with the test's context
				}
				l := waitFor(t, lostCh, ttl+5*time.Second, "the loss")
				assert.ErrorIs(t, l.err, rediskit.ErrLockNotHeld)
				if b.mr == nil {
					assert.Equal(t, hand, l.redisHas, "the holder was told after Redis let the lock go")
				}
				letThrough()
				assert.ErrorIs(t, waitFor(t, done, 10*time.Second, "WithLock"), rediskit.ErrLockNotHeld)
			})
		}
	})
}

// Neither a newcomer's TryAcquire nor another program's queue-aware
// acquisition takes a released lock past the waiter the release woke.
func TestQueueNewcomerDoesNotBarge(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := wakeCtx(t)
		key := b.key("barge")
		holder, err := newLocker(t, b.client).TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)
		waiterL := newLocker(t, b.client, noPolling)
		got := make(chan *rediskit.Lock, 1)
		go func() {
			lk, err := waiterL.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
			assert.NoError(t, err)
			got <- lk
		}()
		queued(t, b.client, key, 1)
		newcomer := newLocker(t, b.client)
		require.NoError(t, holder.Release(ctx))
		_, err = newcomer.TryAcquire(ctx, key, time.Minute)
		assert.ErrorIs(t, err, rediskit.ErrNotObtained, "a newcomer took the lock past the woken waiter")
		lk := waitFor(t, got, 15*time.Second, "the waiter")
		require.NotNil(t, lk)
		require.NoError(t, lk.Release(ctx))
		assertNothingLeft(t, b.client, key)
	})
}

// A waiter whose process is gone is skipped: at once when its Locker no
// longer listens on its channel (the process exited, its connections
// closed) though it came long enough ago to have subscribed, and otherwise
// (a process cut off, or stopped) once its entry's life runs out,
// queueLife after its last attempt, which the next waiter notices within
// queueBeat more; meanwhile the lock stays reserved.
func TestQueueDeadWaiterIsSkipped(t *testing.T) {
	const life, beat = 400 * time.Millisecond, 100 * time.Millisecond
	defer rediskit.SetQueueTimes(life, beat)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		for _, c := range []struct {
			name      string
			listening bool          // the dead waiter's channel has a subscriber
			age       time.Duration // since the dead waiter's last attempt
			arrived   time.Duration // since it came
		}{
			{"exited", false, 0, 3 * time.Second},
			{"silent", true, 300 * time.Millisecond, 300 * time.Millisecond},
		} {
			t.Run(c.name, func(t *testing.T) {
				ctx := wakeCtx(t)
				key := b.key("dead-" + c.name)
				holder, err := newLocker(t, b.client).TryAcquire(ctx, key, time.Minute)
				require.NoError(t, err)
				// The dead waiter came first.
				dead := rediskit.DeadQueueEntry(time.Minute)
				if c.listening {
					ps := subscribe(t, b, rediskit.QueueEntryChannel(key, dead))
					t.Cleanup(func() { _ = ps.Close() })
				}
				now, err := b.client.Time(ctx).Result()
				require.NoError(t, err)
				left := life - c.age // of its entry's life
				require.NoError(t, b.client.ZAdd(ctx, rediskit.QueueKey(key),
					redis.Z{Score: float64(now.Add(-c.arrived).UnixMicro()), Member: dead},
					redis.Z{Score: float64(now.Add(left).UnixMilli()), Member: "~" + dead}).Err())
				written := time.Now()

				got := make(chan time.Time, 1)
				go func() {
					lk, err := newLocker(t, b.client, noPolling).AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
					if assert.NoError(t, err) {
						got <- time.Now()
						assert.NoError(t, lk.Release(ctx))
					}
				}()
				queued(t, b.client, key, 2)
				// Time for the waiter's Locker to subscribe its channel: a
				// waiter behind the head does not retry once subscribed.
				time.Sleep(50 * time.Millisecond)
				released := time.Now()
				require.NoError(t, holder.Release(ctx))
				if !c.listening {
					at := waitFor(t, got, 15*time.Second, "the waiter")
					t.Logf("obtained %v after the release", at.Sub(released))
					assert.Less(t, at.Sub(released), deadlineSlack, "the exited waiter held the queue")
					assertNothingLeft(t, b.client, key)
					return
				}
				_, err = newLocker(t, b.client).TryAcquire(ctx, key, time.Minute)
				assert.ErrorIs(t, err, rediskit.ErrNotObtained, "the silent waiter's reservation")
				at := waitFor(t, got, 15*time.Second, "the waiter")
				waited := at.Sub(written)
				t.Logf("obtained %v after the dead entry was written (%v of its life left, beat %v)", waited, left, beat)
				assert.GreaterOrEqual(t, waited, left-20*time.Millisecond, "the silent waiter's place was taken early")
				_ = released
				assert.Less(t, waited, left+beat+deadlineSlack, "the silent waiter held the queue too long")
				assertNothingLeft(t, b.client, key)
			})
		}
	})
}

// subscribe subscribes a connection of its own to a Locker's channel, the
// way a Locker does on b.
func subscribe(t *testing.T, b *backend, channel string) *redis.PubSub {
	t.Helper()
	ctx := context.Background()
	var ps *redis.PubSub
	if cc, ok := b.client.(*redis.ClusterClient); ok {
		ps = cc.SSubscribe(ctx, channel)
	} else {
		ps = b.client.Subscribe(ctx, channel)
	}
	_, err := ps.Receive(ctx)
	require.NoError(t, err)
	return ps
}

// A waiter that gives up while its lock is being handed over to it, or
// just after, leaves nothing held: either it has the lock, under its
// entry's token, or the lock passes on.
func TestQueueGiveUpDuringHandOver(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		key := b.key("giveup")
		l := newLocker(t, b.client, noPolling)
		other := newLocker(t, b.client)
		held, left := 0, 0
		for i := 0; i < 30; i++ {
			ctx := wakeCtx(t)
			holder, err := l.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err)
			wctx, cancel := context.WithCancel(ctx)
			got := make(chan *rediskit.Lock, 1)
			go func() {
				lk, err := l.AcquireWithTimeout(wctx, key, time.Minute, time.Hour)
				if err != nil {
					assert.ErrorIs(t, err, context.Canceled)
				}
				got <- lk
			}()
			require.Eventually(t, func() bool { return rediskit.LocalWaiters(l, key) == 1 },
				5*time.Second, time.Millisecond, "the waiter waits in process")
			time.AfterFunc(time.Duration(rand.IntN(600))*time.Microsecond, cancel)
			require.NoError(t, holder.Release(ctx))
			if lk := <-got; lk != nil {
				held++
				assert.Equal(t, lk.Token(), b.client.Get(ctx, key).Val(), "the waiter's lock is not its own")
				require.NoError(t, lk.Release(ctx))
			} else {
				left++
			}
			cancel()
			assertNothingLeft(t, b.client, key)
			// The lock is free for anyone. (An attempt of the waiter's
			// that was on its way when it gave up can still queue it
			// again, or take the lock, until its reply comes back and
			// the waiter leaves again: hence a short wait, not TryAcquire.)
			lk, err := other.AcquireWithTimeout(ctx, key, time.Minute, time.Second)
			require.NoError(t, err, "round %d", i)
			require.NoError(t, lk.Release(ctx))
		}
		t.Logf("the waiter had the lock %d times, gave up %d times", held, left)
	})
}

// Holders never overlap, fences only rise, and nothing is left in Redis,
// with goroutines of several processes waiting, giving up and timing out
// at random, the hand-overs in process and the wake-ups across.
func TestQueueMutualExclusionUnderChurn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		key := b.key("churn")
		const procs, goroutines = 3, 3
		end := time.Now().Add(1500 * time.Millisecond)
		var holders atomic.Int32
		var fenceMu sync.Mutex
		var lastFence int64
		var acquired, failed atomic.Int64
		var wg sync.WaitGroup
		for p := 0; p < procs; p++ {
			l := newLocker(t, b.client)
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(end) {
						ctx, cancel := context.WithCancel(context.Background())
						if rand.IntN(3) == 0 {
							time.AfterFunc(time.Duration(rand.IntN(20))*time.Millisecond, cancel)
						}
						lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Duration(rand.IntN(40))*time.Millisecond)
						cancel()
						if err != nil {
							failed.Add(1)
							continue
						}
						acquired.Add(1)
						if !assert.Equal(t, int32(1), holders.Add(1), "two holders") {
							return
						}
						fenceMu.Lock()
						assert.Greater(t, lk.Fence(), lastFence, "fence went back")
						lastFence = lk.Fence()
						fenceMu.Unlock()
						time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
						holders.Add(-1)
						assert.NoError(t, lk.Release(context.Background()))
					}
				}()
			}
		}
		wg.Wait()
		t.Logf("%d acquisitions, %d waits given up", acquired.Load(), failed.Load())
		assert.Positive(t, acquired.Load())
		assertNothingLeft(t, b.client, key)
	})
}

// A release whose reply is lost still hands the lock over: the waiter
// finds it held under its entry's token when it next looks, and nobody
// else can take it meanwhile.
func TestFaultHandOverReplyLost(t *testing.T) {
	addr := requireStandalone(t)
	proxy := newFaultProxy(t, addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	direct := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = direct.Close() })
	ctx := wakeCtx(t)
	key := fmt.Sprintf("rkfault:handover:%d", time.Now().UnixNano())

	l := newLocker(t, client, rediskit.WithRetryBackoff(rediskit.ConstantBackoff(100*time.Millisecond)))
	// The scripts are loaded, so that the release is one EVALSHA.
	warm, err := l.TryAcquire(ctx, key+":warm", time.Minute)
	require.NoError(t, err)
	require.NoError(t, warm.Release(ctx))
	holder, err := l.TryAcquire(ctx, key, time.Minute)
	require.NoError(t, err)
	got := make(chan *rediskit.Lock, 1)
	go func() {
		lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
		assert.NoError(t, err)
		got <- lk
	}()
	require.Eventually(t, func() bool { return rediskit.LocalWaiters(l, key) == 1 },
		5*time.Second, time.Millisecond, "the waiter waits in process")
	// Idle connections in the pool: a new one would wait for the held
	// reply of its handshake before sending the release.
	var pings sync.WaitGroup
	for i := 0; i < 8; i++ {
		pings.Add(1)
		go func() {
			defer pings.Done()
			assert.NoError(t, client.Ping(ctx).Err())
		}()
	}
	pings.Wait()

	proxy.HoldReplies(500 * time.Millisecond)
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err = holder.Release(rctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "the release's reply was held")
	// The script ran: the lock is the waiter's, and nobody else's.
	assert.NotEqual(t, holder.Token(), direct.Get(ctx, key).Val())
	_, err = newLocker(t, direct).TryAcquire(ctx, key, time.Minute)
	assert.ErrorIs(t, err, rediskit.ErrNotObtained)
	proxy.Heal()

	lk := waitFor(t, got, 15*time.Second, "the waiter")
	require.NotNil(t, lk)
	assert.Equal(t, lk.Token(), direct.Get(ctx, key).Val())
	assert.Greater(t, lk.Fence(), holder.Fence())
	require.NoError(t, lk.Release(ctx))
	assertNothingLeft(t, direct, key)
}

// A process whose waiters come one at a time keeps its channel subscribed
// between them: the second wait makes no extra attempt for a new
// subscription, and both are woken by the release.
func TestQueueChannelLingers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if b.name == "universal-cluster" {
			t.Skip("the same as cluster")
		}
		ctx := wakeCtx(t)
		key := b.key("linger")
		holderL := newLocker(t, b.client)
		var attempts atomic.Int64
		l := newLocker(t, b.client, noPolling, rediskit.WithHook(func(e rediskit.Event) {
			if e.Kind == rediskit.EventContended {
				attempts.Add(1)
			}
		}))
		wait := func() int64 {
			before := attempts.Load()
			holder, err := holderL.TryAcquire(ctx, key, time.Minute)
			require.NoError(t, err)
			done := make(chan struct{})
			go func() {
				defer close(done)
				lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
				if assert.NoError(t, err) {
					assert.NoError(t, lk.Release(ctx))
				}
			}()
			queued(t, b.client, key, 1)
			time.Sleep(20 * time.Millisecond) // subscribed
			require.NoError(t, holder.Release(ctx))
			<-done
			return attempts.Load() - before
		}
		first := wait()
		assert.LessOrEqual(t, first, int64(2), "attempts of the first wait")
		assert.Equal(t, int64(1), wait(), "attempts of the second wait")
	})
}

// requireStandalone returns the address of the real standalone Redis, or
// skips.
func requireStandalone(t *testing.T) string {
	t.Helper()
	addr := os.Getenv(envStandalone)
	if addr == "" {
		t.Skipf("set %s to run against a real standalone Redis", envStandalone)
	}
	return addr
}

// A holder with less than a millisecond left reads as a PTTL of 0: the
// head of the queue looks again once it is gone, not after its beat.
func TestQueueHolderExpiringNow(t *testing.T) {
	defer rediskit.SetQueueTimes(20*time.Second, 10*time.Second)()
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	ctx := context.Background()
	const key = "holder-expiring-now"
	require.NoError(t, client.Set(ctx, key, "another program's", time.Millisecond).Err())
	mr.FastForward(500 * time.Microsecond) // held, with a PTTL of 0
	timer := time.AfterFunc(100*time.Millisecond, func() { mr.FastForward(time.Millisecond) })
	t.Cleanup(func() { timer.Stop() })
	start := time.Now()
	lk, err := newLocker(t, client, noPolling).AcquireWithTimeout(ctx, key, time.Second, time.Minute)
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 5*time.Second, "a holder about to expire cost a whole beat (10 s)")
	require.NoError(t, lk.Release(ctx))
}

// Waiters in process and waiters in the fleet's queue get the lock in the
// order they came: a release gives it to the oldest waiter of its own
// Locker only if none in the queue came earlier, and when the lock leaves
// the Locker its waiters keep their places in the queue.
func TestQueueLocalWaitersKeepFleetOrder(t *testing.T) {
	defer rediskit.SetQueueTimes(time.Minute, 30*time.Second)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := wakeCtx(t)
		key := b.key("local-order")
		a := newLocker(t, b.client, noPolling)
		other := newLocker(t, b.another(t), noPolling)
		holder, err := a.TryAcquire(ctx, key, time.Minute)
		require.NoError(t, err)

		var mu sync.Mutex
		var order []string
		var wg sync.WaitGroup
		wait := func(l *rediskit.Locker, name string) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, time.Hour)
				if !assert.NoError(t, err, name) {
					return
				}
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				assert.NoError(t, lk.Release(ctx), name)
			}()
		}
		// Arrivals 20 ms apart: a waiter in process counts as arriving
		// when it did, less its age's trip to Redis in the release.
		localWaiters := func(n int) {
			require.Eventually(t, func() bool { return rediskit.LocalWaiters(a, key) == n },
				5*time.Second, time.Millisecond, "%d waiters in process", n)
			time.Sleep(20 * time.Millisecond)
		}
		wait(a, "a1")
		localWaiters(1)
		wait(other, "b1")
		queued(t, b.client, key, 1)
		time.Sleep(20 * time.Millisecond)
		wait(a, "a2")
		localWaiters(2)
		wait(other, "b2")
		queued(t, b.client, key, 2)
		require.NoError(t, holder.Release(ctx))
		wg.Wait()
		assert.Equal(t, []string{"a1", "b1", "a2", "b2"}, order)
		assertNothingLeft(t, b.client, key)
	})
}

// A holder whose lock expires without a release does not keep the waiters
// of its Locker waiting in process past the lock's validity.
func TestQueueLocalWaiterOutlivesLostHolder(t *testing.T) {
	// Nothing but the lock's validity ends the wait in process early.
	defer rediskit.SetQueueTimes(time.Minute, 30*time.Second)()
	forEachBackend(t, func(t *testing.T, b *backend) {
		if b.mr != nil {
			t.Skip("miniredis's keys expire only when its clock is moved")
		}
		ctx := wakeCtx(t)
		key := b.key("local-expiry")
		l := newLocker(t, b.client, noPolling)
		const ttl = 300 * time.Millisecond
		_, err := l.TryAcquire(ctx, key, ttl) // never released
		require.NoError(t, err)
		start := time.Now()
		lk, err := l.AcquireWithTimeout(ctx, key, time.Minute, 10*time.Second)
		require.NoError(t, err)
		took := time.Since(start)
		assert.GreaterOrEqual(t, took, ttl-20*time.Millisecond, "taken before the holder's lock expired")
		assert.Less(t, took, ttl+time.Second, "the waiter waited past the lock's expiry")
		require.NoError(t, lk.Release(ctx))
		assertNothingLeft(t, b.client, key)
	})
}
