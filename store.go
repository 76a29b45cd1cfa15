package rediskit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// store is where a Locker keeps its locks: one Redis (single) or a
// majority of independent ones (quorum, Redlock). Each method is one attempt
// with the token-checked scripts.
type store interface {
	// obtain takes the lock and returns its fence; or, when another owner
	// holds it, returns the holder's remaining TTL (negative when it has
	// none).
	obtain(ctx context.Context, k lockKeys, token string, ttl time.Duration) (fence int64, holderTTL time.Duration, err error)
	release(ctx context.Context, k lockKeys, token string) (held bool, err error)
	refresh(ctx context.Context, k lockKeys, token string, ttl time.Duration) (held bool, err error)
	pttl(ctx context.Context, k lockKeys, token string) (ttl time.Duration, held bool, err error)
	// notifier is where waiters subscribe to releases.
	notifier() *notifier
}

// lockKeys are the Redis names of one lock: its key, with the prefix, and
// its companion in the same cluster slot, which names both the fencing
// counter and the channel its releases are published on. Channels and keys
// are separate namespaces; sharing the name saves building a second one.
type lockKeys struct{ key, companion string }

func newLockKeys(rkey string) lockKeys { return lockKeys{rkey, companionKey(rkey, ":fence")} }

// single is a store on one Redis: a single node, Sentinel, Ring or Cluster.
type single struct {
	client redis.UniversalClient
	notify *notifier
}

func newSingle(client redis.UniversalClient) *single {
	return &single{client: client, notify: newNotifier(client)}
}

func (s *single) notifier() *notifier { return s.notify }

func (s *single) obtain(ctx context.Context, k lockKeys, token string, ttl time.Duration) (int64, time.Duration, error) {
	reply, err := runAcquire(ctx, s.client, k, token, ttl)
	if err != nil {
		s.abandon(ctx, k, token, err)
		return 0, 0, err
	}
	return parseAcquire(reply)
}

// abandon undoes an attempt whose outcome is unknown: the request may have
// reached Redis and taken the lock even though the reply was lost to a
// cancelled context or a broken connection. Releasing with the token is safe
// whatever happened. A Redis error reply means the script did not run, so
// there is nothing to undo.
func (s *single) abandon(ctx context.Context, k lockKeys, token string, err error) {
	var replyErr redis.Error
	if errors.As(err, &replyErr) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, _ = s.release(ctx, k, token)
}

func (s *single) release(ctx context.Context, k lockKeys, token string) (bool, error) {
	n, err := releaseScript.Run(ctx, s.client, []string{k.key}, token, s.notify.publish, k.companion).Int64()
	return n == 1, err
}

func (s *single) refresh(ctx context.Context, k lockKeys, token string, ttl time.Duration) (bool, error) {
	n, err := refreshScript.Run(ctx, s.client, []string{k.key}, token, ttl.Milliseconds()).Int64()
	return n == 1, err
}

func (s *single) pttl(ctx context.Context, k lockKeys, token string) (time.Duration, bool, error) {
	n, err := pttlScript.Run(ctx, s.client, []string{k.key}, token).Int64()
	return pttlReply(n), n != -3, err
}

// runAcquire runs the acquire script on one Redis.
func runAcquire(ctx context.Context, client redis.UniversalClient, k lockKeys, token string, ttl time.Duration) ([]int64, error) {
	return acquireScript.Run(ctx, client, []string{k.key, k.companion}, token, ttl.Milliseconds()).Int64Slice()
}

// parseAcquire reads the acquire script's reply.
func parseAcquire(reply []int64) (fence int64, holderTTL time.Duration, err error) {
	switch {
	case len(reply) != 2:
		return 0, 0, fmt.Errorf("unexpected acquire reply %v", reply)
	case reply[0] == 1:
		return reply[1], 0, nil
	case reply[1] == 0: // expiring this very millisecond: retry at once
		return 0, time.Nanosecond, nil
	}
	return 0, time.Duration(reply[1]) * time.Millisecond, nil
}

// pttlReply turns the pttl script's reply into a TTL: -1ns for a key without
// expiry.
func pttlReply(n int64) time.Duration {
	if n < 0 {
		return -1
	}
	return time.Duration(n) * time.Millisecond
}
