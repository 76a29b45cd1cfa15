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
	defer locker.Close()

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
	defer locker.Close()

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
	// rediskit: acquire "report": lock not obtained
}

func ExampleLocker_WithLock() {
	client, stop := newExampleClient()
	defer stop()
	locker := rediskit.NewLocker(client)
	defer locker.Close()

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

// Example shows the two halves of the package on an in-process Redis: a
// typed cache read through a loader, and a lock around a job.
func Example() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()

	type User struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	users := rediskit.NewCache[User](client, rediskit.WithKeyPrefix("app:"))
	defer users.Close()
	u, err := users.GetOrLoad(ctx, "user:1", time.Hour, func(ctx context.Context) (User, error) {
		return User{ID: 1, Name: "Ada"}, nil // from the database, on a miss
	})
	fmt.Println(u.Name, err)

	locker := rediskit.NewLocker(client, rediskit.WithKeyPrefix("app:"))
	defer locker.Close()
	err = locker.WithLock(ctx, "user:1:lock", func(ctx context.Context) error {
		fmt.Println("only one worker runs this at a time")
		return nil
	})
	fmt.Println(err)
	// Output:
	// Ada <nil>
	// only one worker runs this at a time
	// <nil>
}

func ExampleCache_Get() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()

	type Settings struct {
		Theme string `json:"theme"`
	}
	cache := rediskit.NewCache[Settings](client)
	defer cache.Close()
	if err := cache.Set(ctx, "settings:7", Settings{Theme: "dark"}, 0); err != nil { // 0: the default hour
		fmt.Println("error:", err)
	}
	s, err := cache.Get(ctx, "settings:7")
	fmt.Println(s.Theme, err)

	raw, _ := client.Get(ctx, "settings:7").Result()
	fmt.Println("stored as", raw)

	_, err = cache.Get(ctx, "settings:8")
	fmt.Println("miss:", errors.Is(err, rediskit.ErrCacheMiss))
	// Output:
	// dark <nil>
	// stored as {"theme":"dark"}
	// miss: true
}

func ExampleCache_GetOrLoad() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()

	cache := rediskit.NewCache[string](client, rediskit.WithNegativeCaching(time.Minute))
	defer cache.Close()
	loads := 0
	load := func(ctx context.Context) (string, error) {
		loads++
		return "report body", nil
	}
	for i := 0; i < 3; i++ {
		v, _ := cache.GetOrLoad(ctx, "report:2026-11", time.Hour, load)
		fmt.Println(v)
	}
	fmt.Println("loads:", loads)

	// A loader's ErrNotFound is remembered, sparing the database.
	missing := func(ctx context.Context) (string, error) {
		loads++
		return "", rediskit.ErrNotFound
	}
	_, _ = cache.GetOrLoad(ctx, "report:1999-01", time.Hour, missing)
	_, err := cache.GetOrLoad(ctx, "report:1999-01", time.Hour, missing)
	fmt.Println(errors.Is(err, rediskit.ErrNotFound), "loads:", loads)
	// Output:
	// report body
	// report body
	// report body
	// loads: 1
	// true loads: 2
}

func ExampleCache_GetMany() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()

	prices := rediskit.NewCache[float64](client)
	defer prices.Close()
	_ = prices.SetMany(ctx, map[string]float64{"price:apple": 1.25, "price:pear": 0.8}, time.Minute)

	got, err := prices.GetMany(ctx, "price:apple", "price:pear", "price:kiwi")
	fmt.Println(got["price:apple"], got["price:pear"], len(got), err)
	// Output:
	// 1.25 0.8 2 <nil>
}

func ExampleWithStaleWhileRevalidate() {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	ctx := context.Background()
	prices := rediskit.NewCache[int](client, rediskit.WithStaleWhileRevalidate(time.Minute))

	_ = prices.Set(ctx, "price:apple", 100, time.Second) // kept in Redis for 1s + 1m
	mr.FastForward(2 * time.Second)                      // past its TTL, within the window

	refreshed := make(chan struct{})
	v, _ := prices.GetOrLoad(ctx, "price:apple", time.Second, func(context.Context) (int, error) {
		defer close(refreshed)
		return 120, nil // from the database
	})
	fmt.Println("served at once, stale:", v)

	<-refreshed    // the background refresh has loaded
	prices.Close() // and Close waits for its write-back
	v, _ = prices.Get(ctx, "price:apple")
	fmt.Println("refreshed:", v)
	// Output:
	// served at once, stale: 100
	// refreshed: 120
}

// A Cache with a local tier answers repeated reads in process. The tier is
// kept coherent by Redis (CLIENT TRACKING) on Redis 6 and later; on
// miniredis, as here, by the Caches' own messages and the local TTL.
func ExampleWithLocalCache() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()
	users := rediskit.NewCache[string](client,
		rediskit.WithKeyPrefix("users:"),
		rediskit.WithLocalCache(10_000, time.Minute))
	defer users.Close()

	if err := users.Set(ctx, "1", "Ada", time.Hour); err != nil {
		fmt.Println("error:", err)
		return
	}
	for users.Stats().LocalHits == 0 { // until the tier listens, reads go to Redis
		if _, err := users.Get(ctx, "1"); err != nil {
			fmt.Println("error:", err)
			return
		}
		time.Sleep(time.Millisecond)
	}
	name, err := users.Get(ctx, "1") // from the tier: no round trip
	fmt.Println(name, err)

	// The Cache's own writes drop its entries at once.
	_ = users.Set(ctx, "1", "Grace", time.Hour)
	name, err = users.Get(ctx, "1")
	fmt.Println(name, err)
	// Output:
	// Ada <nil>
	// Grace <nil>
}
