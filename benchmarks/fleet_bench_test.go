package benchmarks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A stampede across a fleet: fleetProcs OS processes, each with
// fleetGoroutines goroutines, miss one key at the same instant.
const (
	fleetProcs      = 4
	fleetGoroutines = 50
	fleetLoadTime   = 10 * time.Millisecond
)

// envFleetHelper names the cache library a helper process of
// BenchmarkCacheFleetStampede drives; the helper test skips without it.
const envFleetHelper = "REDISKIT_FLEET_HELPER"

// fleetPrefix starts every line of the helpers' protocol on their stdout,
// where the testing package writes too.
const fleetPrefix = "fleet: "

// BenchmarkCacheFleetStampede has 4 OS processes × 50 goroutines call
// GetOrLoad on one missing key at the same instant, with a loader that
// takes 10 ms; an op is one such stampede, on a fresh key. The processes
// are this test binary run again as TestCacheFleetHelper, each with its own
// client (a pool of 64, as newClients) and its own cache, started once per
// row. For each stampede the parent has every process arm its 50
// goroutines on the key, waits until all four have, and then tells them
// all to go; each process times its callers from that moment to their
// return and reports its loader calls and the latencies back.
//
// loads/op is the loader calls per stampede, summed over the processes;
// loads-max the most in one stampede; p50-µs and p99-µs are the callers'
// latencies, all processes together. rediskit's default (a load lease per
// key) should load once per fleet; go-redis/cache dedups within a process
// only, so about once per process; raw go-redis (GET, load, SET) not at
// all.
func BenchmarkCacheFleetStampede(b *testing.B) {
	cs := newClients(b, envRedis)
	if _, err := os.Stat(os.Args[0]); err != nil {
		b.Skipf("cannot run the test binary again: %v", err)
	}
	parent := b
	for _, lib := range cacheLibs(cs[0].Client) {
		var f *fleet // started at the row's first call, kept for its later ones
		b.Run(lib.name, func(b *testing.B) {
			if f == nil {
				var err error
				if f, err = startFleet(lib.name); err != nil {
					b.Fatal(err)
				}
				parent.Cleanup(f.stop)   // after every call of this row
				for i := 0; i < 2; i++ { // connections, subscriptions
					if _, _, err := f.stampede(uniqueKey("fleet-warmup")); err != nil {
						b.Fatal(err)
					}
				}
			}
			var loads, most int
			lat := make(latencies, 0, b.N*fleetProcs*fleetGoroutines)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				n, l, err := f.stampede(uniqueKey("fleet"))
				if err != nil {
					b.Fatal(err)
				}
				loads += n
				most = max(most, n)
				lat = append(lat, l...)
			}
			b.StopTimer()
			b.ReportMetric(float64(loads)/float64(b.N), "loads/op")
			b.ReportMetric(float64(most), "loads-max")
			lat.report(b, "")
		})
	}
}

// fleet is the helper processes of one row.
type fleet struct {
	procs []*fleetProc
}

type fleetProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	seen []string // lines that were not the protocol's, for errors
}

// startFleet runs the test binary again fleetProcs times as helpers of
// lib, and waits until each is connected and ready.
func startFleet(lib string) (*fleet, error) {
	return startHelpers("TestCacheFleetHelper", envFleetHelper+"="+lib, fleetProcs)
}

// startHelpers runs the test binary again n times as the helper test
// named, with env added to their environment, and waits until each says
// it is ready.
func startHelpers(test, env string, n int) (*fleet, error) {
	f := &fleet{}
	for i := 0; i < n; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
		cmd.Env = append(os.Environ(), env)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			f.stop()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			f.stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			f.stop()
			return nil, err
		}
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		f.procs = append(f.procs, &fleetProc{cmd: cmd, in: in, out: sc})
	}
	for _, p := range f.procs {
		if _, err := p.expect("ready"); err != nil {
			f.stop()
			return nil, err
		}
	}
	return f, nil
}

// stampede runs one stampede on key: every process arms its goroutines,
// then all are told to go at once. It returns the loader calls, summed over
// the processes, and every caller's latency.
func (f *fleet) stampede(key string) (loads int, lat latencies, err error) {
	for _, p := range f.procs {
		if err := p.send("arm " + key); err != nil {
			return 0, nil, err
		}
	}
	for _, p := range f.procs {
		if _, err := p.expect("armed"); err != nil {
			return 0, nil, err
		}
	}
	for _, p := range f.procs {
		if err := p.send("go"); err != nil {
			return 0, nil, err
		}
	}
	for _, p := range f.procs {
		done, err := p.expect("done")
		if err != nil {
			return 0, nil, err
		}
		fields := strings.Fields(done)
		if len(fields) != 1+fleetGoroutines {
			return 0, nil, fmt.Errorf("fleet helper: %d fields in %q", len(fields), done)
		}
		n, err := strconv.Atoi(fields[0])
		if err != nil {
			return 0, nil, fmt.Errorf("fleet helper: %q: %w", done, err)
		}
		loads += n
		for _, s := range fields[1:] {
			ns, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, nil, fmt.Errorf("fleet helper: %q: %w", done, err)
			}
			lat = append(lat, time.Duration(ns))
		}
	}
	return loads, lat, nil
}

// stop ends the helpers: their input ends, and they return.
func (f *fleet) stop() {
	for _, p := range f.procs {
		_ = p.in.Close()
	}
	for _, p := range f.procs {
		t := time.AfterFunc(10*time.Second, func() { _ = p.cmd.Process.Kill() })
		_ = p.cmd.Wait()
		t.Stop()
	}
	f.procs = nil
}

func (p *fleetProc) send(line string) error {
	_, err := io.WriteString(p.in, line+"\n")
	return err
}

// expect reads the helper's next protocol line, which must be word and
// what follows it; the helper's errors become the error.
func (p *fleetProc) expect(word string) (string, error) {
	for p.out.Scan() {
		line, ok := strings.CutPrefix(p.out.Text(), fleetPrefix)
		if !ok {
			p.seen = append(p.seen, p.out.Text())
			continue
		}
		got, rest, _ := strings.Cut(line, " ")
		switch got {
		case word:
			return rest, nil
		case "error":
			return "", errors.New("fleet helper: " + rest)
		}
		return "", fmt.Errorf("fleet helper: %q, want %s", line, word)
	}
	return "", fmt.Errorf("fleet helper ended (%v) waiting for %s; its output:\n%s", p.out.Err(), word, strings.Join(p.seen, "\n"))
}

// TestCacheFleetHelper is a helper process of BenchmarkCacheFleetStampede,
// and skips otherwise. It answers the lines of its stdin on its stdout:
// "arm KEY" starts fleetGoroutines goroutines that will call GetOrLoad on
// KEY, answered "armed"; "go" lets them run, answered, when all have
// returned, "done LOADS NS NS ...": its loader calls and each caller's
// latency in nanoseconds. It returns at the end of its input.
func TestCacheFleetHelper(t *testing.T) {
	name := os.Getenv(envFleetHelper)
	if name == "" {
		t.Skip("the helper process of BenchmarkCacheFleetStampede")
	}
	runHelper(t, fleetHelper(name, os.Getenv(envRedis), os.Stdin, os.Stdout))
}

// runHelper ends a helper process: its error, if any, goes to the parent
// on the protocol's error line, and fails the helper.
func runHelper(t *testing.T, err error) {
	if err != nil {
		fmt.Printf("%serror %v\n", fleetPrefix, strings.ReplaceAll(err.Error(), "\n", " "))
		t.Fatal(err)
	}
}

func fleetHelper(name, addr string, stdin io.Reader, stdout io.Writer) error {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	defer c.Close()
	var lib *cacheLib
	for _, l := range cacheLibs(c) {
		if l.name == name {
			lib = &l
		}
	}
	if lib == nil {
		return fmt.Errorf("no cache library %q", name)
	}
	if lib.close != nil {
		defer lib.close()
	}
	// Open the connections the goroutines will use.
	var wg sync.WaitGroup
	var pingErr atomic.Value
	for g := 0; g < fleetGoroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Ping(ctx).Err(); err != nil {
				pingErr.Store(err)
			}
		}()
	}
	wg.Wait()
	if err, _ := pingErr.Load().(error); err != nil {
		return err
	}
	say := func(line string) error {
		_, err := io.WriteString(stdout, fleetPrefix+line+"\n")
		return err
	}
	if err := say("ready"); err != nil {
		return err
	}
	want := sampleProfile(3)
	in := bufio.NewScanner(stdin)
	for in.Scan() {
		key, ok := strings.CutPrefix(in.Text(), "arm ")
		if !ok {
			return fmt.Errorf("got %q, want arm KEY", in.Text())
		}
		var loads atomic.Int64
		load := func(ctx context.Context) (profile, error) {
			loads.Add(1)
			time.Sleep(fleetLoadTime)
			return want, nil
		}
		start := make(chan struct{})
		var began time.Time // written before start is closed
		lat := make([]time.Duration, fleetGoroutines)
		errs := make([]error, fleetGoroutines)
		var wg sync.WaitGroup
		for g := 0; g < fleetGoroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				p, err := lib.getOrLoad(ctx, key, load)
				lat[g] = time.Since(began)
				if err == nil && p.ID != want.ID {
					err = fmt.Errorf("got profile %d, want %d", p.ID, want.ID)
				}
				errs[g] = err
			}()
		}
		if err := say("armed"); err != nil {
			return err
		}
		if !in.Scan() || in.Text() != "go" {
			close(start) // let the goroutines end
			wg.Wait()
			return fmt.Errorf("got %q (%v), want go", in.Text(), in.Err())
		}
		began = time.Now()
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("key %s: %w", key, err)
		}
		fields := []string{strconv.FormatInt(loads.Load(), 10)}
		for _, d := range lat {
			fields = append(fields, strconv.FormatInt(int64(d), 10))
		}
		if err := say("done " + strings.Join(fields, " ")); err != nil {
			return err
		}
	}
	return in.Err()
}
