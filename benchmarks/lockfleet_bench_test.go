package benchmarks

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The contenders of BenchmarkLockFleet: OS processes with one goroutine
// each, all taking one key in turn.
const lockFleetProcs = 8

// envLockFleetHelper names the lock library a helper process of
// BenchmarkLockFleet drives; the helper test skips without it.
const envLockFleetHelper = "REDISKIT_LOCK_FLEET_HELPER"

var lockFleetLibs = []lockLib{libRediskit, libRediskitWithLock, libRueidislock, libRedsync, libRedislockBackoff, libFloor, libFloorConfirm,
	{libRediskit.name + cteSuffix, libRediskit.make}, {libRediskitWithLock.name + cteSuffix, libRediskitWithLock.make}}

// cteSuffix marks a LockFleet row whose processes' clients honour contexts
// (ContextTimeoutEnabled): rediskit then makes every Redis call on the
// caller's goroutine, none on one it could abandon.
const cteSuffix = "/cte"

// BenchmarkLockFleet has 8 OS processes (this test binary run again as
// TestLockFleetHelper), one goroutine each, take one key in a loop: ask
// (waiting up to a minute), hold 1 ms, release, ask again at once. An op
// is one acquisition; b.N is rounded up to whole rounds of one acquisition
// per process. Every process records, on the machine's shared wall clock,
// when it asked, got the lock and started its release; the parent sorts
// the acquisitions and reports:
//
//   - gap: from a holder starting its release to the next holder having
//     the lock, whoever that is (the floor is two round trips: the release,
//     then the next acquire);
//   - maxwait-ms: the longest any process waited for one acquisition;
//   - barge-%: acquisitions by the process that held the lock just before;
//   - req/op: requests per acquisition, every process's together: the
//     commands each process sent (counted by a hook on its client; for
//     rueidislock, on the rueidis client it builds), and the pub/sub
//     (un)subscriptions the server counted;
//   - srvcmd/op: server commands per acquisition, every process's
//     together, scripts' inner commands and pub/sub or tracking commands
//     included.
func BenchmarkLockFleet(b *testing.B) {
	cs := newClients(b, envRedis)
	if _, err := os.Stat(os.Args[0]); err != nil {
		b.Skipf("cannot run the test binary again: %v", err)
	}
	for _, lib := range lockFleetLibs {
		var f *fleet // started at the row's first call, kept for its later ones
		b.Run(lib.name, func(b *testing.B) {
			if f == nil {
				var err error
				if f, err = startHelpers("TestLockFleetHelper", envLockFleetHelper+"="+lib.name, lockFleetProcs); err != nil {
					b.Fatal(err)
				}
			}
			rounds := (b.N + lockFleetProcs - 1) / lockFleetProcs
			key := uniqueKey("fleet-lock")
			before := snapshot(b, cs)
			b.ResetTimer()
			turns, reqs, err := f.contend(key, rounds)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			// The processes' requests, and what the server counted; the
			// parent's own requests are only the snapshots' INFO.
			after := snapshot(b, cs)
			reqs += after.pubsubCmds - before.pubsubCmds
			b.ReportMetric(float64(reqs)/float64(len(turns)), "req/op")
			b.ReportMetric(float64(after.serverCmds-before.serverCmds-before.nodes)/float64(len(turns)), "srvcmd/op")
			slices.SortFunc(turns, func(x, y fleetTurn) int { return x.acquired.Compare(y.acquired) })
			var gaps, waits latencies
			barged := 0
			for i, t := range turns {
				waits = append(waits, t.acquired.Sub(t.asked))
				if i == 0 {
					continue
				}
				gaps = append(gaps, t.acquired.Sub(turns[i-1].released))
				if t.proc == turns[i-1].proc {
					barged++
				}
			}
			gaps.report(b, "gap-")
			b.ReportMetric(float64(waits.max())/float64(time.Millisecond), "maxwait-ms")
			b.ReportMetric(100*float64(barged)/float64(len(turns)-1), "barge-%")
		})
		if f != nil {
			f.stop()
		}
	}
}

// fleetTurn is one acquisition by one process.
type fleetTurn struct {
	proc                      int
	asked, acquired, released time.Time
}

// contend has every process arm for rounds acquisitions of key, then lets
// them all go at once, and returns every acquisition and the requests the
// processes sent meanwhile.
func (f *fleet) contend(key string, rounds int) (turns []fleetTurn, reqs int64, err error) {
	for _, p := range f.procs {
		if err := p.send(fmt.Sprintf("arm %s %d", key, rounds)); err != nil {
			return nil, 0, err
		}
	}
	for _, p := range f.procs {
		if _, err := p.expect("armed"); err != nil {
			return nil, 0, err
		}
	}
	for _, p := range f.procs {
		if err := p.send("go"); err != nil {
			return nil, 0, err
		}
	}
	for i, p := range f.procs {
		done, err := p.expect("done")
		if err != nil {
			return nil, 0, err
		}
		fields := strings.Fields(done)
		if len(fields) != 1+3*rounds {
			return nil, 0, fmt.Errorf("lock fleet helper: %d fields, want %d", len(fields), 1+3*rounds)
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("lock fleet helper: %w", err)
		}
		reqs += n
		fields = fields[1:]
		ts := make([]time.Time, len(fields))
		for j, s := range fields {
			ns, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, 0, fmt.Errorf("lock fleet helper: %w", err)
			}
			ts[j] = time.Unix(0, ns)
		}
		for j := 0; j < len(ts); j += 3 {
			turns = append(turns, fleetTurn{i, ts[j], ts[j+1], ts[j+2]})
		}
	}
	return turns, reqs, nil
}

// TestLockFleetHelper is a helper process of BenchmarkLockFleet, and skips
// otherwise. "arm KEY N" readies N acquisitions of KEY, answered "armed";
// "go" makes them, one after another (hold 1 ms, release, ask again), and
// answers "done", the requests the process sent meanwhile, and, for each
// acquisition, the wall-clock nanoseconds at which it asked, got the lock
// and started its release. It returns at the end of
// its input.
func TestLockFleetHelper(t *testing.T) {
	name := os.Getenv(envLockFleetHelper)
	if name == "" {
		t.Skip("the helper process of BenchmarkLockFleet")
	}
	runHelper(t, lockFleetHelper(name, os.Getenv(envRedis), os.Stdin, os.Stdout))
}

func lockFleetHelper(name, addr string, stdin io.Reader, stdout io.Writer) error {
	ctx := context.Background()
	c := &counted{Client: redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: strings.HasSuffix(name, cteSuffix)})}
	c.AddHook(c)
	defer c.Close()
	var lib *lockLib
	for _, l := range lockFleetLibs {
		if l.name == name {
			lib = &l
		}
	}
	if lib == nil {
		return fmt.Errorf("no lock library %q", name)
	}
	l := lib.make([]*redis.Client{c.Client})
	defer l.close()
	if release, err := l.acquire(ctx, uniqueKey("warm"), time.Second, 0); err != nil {
		return err
	} else if err := release(ctx); err != nil {
		return err
	}
	say := func(line string) error {
		_, err := io.WriteString(stdout, fleetPrefix+line+"\n")
		return err
	}
	if err := say("ready"); err != nil {
		return err
	}
	in := bufio.NewScanner(stdin)
	for in.Scan() {
		var key string
		var rounds int
		if _, err := fmt.Sscanf(in.Text(), "arm %s %d", &key, &rounds); err != nil {
			return fmt.Errorf("got %q, want arm KEY N", in.Text())
		}
		if err := say("armed"); err != nil {
			return err
		}
		if !in.Scan() || in.Text() != "go" {
			return fmt.Errorf("got %q, want go", in.Text())
		}
		var out strings.Builder
		reqs := c.requests.Load() + rueidisRequests.Load()
		for r := 0; r < rounds; r++ {
			asked := time.Now()
			var acquired, released time.Time
			err := turn(ctx, l, key, 5*time.Second, time.Minute, func() {
				acquired = time.Now()
				time.Sleep(time.Millisecond)
				released = time.Now()
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, " %d %d %d", asked.UnixNano(), acquired.UnixNano(), released.UnixNano())
		}
		reqs = c.requests.Load() + rueidisRequests.Load() - reqs
		if err := say(fmt.Sprintf("done %d%s", reqs, out.String())); err != nil {
			return err
		}
	}
	return in.Err()
}
