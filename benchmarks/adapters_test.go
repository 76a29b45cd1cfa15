package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidislock"

	"github.com/rediskit/rediskit"
)

// locker is the small adapter every lock library is measured through.
type locker interface {
	// acquire takes key for ttl, waiting up to wait (0: one attempt), and
	// returns the function that releases it.
	acquire(ctx context.Context, key string, ttl, wait time.Duration) (release func(context.Context) error, err error)
	close()
}

// lockLib builds a locker on the given independent clients (one, except
// for Redlock).
type lockLib struct {
	name string
	make func(clients []*redis.Client) locker
}

var errNotObtained = errors.New("not obtained")

func universal(clients []*redis.Client) []redis.UniversalClient {
	out := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		out[i] = c
	}
	return out
}

// rediskit, default options.
type rediskitLocker struct{ l *rediskit.Locker }

func newRediskit(clients []*redis.Client) locker {
	if len(clients) == 1 {
		return rediskitLocker{rediskit.NewLocker(clients[0])}
	}
	return rediskitLocker{rediskit.NewRedlock(universal(clients))}
}

func (r rediskitLocker) acquire(ctx context.Context, key string, ttl, wait time.Duration) (func(context.Context) error, error) {
	lk, err := r.l.AcquireWithTimeout(ctx, key, ttl, wait)
	if err != nil {
		return nil, err
	}
	return lk.Release, nil
}
func (r rediskitLocker) close() { _ = r.l.Close() }

// scoped is a locker whose critical section runs in a callback, while the
// lock is held: the benchmarks time such a section from inside it.
type scoped interface {
	withLock(ctx context.Context, key string, ttl, wait time.Duration, critical func()) error
}

// turn takes key for ttl, waiting up to wait, runs critical while holding
// it, and releases it.
func turn(ctx context.Context, l locker, key string, ttl, wait time.Duration, critical func()) error {
	if s, ok := l.(scoped); ok {
		return s.withLock(ctx, key, ttl, wait, critical)
	}
	release, err := l.acquire(ctx, key, ttl, wait)
	if err != nil {
		return err
	}
	critical()
	return release(ctx)
}

// rediskit's WithLock, on one Redis, default options: the lock is kept by
// a watchdog that ends fn's context if it may be lost, as rueidislock's
// WithContext does. As a scoped locker, the critical section is fn; as a
// plain one, fn holds the lock until the release is called.
type rediskitWithLock struct{ l *rediskit.Locker }

func (r rediskitWithLock) withLock(ctx context.Context, key string, ttl, wait time.Duration, critical func()) error {
	return r.l.WithLock(ctx, key, func(context.Context) error {
		critical()
		return nil
	}, rediskit.WithLockTTL(ttl), rediskit.WithLockWait(wait))
}

func newRediskitWithLock(clients []*redis.Client) locker {
	return rediskitWithLock{rediskit.NewLocker(clients[0])}
}

func (r rediskitWithLock) acquire(ctx context.Context, key string, ttl, wait time.Duration) (func(context.Context) error, error) {
	held, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- r.l.WithLock(ctx, key, func(context.Context) error {
			close(held)
			<-release
			return nil
		}, rediskit.WithLockTTL(ttl), rediskit.WithLockWait(wait))
	}()
	select {
	case <-held:
		return func(context.Context) error { close(release); return <-done }, nil
	case err := <-done:
		return nil, err
	}
}
func (r rediskitWithLock) close() { _ = r.l.Close() }

// bsm/redislock with a retry strategy made per call (its strategies count
// retries on the strategy value). A nil strategy means one attempt per Obtain,
// re-called at once: the tight loop.
type redislockLocker struct {
	c        *redislock.Client
	strategy func() redislock.RetryStrategy
}

func newRedislock(strategy func() redislock.RetryStrategy) func([]*redis.Client) locker {
	return func(clients []*redis.Client) locker {
		return redislockLocker{c: redislock.New(clients[0]), strategy: strategy}
	}
}

func (r redislockLocker) acquire(ctx context.Context, key string, ttl, wait time.Duration) (func(context.Context) error, error) {
	if wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	for {
		opt := &redislock.Options{}
		if r.strategy != nil && wait > 0 {
			opt.RetryStrategy = r.strategy()
		}
		lk, err := r.c.Obtain(ctx, key, ttl, opt)
		switch {
		case err == nil:
			return lk.Release, nil
		case errors.Is(err, redislock.ErrNotObtained) && r.strategy == nil && wait > 0 && ctx.Err() == nil:
			continue // the tight loop
		case errors.Is(err, redislock.ErrNotObtained), errors.Is(err, context.DeadlineExceeded):
			return nil, errNotObtained
		default:
			return nil, err
		}
	}
}
func (redislockLocker) close() {}

// go-redsync/redsync with its default retry delay (random 50-250 ms).
type redsyncLocker struct{ rs *redsync.Redsync }

func newRedsync(clients []*redis.Client) locker {
	pools := make([]redsyncredis.Pool, len(clients))
	for i, c := range clients {
		pools[i] = goredis.NewPool(c)
	}
	return redsyncLocker{redsync.New(pools...)}
}

func (r redsyncLocker) acquire(ctx context.Context, key string, ttl, wait time.Duration) (func(context.Context) error, error) {
	tries := 1
	if wait > 0 {
		tries = 1 << 20 // bounded by ctx instead
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	m := r.rs.NewMutex(key, redsync.WithExpiry(ttl), redsync.WithTries(tries))
	if err := m.LockContext(ctx); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotObtained, err)
	}
	return func(ctx context.Context) error { _, err := m.UnlockContext(ctx); return err }, nil
}
func (redsyncLocker) close() {}

// The Python seed's lock, with its release fixed: SET NX, polling every
// 100 ms, and a compare-and-delete script.
type seedLocker struct{ c *redis.Client }

var seedRelease = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

func newSeed(clients []*redis.Client) locker { return seedLocker{clients[0]} }

func (s seedLocker) acquire(ctx context.Context, key string, ttl, wait time.Duration) (func(context.Context) error, error) {
	token := fmt.Sprintf("%d", time.Now().UnixNano())
	deadline := time.Now().Add(wait)
	for {
		ok, err := s.c.SetNX(ctx, key, token, ttl).Result()
		if err != nil {
			return nil, err
		}
		if ok {
			return func(ctx context.Context) error {
				return seedRelease.Run(ctx, s.c, []string{key}, token).Err()
			}, nil
		}
		if time.Now().After(deadline) {
			return nil, errNotObtained
		}
		time.Sleep(100 * time.Millisecond)
	}
}
func (seedLocker) close() {}

var (
	libRediskit         = lockLib{"rediskit", newRediskit}
	libRediskitWithLock = lockLib{"rediskit-withlock", newRediskitWithLock}
	libRedislockBackoff = lockLib{"redislock-exp16ms", newRedislock(func() redislock.RetryStrategy {
		return redislock.ExponentialBackoff(16*time.Millisecond, 512*time.Millisecond)
	})}
	libRedislockTight = lockLib{"redislock-tightloop", newRedislock(nil)}
	libRedsync        = lockLib{"redsync", newRedsync}
	libSeed           = lockLib{"seed-100ms", newSeed}
	libRueidislock    = lockLib{"rueidislock", newRueidislock}
)

// rueidislock (github.com/redis/rueidis/rueidislock) on one Redis: one key
// per lock (KeyMajority 1), waiters woken by CLIENT TRACKING, on a rueidis
// client of its own. Its locks last
// KeyValidity (the ttl of the first acquisition) and are extended in the
// background until released.
type rueidisLocker struct{ l rueidislock.Locker }

func newRueidislock(clients []*redis.Client) locker {
	l, err := rueidislock.NewLocker(rueidislock.LockerOption{
		ClientOption: rueidis.ClientOption{InitAddress: []string{clients[0].Options().Addr}},
		ClientBuilder: func(o rueidis.ClientOption) (rueidis.Client, error) {
			c, err := rueidis.NewClient(o)
			return countingRueidis{c}, err
		},
		KeyMajority: 1,
		KeyValidity: 5 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	return rueidisLocker{l}
}

func (r rueidisLocker) acquire(ctx context.Context, key string, ttl, wait time.Duration) (func(context.Context) error, error) {
	if wait == 0 {
		_, cancel, err := r.l.TryWithContext(ctx, key)
		if err != nil {
			return nil, err
		}
		return func(context.Context) error { cancel(); return nil }, nil
	}
	// The lock's context derives from the one its wait is given, so the
	// wait is bounded by cancelling that context only while it waits. Each
	// wait is also cut at rueidisRetry and made again: in 8 processes, a
	// rueidislock waiter sometimes waited for good, the key free, with
	// nothing else to wake it (it has no timeout of its own while client-
	// side caching is on).
	deadline := time.Now().Add(wait)
	for {
		lctx, cancelWait := context.WithCancel(ctx)
		stop := time.AfterFunc(min(rueidisRetry, time.Until(deadline)), cancelWait)
		_, cancel, err := r.l.WithContext(lctx, key)
		switch stopped := stop.Stop(); {
		case err == nil && stopped:
			return func(context.Context) error { cancel(); return nil }, nil
		case err == nil: // obtained as the wait was cut: already being released
			cancel()
		}
		cancelWait()
		if !time.Now().Before(deadline) {
			return nil, errNotObtained
		}
	}
}

// rueidisRequests counts the requests of rueidislock's rueidis clients, as
// a counted client's hook does for go-redis: commands, and cached reads
// that missed the client-side cache.
var rueidisRequests atomic.Int64

type countingRueidis struct{ rueidis.Client }

func (c countingRueidis) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	rueidisRequests.Add(1)
	return c.Client.Do(ctx, cmd)
}

func (c countingRueidis) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	rueidisRequests.Add(int64(len(multi)))
	return c.Client.DoMulti(ctx, multi...)
}

func (c countingRueidis) DoCache(ctx context.Context, cmd rueidis.Cacheable, ttl time.Duration) rueidis.RedisResult {
	r := c.Client.DoCache(ctx, cmd, ttl)
	if !r.IsCacheHit() {
		rueidisRequests.Add(1)
	}
	return r
}

func (c countingRueidis) DoMultiCache(ctx context.Context, multi ...rueidis.CacheableTTL) []rueidis.RedisResult {
	rs := c.Client.DoMultiCache(ctx, multi...)
	for _, r := range rs {
		if !r.IsCacheHit() {
			rueidisRequests.Add(1)
		}
	}
	return rs
}

func (c countingRueidis) Receive(ctx context.Context, subscribe rueidis.Completed, fn func(rueidis.PubSubMessage)) error {
	rueidisRequests.Add(1)
	return c.Client.Receive(ctx, subscribe, fn)
}

// rueidisRetry cuts each rueidislock wait, which may otherwise never end.
const rueidisRetry = 200 * time.Millisecond

func (r rueidisLocker) close() { r.l.Close() }
