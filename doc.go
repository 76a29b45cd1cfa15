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
//	if err != nil {
//		return err // wrapping rediskit.ErrNotObtained if the lock stayed held
//	}
//
//	users := rediskit.NewCache[User](client)
//	u, err := users.GetOrLoad(ctx, "user:42", time.Hour, loadUser)
//	if err != nil {
//		return err
//	}
//	fmt.Println(u.Name)
//
// A [Locker] hands out locks ([Lock]) with [Locker.TryAcquire],
// [Locker.AcquireWithTimeout] and [Locker.WithLock]. A [Cache] stores typed
// values as plain JSON (or through any [Codec]). Both take any
// [redis.UniversalClient]: a single node, Sentinel, Ring or Redis Cluster,
// and are configured with options: a Locker with [LockerOption] values, a
// Cache with [CacheOption] values, and both with [Option] values (a key
// prefix, a hook, a backoff), so that an option meant for the other does
// not compile.
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
// Waiting acquisitions queue in Redis, beside the lock (on one Redis:
// single node, Sentinel, Cluster or Ring; a Redlock keeps no queue), in the
// order they came, whichever process they are in. A free lock goes to the
// head of the queue only: neither a releaser asking again nor a newcomer,
// TryAcquire included, takes it past a live waiter. Goroutines that wait
// for a lock their own Locker holds wait in process, making no request: the
// release gives the lock to the oldest of them, unless a waiter of another
// process came earlier, and otherwise they keep their places in the queue.
// A release wakes the
// head alone, through its Locker's pub/sub subscription (see
// [Locker.Close]), or hands the lock straight over to it: in the same
// process the head then holds the lock when it is told, with no round trip
// of its own; in another, the lock is set for its TTL or 2 s, whichever is
// shorter, so that a waiter that died does not keep it long, and a longer
// TTL is confirmed by one round trip of the new holder's (WithLock, told
// by the release's message, skips it: its watchdog refreshes the lock as
// it would a lock of 2 s, which extends it to its TTL, and ends fn's
// context if it cannot). A waiting acquisition is also bounded by backoff
// and by the holder's remaining TTL, and comes back to Redis at least
// every 500 ms to keep its place; a waiter whose process exited after
// waiting 2 s is skipped at once, and any other that stopped coming back
// holds its place 2 s at most. Plain SET NX locks of other programs still
// exclude ours and are excluded, but do not queue.
//
// # Guarantees and failure modes
//
// What holds, on any go-redis client, whatever its timeout settings:
//
//   - Validity. A Lock is held until its validity ends: the send time of
//     the last successful acquisition or refresh, plus the TTL, less a
//     drift allowance of 1% of the TTL plus 2 ms. Redis cannot expire the
//     key earlier unless its clock runs more than 1% faster than the
//     client's. An acquisition whose reply arrives after its validity ended
//     is not a lock: it is released, and the attempt fails with
//     [ErrNotObtained]. The shortest TTL is [MinLockTTL] ([MinRedlockTTL]
//     for Redlock).
//   - Loss is told in time. [Locker.WithLock] refreshes every third of the
//     TTL, retries a refresh that failed within 50 ms, and cancels fn's
//     context, with cause [ErrLockNotHeld], no later than the validity's
//     end, by a timer that never waits behind a Redis call: a blackholed or
//     slow connection cannot keep fn running on a lock another owner may
//     hold. What fn does after its context is done is not protected.
//   - Deadlines. Every Locker and Lock call, and [Cache.Get] and
//     [Cache.GetOrLoad], returns within its context's deadline, and
//     [Locker.AcquireWithTimeout] within its timeout, plus a few
//     milliseconds (20 ms at most for a wait's last attempt), even when
//     Redis does not answer. (The Cache's writes and batch calls are left
//     to the client's own timeouts.) (WithLock's release, which must outlive a
//     cancelled context, is bounded by the lock's TTL instead.) A Redis
//     call its caller stopped waiting for
//     goes on in the background until the client gives up on it (its
//     ReadTimeout, 3 s by default) and is settled when its reply comes: an
//     acquisition nobody will use is released. [Locker.Close] waits for
//     those calls.
//   - Transient errors. A wait rides out connection errors, timeouts,
//     LOADING, TRYAGAIN, CLUSTERDOWN and failovers until its timeout, and
//     then returns [ErrNotObtained] wrapping the last error. TryAcquire, a
//     single attempt, returns Redis's error.
//   - Foreign writers. A release by another program, which publishes no
//     wake-up, or an expiry, is noticed by the acquisition at the head of
//     the key's queue within one backoff sleep (at most the backoff's
//     cap: 512 ms by default) and a round trip, plus however late the Go
//     runtime runs the waiter once its sleep ends (a millisecond or a few
//     on a loaded machine).
//   - All-or-nothing. Every script validates what can fail (a key of the
//     wrong type under the lock's or its counter's name) before its first
//     write, so an error leaves Redis as it was.
//
// What does not hold without help:
//
//   - A single Redis, and a Cluster, replicate asynchronously: a failover can
//     lose a lock that the old master granted. [NewRedlock] survives the
//     loss of a minority of independent masters.
//   - A holder paused past its validity (a GC pause, a stopped VM) may act
//     after its context was cancelled; so may a write already in flight. Pass
//     [Lock.Fence] to the protected storage and have it reject lower fences.
//   - Clocks: the drift allowance covers a client and server clock rate
//     difference of 1%, not a clock that jumps.
//
// What to set on the go-redis client: ContextTimeoutEnabled: true lets every
// call with a deadline (acquisition, release, refresh, TTL, cache read) run
// on the caller's goroutine, saving a goroutine per call and its allocations
// (BENCHMARKS.md counts them; a cancellation before the deadline is then
// noticed at the deadline). That holds for a single-node client with
// go-redis's own dialer, no TLS, socket timeouts kept (not -2), and no
// OnConnect, credentials provider or Limiter of yours; any other client
// counts as a default one, since go-redis may wait past a deadline there
// whatever the ctx: in a TLS handshake (go-redis 9.5 bounds it by
// DialTimeout only), in a Dialer or callback of yours, in a Sentinel
// client's master lookup, in a Cluster's wait for the nodes' COMMAND reply.
// Hooks you add with AddHook run on the caller's goroutine too, and cannot
// be seen: have them honour the ctx. On a default client such a call runs on
// a goroutine of its own, which its caller can leave at the deadline; calls
// on a context that never ends (context.Background) run on the caller's
// goroutine on any client. An acquisition its caller left, or whose reply
// never came, is released by its token in the background, looking again for
// a few seconds in case the request was still on its way. Keep ReadTimeout
// and WriteTimeout bounded, since they bound the calls that run on after
// their callers left. Choose a TTL well above the round trip and the longest
// pause you expect: the default of [Locker.WithLock], 10 s, leaves 3.3 s
// between refreshes.
//
// [NewRedlock] makes a Locker that keeps each lock on a majority of several
// independent Redis masters (Redlock), so that losing a minority of them
// loses no lock; its documentation says what that does and does not
// guarantee.
//
// Fencing tokens strictly increase for each new holder of a key. They are
// max(last fence + 1, the Redis server's clock in microseconds), so they
// stay increasing even after their counter key expires, 24 hours plus the
// lock's TTL after the key's last acquisition; counters therefore do not
// pile up. The counter lives next to the lock key, as {key}key:fence (in
// the same Redis Cluster slot, whatever braces the key contains).
//
// Cache values are stored under their key exactly as the codec encodes them:
// with the default JSON codec, a Python service using json.dumps and
// json.loads on the same keys shares the cache. [Cache.GetOrLoad] loads a
// key once across all the processes that share the Redis, however their
// misses are timed (a lease in the key's slot; see [WithLoadLease]),
// answers from the loader within the caller's deadline when Redis is slow
// or down, and never overwrites a key holding another Redis type. It can
// serve values past their TTL while one background load refreshes them
// ([WithStaleWhileRevalidate]) or when the loader fails
// ([WithStaleIfError]), and refresh hot values before they expire
// ([WithEarlyRefresh]); values stay plain bytes, kept in Redis for their
// TTL plus the stale window. Batch reads and writes take one round trip
// (one MGET on a single node, one pipeline per node on a Cluster, so keys
// may lie in any cluster slots). With [WithLocalCache], reads are answered
// in process when they can, by a bounded tier that Redis keeps coherent
// with every program's writes (CLIENT TRACKING, in BCAST mode).
//
// Errors wrap the sentinel errors ([ErrNotObtained], [ErrLockNotHeld],
// [ErrCacheMiss], [ErrNotFound], [ErrDecode], [ErrWrongType],
// [ErrInvalidArgument]) and the
// key; a cancelled or expired context is returned so that errors.Is(err,
// context.Canceled) or errors.Is(err, context.DeadlineExceeded) holds.
// Bad input never panics and never writes to Redis.
//
// # Concurrency
//
// Lockers, Locks and Caches are safe for concurrent use by multiple
// goroutines. The goroutines the package starts are: the refresher of a
// [Locker.WithLock] call, which ends before the call returns; the pub/sub
// reader and writer of a Locker or a Cache, which end with Close or after
// 30 seconds without waiters; the Redis calls a caller stopped waiting for,
// which end within the client's own timeouts and which Close waits for;
// the loads and background refreshes of [Cache.GetOrLoad], which end with
// the load (bounded by [WithLoadTimeout]) or with [Cache.Close]; and, once
// a Locker's acquisition has waited on a node that supports key tracking,
// that node's tracking reader, which ends with [Locker.Close]. The tracking
// uses two connections of the Locker's own per such node (one subscribed,
// one tracked, which is pinged twice a second while waits are on), made
// from the client's options. A Cache with a local tier has, once it has
// read from a node, that node's invalidation reader on a connection of its
// own (on the fallback's channel where Redis cannot track keys), and the
// tier's maintenance goroutine; both end with [Cache.Close]. Nothing is
// logged: observe the package through [WithHook] and the Stats methods.
package rediskit
