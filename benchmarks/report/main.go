// Command report turns the output of the benchmarks (go test -bench, any
// -count) into the results part of BENCHMARKS.md: the median of every
// metric, tables with ratios to the floor and to the best peer, and the
// targets checked against the figures.
//
//	go run ./report -in bench.txt -machine "..." -cmd "benchmarks/run.sh"
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
)

// results maps a benchmark name (without the -GOMAXPROCS suffix) to its
// metrics, each with every run's value.
type results map[string]map[string][]float64

func parse(r io.Reader) (results, []string) {
	res := results{}
	var order []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		if res[name] == nil {
			res[name] = map[string][]float64{}
			order = append(order, name)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				res[name][f[i+1]] = append(res[name][f[i+1]], v)
			}
		}
	}
	return res, order
}

// get returns the median of a metric, and whether it was measured.
func (r results) get(name, metric string) (float64, bool) {
	vs := r[name][metric]
	if len(vs) == 0 {
		return 0, false
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[len(s)/2], true
}

func (r results) must(name, metric string) float64 {
	v, _ := r.get(name, metric)
	return v
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// table writes one family's rows: the given metrics, then the primary
// metric's ratio to a floor and to the best peer (the smallest value, or the
// largest when higher is better, among the rows not named "rediskit").
//
// floorName names the floor row, and its metric after a colon when it is
// not the primary one ("Floor/ping-ping:p50-µs").
func table(w io.Writer, r results, order []string, family string, metrics []string, primary, floorName string, higherBetter bool, skipPeers ...string) {
	var rows []string
	for _, n := range order {
		if strings.HasPrefix(n, family+"/") {
			rows = append(rows, n)
		}
	}
	if len(rows) == 0 {
		fmt.Fprintf(w, "_%s: not measured in this run._\n\n", family)
		return
	}
	floorMetric := primary
	if i := strings.Index(floorName, ":"); i >= 0 {
		floorName, floorMetric = floorName[:i], floorName[i+1:]
	}
	floor, hasFloor := r.get(floorName, floorMetric)
	compare := primary != "" // the Floor table has nothing to compare with
	if compare {
		fmt.Fprintf(w, "| %s | %s | ÷ floor | ÷ best peer |\n|---|%s---|---|\n", family, strings.Join(metrics, " | "), strings.Repeat("---|", len(metrics)))
	} else {
		fmt.Fprintf(w, "| %s | %s |\n|---|%s\n", family, strings.Join(metrics, " | "), strings.Repeat("---|", len(metrics)))
	}
	for _, n := range rows {
		_, suffix := splitRow(family, n)
		best, found := 0.0, false
		for _, o := range rows {
			olib, osuffix := splitRow(family, o)
			if olib == "rediskit" || osuffix != suffix || slices.Contains(skipPeers, olib) {
				continue
			}
			if v, ok := r.get(o, primary); ok && (!found || (higherBetter && v > best) || (!higherBetter && v < best)) {
				best, found = v, true
			}
		}
		cells := make([]string, len(metrics))
		for i, m := range metrics {
			if v, ok := r.get(n, m); ok {
				cells[i] = num(v)
			} else {
				cells[i] = "–"
			}
		}
		if !compare {
			fmt.Fprintf(w, "| %s | %s |\n", strings.TrimPrefix(n, family+"/"), strings.Join(cells, " | "))
			continue
		}
		v := r.must(n, primary)
		ratio := func(ref float64, ok bool) string {
			if !ok || ref == 0 {
				return "–"
			}
			return num(v/ref) + "×"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", strings.TrimPrefix(n, family+"/"), strings.Join(cells, " | "), ratio(floor, hasFloor), ratio(best, found))
	}
	fmt.Fprintln(w)
}

// splitRow splits "Family/lib/suffix" into lib and "/suffix".
func splitRow(family, name string) (lib, suffix string) {
	rest := strings.TrimPrefix(name, family+"/")
	if i := strings.Index(rest, "/"); i >= 0 {
		return rest[:i], rest[i:]
	}
	return rest, ""
}

// target is one goal from the benchmarks issue, checked on this run.
type target struct {
	goal     string
	measured string
	met      bool
}

func targets(r results) []target {
	ping := r.must("Floor/ping", "p50-µs")
	pingNs := r.must("Floor/ping-ping", "ns/op")
	var ts []target
	if gap, ok := r.get("LockHandoff/rediskit", "gap-p50-µs"); ok && ping > 0 {
		floor := r.must("Floor/ping-ping", "p50-µs")
		ts = append(ts, target{"hand-off gap p50 within 3 round trips of the floor (two round trips: release, acquire)",
			fmt.Sprintf("%s µs = floor %s µs + %s round trips of %s µs", num(gap), num(floor), num((gap-floor)/ping), num(ping)),
			gap-floor <= 3*ping})
		best := 0.0
		for _, p := range []string{"redislock-exp16ms", "redsync", "seed-100ms"} {
			if v, ok := r.get("LockHandoff/"+p, "gap-p50-µs"); ok && (best == 0 || v < best) {
				best = v
			}
		}
		ts = append(ts, target{"hand-off gap p50 at least 10× lower than the best non-spinning peer",
			fmt.Sprintf("%s× lower (best peer %s µs)", num(best/gap), num(best)), best/gap >= 10})
		for _, wl := range []string{"LockHandoff", "LockBackToBack"} {
			if req, ok := r.get(wl+"/rediskit", "req/op"); ok {
				ts = append(ts, target{"at most 3 Redis requests per contended acquisition (" + wl + ")",
					fmt.Sprintf("%s requests (%s server commands, script-internal ones included)", num(req), num(r.must(wl+"/rediskit", "srvcmd/op"))), req <= 3})
			}
		}
	}
	if ns, ok := r.get("LockUncontended/rediskit/g=1", "ns/op"); ok && pingNs > 0 {
		ts = append(ts, target{"uncontended acquire+release within 1.2× of two raw round trips",
			fmt.Sprintf("%s×", num(ns/pingNs)), ns/pingNs <= 1.2})
		a, b := r.must("LockUncontended/rediskit/g=1", "allocs/op"), r.must("LockUncontended/redislock-exp16ms/g=1", "allocs/op")
		ts = append(ts, target{"no more allocations per acquire+release than bsm/redislock",
			fmt.Sprintf("%s vs %s", num(a), num(b)), a <= b})
	}
	if ns, ok := r.get("CacheGetHit/rediskit", "ns/op"); ok {
		raw := r.must("CacheGetHit/raw-goredis-json", "ns/op")
		ts = append(ts, target{"cache Get hit within 1.2× of raw GET + json.Unmarshal", fmt.Sprintf("%s×", num(ns/raw)), ns/raw <= 1.2})
	}
	if ns, ok := r.get("CacheGetMany/rediskit/100", "ns/op"); ok {
		raw := r.must("CacheGetMany/raw-goredis-json/100", "ns/op")
		ts = append(ts, target{"GetMany(100) within 2× of one round trip (raw MGET of the 100 keys + decoding)",
			fmt.Sprintf("%s×", num(ns/raw)), ns/raw <= 2})
	}
	return ts
}

func main() {
	in := flag.String("in", "", "benchmark output (default stdin)")
	machine := flag.String("machine", "", "what the figures were measured on")
	cmd := flag.String("cmd", "benchmarks/run.sh", "the command that produced them")
	flag.Parse()
	var src io.Reader = os.Stdin
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		src = f
	}
	r, order := parse(src)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()

	fmt.Fprintf(w, "Produced by `%s` on %s. Each figure is the median of the runs in that output.\n\n", *cmd, *machine)
	fmt.Fprintln(w, "### Targets")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | met |\n|---|---|---|")
	for _, t := range targets(r) {
		met := "yes"
		if !t.met {
			met = "**no**"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.goal, t.measured, met)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Floor: raw go-redis round trips")
	fmt.Fprintln(w)
	table(w, r, order, "Floor", []string{"ns/op", "p50-µs", "p99-µs", "allocs/op"}, "", "", false)
	fmt.Fprintln(w, "### Locks, uncontended: acquire + release (÷ floor: two raw round trips)")
	fmt.Fprintln(w)
	table(w, r, order, "LockUncontended", []string{"ns/op", "p50-µs", "p99-µs", "allocs/op", "req/op", "srvcmd/op"}, "ns/op", "Floor/ping-ping", false)
	fmt.Fprintln(w, "### Locks, hand-off: while a key is held, 8 goroutines each ask for it once and hold it 1 ms (÷ floor: two raw round trips; best peer excludes the spinning tight loop)")
	fmt.Fprintln(w)
	table(w, r, order, "LockHandoff", []string{"gap-p50-µs", "gap-p99-µs", "wait-p50-µs", "wait-p99-µs", "maxwait-ms", "req/op", "srvcmd/op"}, "gap-p50-µs", "Floor/ping-ping:p50-µs", false, "redislock-tightloop")
	fmt.Fprintln(w, "### Locks, back to back: 8 goroutines take one key in a loop, 1 ms critical section, asking again as soon as they release (barging and fairness)")
	fmt.Fprintln(w)
	table(w, r, order, "LockBackToBack", []string{"acq/s", "gap-p50-µs", "gap-p99-µs", "maxwait-ms", "barge-%", "req/op", "srvcmd/op"}, "maxwait-ms", "", false, "redislock-tightloop")
	fmt.Fprintln(w, "### Redlock over 3 independent masters: acquire + release")
	fmt.Fprintln(w)
	table(w, r, order, "Redlock", []string{"ns/op", "p50-µs", "p99-µs", "allocs/op", "req/op", "srvcmd/op"}, "ns/op", "Floor/ping-ping", false)
	fmt.Fprintln(w, "### Cache Get, hit (÷ floor: raw GET + json.Unmarshal)")
	fmt.Fprintln(w)
	table(w, r, order, "CacheGetHit", []string{"ns/op", "p50-µs", "p99-µs", "allocs/op", "req/op"}, "ns/op", "CacheGetHit/raw-goredis-json", false, "raw-goredis-json")
	fmt.Fprintln(w, "### Cache Set (÷ floor: raw json.Marshal + SET)")
	fmt.Fprintln(w)
	table(w, r, order, "CacheSet", []string{"ns/op", "p50-µs", "p99-µs", "allocs/op"}, "ns/op", "CacheSet/raw-goredis-json", false, "raw-goredis-json")
	fmt.Fprintln(w, "### Cache GetMany of 100 keys (÷ floor: one raw MGET + decoding)")
	fmt.Fprintln(w)
	table(w, r, order, "CacheGetMany", []string{"ns/op", "p50-µs", "p99-µs", "allocs/op", "req/op", "srvcmd/op"}, "ns/op", "CacheGetMany/raw-goredis-json/100", false, "raw-goredis-json")
	fmt.Fprintln(w, "### Cache stampede: 200 goroutines miss one key, 10 ms loader (an op is one stampede)")
	fmt.Fprintln(w)
	table(w, r, order, "CacheStampede", []string{"loads/op", "p50-µs", "p99-µs"}, "p99-µs", "", false, "raw-goredis-json")
}
