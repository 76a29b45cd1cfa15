package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/rediskit/rediskit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// cluster runs replicas in-process, each with its own Redis client, as if
// they were separate processes, and records who leads.
type cluster struct {
	t       *testing.T
	mr      *miniredis.Miniredis
	mu      sync.Mutex
	leaders map[string]bool // replicas leading now
	most    int             // the most leading at once
	events  chan string     // "+name" on becoming leader, "-name" on stepping down
	clients map[string]*redis.Client
	cancels map[string]context.CancelFunc
	byName  map[string]*replica
	wg      sync.WaitGroup
}

const ttl = 300 * time.Millisecond

func startCluster(t *testing.T, names ...string) *cluster {
	c := &cluster{t: t, mr: miniredis.RunT(t), leaders: map[string]bool{}, events: make(chan string, 100),
		clients: map[string]*redis.Client{}, cancels: map[string]context.CancelFunc{}, byName: map[string]*replica{}}
	for _, name := range names {
		client := redis.NewClient(&redis.Options{Addr: c.mr.Addr(), MaxRetries: -1})
		locker := rediskit.NewLocker(client)
		ctx, cancel := context.WithCancel(context.Background())
		c.clients[name], c.cancels[name] = client, cancel
		r := &replica{name: name, locker: locker, key: "leader:job", ttl: ttl, interval: 20 * time.Millisecond,
			job: func(context.Context, string) error { return nil }, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			observe: c.observe, handOver: make(chan struct{}, 1)}
		c.byName[name] = r
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer client.Close()
			defer locker.Close()
			_ = r.run(ctx)
		}()
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) observe(name string, leading bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaders[name] = leading
	n := 0
	for _, l := range c.leaders {
		if l {
			n++
		}
	}
	if n > c.most {
		c.most = n
	}
	sign := "-"
	if leading {
		sign = "+"
	}
	c.events <- sign + name
}

// next returns the next leadership event, failing after 5 s.
func (c *cluster) next() string {
	c.t.Helper()
	select {
	case e := <-c.events:
		return e
	case <-time.After(5 * time.Second):
		c.t.Fatal("no leadership change within 5 s")
		return ""
	}
}

func (c *cluster) stopAll() {
	for _, cancel := range c.cancels {
		cancel()
	}
	c.wg.Wait()
}

func TestOneLeaderAndFailover(t *testing.T) {
	c := startCluster(t, "a", "b", "c")
	first := c.next()
	require.Equal(t, "+", first[:1])
	leader := first[1:]
	time.Sleep(3 * ttl) // refreshes keep the leader in place past its TTL
	select {
	case e := <-c.events:
		t.Fatalf("leadership changed without cause: %s", e)
	default:
	}

	// The leader stops: it releases, and a waiting replica takes over.
	c.cancels[leader]()
	assert.Equal(t, "-"+leader, c.next())
	second := c.next()
	require.Equal(t, "+", second[:1])
	assert.NotEqual(t, leader, second[1:])

	// The new leader dies: its connection to Redis is cut, so it can neither
	// refresh nor release. It steps down by itself once its TTL has passed
	// without a refresh, and another replica leads once the key expires.
	dead := second[1:]
	require.NoError(t, c.clients[dead].Close())
	assert.Equal(t, "-"+dead, c.next())
	c.mr.FastForward(ttl)
	third := c.next()
	require.Equal(t, "+", third[:1])
	assert.NotEqual(t, dead, third[1:])
	assert.NotEqual(t, leader, third[1:], "the stopped replica is gone")

	c.mu.Lock()
	defer c.mu.Unlock()
	assert.Equal(t, 1, c.most, "never two leaders at once")
}

// Asked to hand over, the leader releases and steps aside; another replica
// leads, and the one that handed over leads again later: leadership goes
// round, never held twice at once.
func TestHandOverRotates(t *testing.T) {
	c := startCluster(t, "a", "b", "c")
	led := map[string]int{}
	for terms := 0; len(led) < 3 || minCount(led) < 2; terms++ {
		require.Less(t, terms, 30, "leadership does not go round: %v", led)
		e := c.next()
		if e[0] != '+' {
			continue
		}
		led[e[1:]]++
		c.byName[e[1:]].handOver <- struct{}{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	assert.Equal(t, 1, c.most, "never two leaders at once")
}

func minCount(m map[string]int) int {
	least := -1
	for _, n := range m {
		if least < 0 || n < least {
			least = n
		}
	}
	return least
}
