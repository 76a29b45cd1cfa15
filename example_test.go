package rediskit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/rediskit/rediskit"
)

// newExampleClient starts an in-process Redis for an example and returns a
// client for it, and a function that stops both.
func newExampleClient() (*redis.Client, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return client, func() { client.Close(); mr.Close() }
}

func ExampleLocker_TryAcquire() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()
	locker := rediskit.NewLocker(client)

	lock, err := locker.TryAcquire(ctx, "user:42:lock", 10*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("locked", lock.Key())

	// A second attempt fails at once while the lock is held.
	_, err = locker.TryAcquire(ctx, "user:42:lock", 10*time.Second)
	fmt.Println("second attempt not obtained:", errors.Is(err, rediskit.ErrNotObtained))

	if err := lock.Release(ctx); err != nil {
		fmt.Println("error:", err)
	}
	// Releasing twice is an error, never a deletion of someone else's lock.
	fmt.Println("second release:", errors.Is(lock.Release(ctx), rediskit.ErrLockNotHeld))
	// Output:
	// locked user:42:lock
	// second attempt not obtained: true
	// second release: true
}

func ExampleLocker_AcquireWithTimeout() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()
	locker := rediskit.NewLocker(client)

	holder, _ := locker.TryAcquire(ctx, "report", time.Minute)
	go func() {
		time.Sleep(20 * time.Millisecond)
		holder.Release(ctx)
	}()

	// Waits for the holder's release, up to 5 seconds.
	lock, err := locker.AcquireWithTimeout(ctx, "report", 10*time.Second, 5*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer lock.Release(ctx)
	fmt.Println("got the lock after the holder; fence increased:", lock.Fence() > holder.Fence())

	// With the lock held, a short wait runs out.
	_, err = locker.AcquireWithTimeout(ctx, "report", 10*time.Second, 50*time.Millisecond)
	fmt.Println(err)
	// Output:
	// got the lock after the holder; fence increased: true
	// rediskit: acquire "report": rediskit: lock not obtained
}

func ExampleLocker_WithLock() {
	client, stop := newExampleClient()
	defer stop()
	locker := rediskit.NewLocker(client)

	err := locker.WithLock(context.Background(), "nightly-job", func(ctx context.Context) error {
		// The lock is refreshed while this runs; ctx is cancelled, with
		// cause ErrLockNotHeld, if it is lost.
		fmt.Println("running the job")
		return nil
	}, rediskit.WithLockTTL(30*time.Second), rediskit.WithLockWait(5*time.Second))
	fmt.Println("done:", err)
	// Output:
	// running the job
	// done: <nil>
}
