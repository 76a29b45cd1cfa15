package rediskit

import "errors"

// Sentinel errors returned by the package. Match them with [errors.Is]: the
// errors the package returns wrap them together with the key involved and,
// where there is one, the underlying Redis or codec error. Their text has
// no package prefix, as os.ErrNotExist has none: the error that wraps one
// says "rediskit:" once, at its start.
var (
	// ErrNotObtained is returned when a lock is held by another owner, or
	// when a wait for it ran out before the caller's context ended.
	ErrNotObtained = errors.New("lock not obtained")

	// ErrLockNotHeld is returned by the release, refresh and TTL of a lock
	// whose token no longer owns its key: it expired, was released, or was
	// deleted, and possibly taken by another owner. It is also the cause of
	// the context cancellation that WithLock applies when its lock is lost.
	ErrLockNotHeld = errors.New("lock not held")

	// ErrCacheMiss is returned by Cache.Get when the key is absent.
	ErrCacheMiss = errors.New("cache miss")

	// ErrNotFound is returned by a loader to say that the value does not
	// exist. With negative caching on, GetOrLoad remembers it for a while
	// and returns it without calling the loader again.
	ErrNotFound = errors.New("not found")

	// ErrDecode is wrapped by every error caused by bytes in Redis that the
	// codec cannot decode into the cache's type; the codec's own error is
	// wrapped too.
	ErrDecode = errors.New("cannot decode value")

	// ErrWrongType is wrapped by the error of a cache read of a key that
	// holds another Redis type (a list, a hash...): data of another
	// program, which GetOrLoad never overwrites.
	ErrWrongType = errors.New("key holds another Redis type")

	// ErrInvalidArgument is wrapped by every error caused by bad input: an
	// empty key, a TTL or timeout out of range, a nil function, a nil
	// client, a nil or zero Lock, a value the codec cannot encode, or an
	// option given an invalid value.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrClosed is returned by Cache.GetOrLoad after [Cache.Close], which
	// ends the loads it would start. (A Locker has no such error: after
	// its Close, acquisitions go on, with backoff alone.)
	ErrClosed = errors.New("cache closed")
)
