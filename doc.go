// Package rediskit provides a typed Redis cache and a correct, fast
// distributed lock for Go services, over any go-redis v9 client.
//
// # Quick start
//
//	client := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	locker := rediskit.NewLocker(client)
//
//	err := locker.WithLock(ctx, "user:42:lock", func(ctx context.Context) error {
//		// Only one process at a time runs this. ctx is cancelled, with
//		// cause ErrLockNotHeld, if the lock is lost.
//		return doWork(ctx)
//	}, rediskit.WithLockWait(5*time.Second))
//
//	users := rediskit.NewCache[User](client)
//	u, err := users.GetOrLoad(ctx, "user:42", time.Hour, loadUser)
//
// A [Locker] hands out locks ([Lock]) with [Locker.TryAcquire],
// [Locker.AcquireWithTimeout] and [Locker.WithLock]. A [Cache] stores typed
// values as plain JSON (or through any [Codec]). Both take any
// [redis.UniversalClient]: a single node, Sentinel, Ring or Redis Cluster,
// and are configured with [Option] values.
//
// # Guarantees
//
// A lock is a key holding a random token (16 bytes from crypto/rand), set
// only if absent, with a millisecond expiry. Acquiring takes one round trip
// and returns the lock's fencing token ([Lock.Fence]); releasing and
// refreshing are Lua scripts that compare the token first, so a lock that
// expired and passed to another owner is never deleted or extended by its old
// holder. Waiting acquisitions back off with jitter and never sleep past the
// holder's remaining TTL. The lock's safety rests on its TTL: a holder paused
// longer than the TTL (a GC pause, a stopped VM) can still believe it holds
// the lock, which is what fencing tokens are for.
//
// Waiting acquisitions are woken by the holder's release through pub/sub
// (one subscription per Locker; see [Locker.Close]), and are also bounded by
// backoff and by the holder's remaining TTL.
//
// [NewRedlock] makes a Locker that keeps each lock on a majority of several
// independent Redis masters (Redlock), so that losing a minority of them
// loses no lock; its documentation says what that does and does not
// guarantee.
//
// Fencing tokens strictly increase for each new holder of a key. They are
// max(last fence + 1, the Redis server's clock in microseconds), so they
// stay increasing even after their counter key expires, 24 hours after the
// key's last acquisition; counters therefore do not pile up. The counter
// lives next to the lock key, in the same Redis Cluster slot whatever braces
// the key contains.
//
// Cache values are stored under their key exactly as the codec encodes them:
// with the default JSON codec, a Python service using json.dumps and
// json.loads on the same keys shares the cache. [Cache.GetOrLoad] shares one
// load among concurrent misses of a key in the process. Batch reads and
// writes are pipelined, one round trip per node, so keys may lie in any
// cluster slots.
//
// Errors wrap the sentinel errors ([ErrNotObtained], [ErrLockNotHeld],
// [ErrCacheMiss], [ErrNotFound], [ErrDecode], [ErrInvalidArgument]) and the
// key; a cancelled or expired context is returned so that errors.Is(err,
// context.Canceled) or errors.Is(err, context.DeadlineExceeded) holds.
// Bad input never panics and never writes to Redis.
//
// # Concurrency
//
// Lockers, Locks and Caches are safe for concurrent use by multiple
// goroutines. The goroutines the package starts are the refresher of a
// [Locker.WithLock] call, which ends before the call returns; a Locker's
// pub/sub reader, which ends with [Locker.Close] or after 30 seconds without
// waiters; and the loads of [Cache.GetOrLoad], which end with the load
// (bounded by [WithLoadTimeout]) or with [Cache.Close]. Nothing is logged: observe the
// package through [WithHook] and the Stats methods.
package rediskit
