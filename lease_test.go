package rediskit_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
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

// slowPoll makes a waiting Cache poll so rarely that only a wake-up message
// can explain a prompt answer.
var slowPoll = rediskit.WithRetryBackoff(rediskit.ConstantBackoff(10 * time.Second))

// gate returns a channel and a function that closes it once; the test's
// end closes it too, so that a failing test does not leave a loader blocked.
func gate(t *testing.T) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(ch) }) }
	t.Cleanup(open)
	return ch, open
}

// secondClient returns another client of b's server, as another process
// would have.
func secondClient(t *testing.T, b *backend) redis.UniversalClient {
	t.Helper()
	var c redis.UniversalClient
	switch cc := b.client.(type) {
	case *redis.ClusterClient:
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cc.Options().Addrs})
	case *redis.Client:
		c = redis.NewClient(&redis.Options{Addr: cc.Options().Addr})
	default:
		t.Fatalf("no second client for %T", b.client)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestLoadLeaseAcrossProcesses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()

		t.Run("one load, the other process woken with the value", func(t *testing.T) {
			key := b.key("fleet")
			a := newCache[string](t, b.client)
			other := newCache[string](t, secondClient(t, b), slowPoll)
			release, open := gate(t)
			loadingA := make(chan struct{})
			var loadedAt atomic.Int64
			go func() {
				v, err := a.GetOrLoad(ctx, key, time.Minute, func(context.Context) (string, error) {
					close(loadingA)
					<-release
					loadedAt.Store(time.Now().UnixNano())
					return "from A", nil
				})
				assert.NoError(t, err)
				assert.Equal(t, "from A", v)
			}()
			<-loadingA
			done := make(chan struct{})
			go func() {
				defer close(done)
				v, err := other.GetOrLoad(ctx, key, time.Minute, func(context.Context) (string, error) {
					return "", fmt.Errorf("the other process must not load")
				})
				assert.NoError(t, err)
				assert.Equal(t, "from A", v)
			}()
			time.Sleep(100 * time.Millisecond) // the other process finds the lease and waits
			assert.Zero(t, b.client.Exists(ctx, key).Val(), "the key stays absent: other programs see a plain miss")
			assert.Positive(t, b.client.Exists(ctx, rediskit.CompanionKey(key, ":lease")).Val(), "the lease")
			_, err := other.Get(ctx, key)
			assert.ErrorIs(t, err, rediskit.ErrCacheMiss)
			open()
			select {
			case <-done:
			case <-time.After(3 * time.Second):
				t.Fatal("the waiting process was not woken (its backoff is 10 s)")
			}
			assert.Less(t, time.Since(time.Unix(0, loadedAt.Load())), 2*time.Second)
			assert.Equal(t, `"from A"`, b.client.Get(ctx, key).Val())
		})

		t.Run("a Delete during the load keeps the stale value out", func(t *testing.T) {
			key := b.key("deleted-during-load")
			c := newCache[int](t, b.client)
			release, open := gate(t)
			loading := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				v, err := c.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) {
					close(loading)
					<-release
					return 1, nil // read before the Delete: stale
				})
				assert.NoError(t, err)
				assert.Equal(t, 1, v, "the caller still gets what was loaded")
			}()
			<-loading
			require.NoError(t, c.Delete(ctx, key))
			open()
			<-done
			time.Sleep(100 * time.Millisecond) // the write-back, had it been made
			assert.Zero(t, b.client.Exists(ctx, key).Val(), "the stale value was written back")
		})

		t.Run("a crashed holder delays the others by at most the lease TTL", func(t *testing.T) {
			key := b.key("crashed-holder")
			const lease = 300 * time.Millisecond
			// What a process killed mid-load leaves behind.
			require.NoError(t, b.client.Set(ctx, rediskit.CompanionKey(key, ":lease"), "crashed", lease).Err())
			// It polls every 10 s: only the lease's TTL, which caps each
			// sleep, can end its wait before that.
			c := newCache[int](t, b.client, rediskit.WithLoadLease(lease), slowPoll)
			if b.mr != nil {
				// miniredis's clock only moves when told.
				timer := time.AfterFunc(lease, func() { b.mr.FastForward(lease) })
				t.Cleanup(func() { timer.Stop() })
			}
			start := time.Now()
			v, err := c.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) { return 9, nil })
			require.NoError(t, err)
			assert.Equal(t, 9, v)
			// The margin is for a loaded machine; a wait that ignored the
			// lease's TTL would last the 10 s poll.
			assert.Less(t, time.Since(start), lease+time.Second)
		})

		t.Run("a failed load hands over to the waiting process at once", func(t *testing.T) {
			key := b.key("failed-holder")
			a := newCache[int](t, b.client)
			other := newCache[int](t, secondClient(t, b), slowPoll)
			fail, open := gate(t)
			loading := make(chan struct{})
			go func() {
				_, err := a.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) {
					close(loading)
					<-fail
					return 0, fmt.Errorf("db down")
				})
				assert.Error(t, err)
			}()
			<-loading
			done := make(chan int, 1)
			go func() {
				v, err := other.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) { return 4, nil })
				assert.NoError(t, err)
				done <- v
			}()
			time.Sleep(100 * time.Millisecond)
			open()
			select {
			case v := <-done:
				assert.Equal(t, 4, v, "errors are not shared across processes: it loads itself")
			case <-time.After(3 * time.Second):
				t.Fatal("the waiting process was not woken when the holder gave up")
			}
		})

		t.Run("leases off: one load per process", func(t *testing.T) {
			key := b.key("lease-off")
			c := newCache[int](t, b.client, rediskit.WithLoadLease(0))
			release := make(chan struct{})
			go func() { time.Sleep(50 * time.Millisecond); close(release) }()
			_, err := c.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) {
				<-release
				raw, _ := b.client.Get(ctx, key).Result()
				assert.Empty(t, raw, "no lease written")
				return 1, nil
			})
			require.NoError(t, err)
		})
	})
}

// The helper process of TestLoadLeaseAcrossOSProcesses: 50 goroutines miss
// one key at the same moment and report what they got.
const envLeaseHelper = "REDISKIT_LEASE_HELPER" // addr|cluster|key|counter|start unix ns

func TestLoadLeaseHelperProcess(t *testing.T) {
	spec := os.Getenv(envLeaseHelper)
	if spec == "" {
		t.Skip("the helper process of TestLoadLeaseAcrossOSProcesses")
	}
	parts := strings.Split(spec, "|")
	require.Len(t, parts, 5)
	var client redis.UniversalClient
	if parts[1] == "cluster" {
		client = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(parts[0], ",")})
	} else {
		client = redis.NewClient(&redis.Options{Addr: parts[0]})
	}
	defer client.Close()
	key, counter := parts[2], parts[3]
	startAt, err := strconv.ParseInt(parts[4], 10, 64)
	require.NoError(t, err)
	c := rediskit.NewCache[string](client)
	defer c.Close()
	ctx := context.Background()
	time.Sleep(time.Until(time.Unix(0, startAt)))
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.GetOrLoad(ctx, key, time.Minute, func(ctx context.Context) (string, error) {
				n, err := client.Incr(ctx, counter).Result()
				time.Sleep(100 * time.Millisecond) // a load takes a while
				return fmt.Sprintf("load %d", n), err
			})
			if assert.NoError(t, err) {
				assert.Equal(t, "load 1", v)
			}
		}()
	}
	wg.Wait()
}

func TestLoadLeaseAcrossOSProcesses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		if strings.HasPrefix(b.name, "universal") {
			t.Skip("the cluster backend covers it")
		}
		ctx := context.Background()
		addr, kind := "", "single"
		switch cc := b.client.(type) {
		case *redis.ClusterClient:
			addr, kind = strings.Join(cc.Options().Addrs, ","), "cluster"
		case *redis.Client:
			addr = cc.Options().Addr
		}
		key, counter := b.key("os-stampede"), b.key("os-stampede-loads")
		startAt := time.Now().Add(time.Second).UnixNano() // all four miss at once
		spec := strings.Join([]string{addr, kind, key, counter, strconv.FormatInt(startAt, 10)}, "|")
		var wg sync.WaitGroup
		outs := make([][]byte, 4)
		errs := make([]error, 4)
		for i := range outs {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				cmd := exec.Command(os.Args[0], "-test.run=^TestLoadLeaseHelperProcess$", "-test.count=1", "-test.v")
				cmd.Env = append(os.Environ(), envLeaseHelper+"="+spec)
				outs[i], errs[i] = cmd.CombinedOutput()
			}(i)
		}
		wg.Wait()
		for i := range outs {
			require.NoError(t, errs[i], "helper %d:\n%s", i, outs[i])
			require.Contains(t, string(outs[i]), "--- PASS: TestLoadLeaseHelperProcess", "helper %d ran:\n%s", i, outs[i])
		}
		n, err := b.client.Get(ctx, counter).Int()
		require.NoError(t, err)
		assert.Equal(t, 1, n, "loads across 4 processes x 50 goroutines")
	})
}

// A lease with less than a millisecond left reads as a PTTL of 0: the
// waiter looks again once it is gone, not after a backoff sleep.
func TestLoadLeaseExpiringNow(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	ctx := context.Background()
	const key = "lease-expiring-now"
	require.NoError(t, client.Set(ctx, rediskit.CompanionKey(key, ":lease"), "crashed", time.Millisecond).Err())
	mr.FastForward(500 * time.Microsecond) // held, with a PTTL of 0
	c := newCache[int](t, client, rediskit.WithLoadLease(time.Second), slowPoll)
	timer := time.AfterFunc(100*time.Millisecond, func() { mr.FastForward(time.Millisecond) })
	t.Cleanup(func() { timer.Stop() })
	start := time.Now()
	v, err := c.GetOrLoad(ctx, key, time.Minute, func(context.Context) (int, error) { return 9, nil })
	require.NoError(t, err)
	assert.Equal(t, 9, v)
	assert.Less(t, time.Since(start), 5*time.Second, "a lease about to expire cost a whole backoff sleep (10 s)")
}
