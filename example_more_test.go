package rediskit_test

import (
	"bytes"
	"context"
	"encoding/gob"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rediskit/rediskit"
)

// A Redlock over three independent masters (here three in-process ones):
// the lock is held on a majority, so it survives the loss of one.
func ExampleNewRedlock() {
	var clients []redis.UniversalClient
	for i := 0; i < 3; i++ {
		client, stop := newExampleClient()
		defer stop()
		clients = append(clients, client)
	}
	ctx := context.Background()
	locker := rediskit.NewRedlock(clients)
	defer locker.Close()

	lock, err := locker.TryAcquire(ctx, "report", 10*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("locked; fence positive:", lock.Fence() > 0)
	fmt.Println("release:", lock.Release(ctx))
	// Output:
	// locked; fence positive: true
	// release: <nil>
}

// A hook sees every event as it happens (wire it to metrics or logs), and
// Stats counts them.
func ExampleWithHook() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()
	locker := rediskit.NewLocker(client, rediskit.WithHook(func(e rediskit.Event) {
		fmt.Println("event:", e.Kind, e.Key)
	}))
	defer locker.Close()

	lock, _ := locker.TryAcquire(ctx, "job", time.Minute)
	_, _ = locker.TryAcquire(ctx, "job", time.Minute) // held: contended, not obtained
	_ = lock.Release(ctx)
	s := locker.Stats()
	fmt.Printf("acquired %d, contended %d, released %d\n", s.Acquired, s.Contended, s.Released)
	// Output:
	// event: acquired job
	// event: contended job
	// event: not obtained job
	// event: released job
	// acquired 1, contended 1, released 1
}

// A holder that needs longer than it thought extends its lock, and reads
// what is left of it.
func ExampleLock_Refresh() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()
	locker := rediskit.NewLocker(client)
	defer locker.Close()

	lock, err := locker.TryAcquire(ctx, "import", 10*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer lock.Release(ctx)
	if err := lock.Refresh(ctx, time.Minute); err != nil {
		fmt.Println("lost:", err) // wraps rediskit.ErrLockNotHeld
		return
	}
	left, err := lock.TTL(ctx)
	fmt.Println(left > 50*time.Second, err)
	// Output:
	// true <nil>
}

// gobCodec stores values as gob instead of JSON: only Go programs can read
// them then.
type gobCodec struct{}

func (gobCodec) Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	err := gob.NewEncoder(&b).Encode(v)
	return b.Bytes(), err
}

func (gobCodec) Unmarshal(data []byte, v any) error {
	return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
}

// A Cache with a codec of its own.
func ExampleWithCodec() {
	client, stop := newExampleClient()
	defer stop()
	ctx := context.Background()
	type point struct{ X, Y int }
	points := rediskit.NewCache[point](client, rediskit.WithCodec(gobCodec{}))
	defer points.Close()

	if err := points.Set(ctx, "p", point{1, 2}, time.Hour); err != nil {
		fmt.Println("error:", err)
		return
	}
	p, err := points.Get(ctx, "p")
	fmt.Println(p, err)
	// Output:
	// {1 2} <nil>
}
