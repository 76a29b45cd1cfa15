// Command leader is a worker that many replicas can run at once while only
// one of them, the leader, does the periodic job. Leadership is a rediskit
// lock held with WithLock: refreshed while the leader lives, its job's
// context cancelled if the lock is lost, and taken over by another replica
// when the leader stops (at once: the release wakes a waiting replica) or
// dies (when its lock's TTL runs out).
//
//	go run ./examples/leader -replicas 3
//
// runs three replicas in one process on an embedded Redis (or on REDIS_URL)
// and has the leader hand over every few seconds to show the hand-over: it
// releases, a waiting replica leads, and it competes again a moment later.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/rediskit/rediskit"
)

// replica is one worker competing for leadership.
type replica struct {
	name     string
	locker   *rediskit.Locker
	key      string
	ttl      time.Duration // leadership lasts this long past the leader's last refresh
	interval time.Duration // how often the leader runs the job
	job      func(ctx context.Context, replica string) error
	log      *slog.Logger
	// observe, if set, is called when the replica starts and stops leading.
	observe func(replica string, leading bool)
	// handOver, when it receives, has the leader step down and let another
	// replica lead: it waits an interval before competing again.
	handOver chan struct{}
}

// run competes for leadership until ctx ends. While leader, it runs the job
// every interval; the job's context ends when leadership is lost or ctx
// ends, and run then competes again.
func (r *replica) run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := r.locker.WithLock(ctx, r.key, r.lead,
			rediskit.WithLockTTL(r.ttl),
			// Wait as long as a leader may live without refreshing: a
			// release wakes us at once, an expiry within the TTL.
			rediskit.WithLockWait(2*r.ttl))
		switch {
		case errors.Is(err, errHandedOver):
			select { // the others, waiting, take the lock meanwhile
			case <-time.After(r.interval):
			case <-ctx.Done():
			}
		case errors.Is(err, rediskit.ErrNotObtained), ctx.Err() != nil:
		case errors.Is(err, rediskit.ErrLockNotHeld):
			r.log.Warn("lost leadership", "replica", r.name, "err", err)
		case err != nil:
			r.log.Error("leader", "replica", r.name, "err", err)
			select { // Redis trouble: do not spin
			case <-time.After(r.ttl / 3):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// lead runs the job every interval until ctx ends.
func (r *replica) lead(ctx context.Context) error {
	r.log.Info("became leader", "replica", r.name)
	if r.observe != nil {
		r.observe(r.name, true)
		defer r.observe(r.name, false)
	}
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if err := r.job(ctx, r.name); err != nil && ctx.Err() == nil {
			r.log.Error("job", "replica", r.name, "err", err)
		}
		select {
		case <-ctx.Done():
			r.log.Info("stepping down", "replica", r.name, "cause", context.Cause(ctx))
			return nil
		case <-r.handOver:
			r.log.Info("handing over", "replica", r.name)
			return errHandedOver
		case <-t.C:
		}
	}
}

// errHandedOver is what lead returns when told to hand leadership over.
var errHandedOver = errors.New("handed over")

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	replicas := flag.Int("replicas", 3, "replicas to run in this process")
	rotate := flag.Duration("rotate", 3*time.Second, "stop the current leader this often (0: never)")
	flag.Parse()

	client, stop, err := connect(log)
	if err != nil {
		log.Error("redis", "err", err)
		os.Exit(1)
	}
	defer stop()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	var mu sync.Mutex
	current := ""
	job := func(ctx context.Context, name string) error {
		mu.Lock()
		current = name
		mu.Unlock()
		log.Info("job ran", "leader", name)
		return nil
	}
	byName := map[string]*replica{}
	var wg sync.WaitGroup
	for i := 1; i <= *replicas; i++ {
		name := fmt.Sprintf("replica-%d", i)
		locker := rediskit.NewLocker(client)
		defer locker.Close()
		r := &replica{name: name, locker: locker, key: "leader:nightly-report",
			ttl: 3 * time.Second, interval: time.Second, job: job, log: log, handOver: make(chan struct{}, 1)}
		byName[name] = r
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.run(ctx) }()
	}
	if *rotate > 0 {
		t := time.NewTicker(*rotate)
		defer t.Stop()
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-t.C:
				mu.Lock()
				name := current
				mu.Unlock()
				if r, ok := byName[name]; ok {
					log.Info("asking the leader to hand over", "replica", name)
					select {
					case r.handOver <- struct{}{}:
					default:
					}
				}
			}
		}
	}
	<-ctx.Done()
	wg.Wait()
}

// connect returns a client for REDIS_URL, or for an embedded miniredis.
func connect(log *slog.Logger) (redis.UniversalClient, func(), error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, nil, err
		}
		log.Info("redis: connecting", "addr", opts.Addr)
		client := redis.NewClient(opts)
		return client, func() { _ = client.Close() }, nil
	}
	mr, err := miniredis.Run()
	if err != nil {
		return nil, nil, err
	}
	log.Info("redis: embedded miniredis (set REDIS_URL to use a real Redis)", "addr", mr.Addr())
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return client, func() { _ = client.Close(); mr.Close() }, nil
}
