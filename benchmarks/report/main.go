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

// worst returns the largest value of a metric over the runs, and whether it
// was measured.
func (r results) worst(name, metric string) (float64, bool) {
	vs := r[name][metric]
	if len(vs) == 0 {
		return 0, false
	}
	return slices.Max(vs), true
}

// least returns the smallest value of a metric over the runs, and whether
// it was measured.
func (r results) least(name, metric string) (float64, bool) {
	vs := r[name][metric]
	if len(vs) == 0 {
		return 0, false
	}
	return slices.Min(vs), true
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

// isRediskit reports whether lib, a row's library, is rediskit: "rediskit",
// or "rediskit-" and how it is used.
func isRediskit(lib string) bool { return lib == "rediskit" || strings.HasPrefix(lib, "rediskit-") }

// table writes one family's rows: the given metrics, then the primary
// metric's ratio to a floor and to the best peer (the smallest value, or the
// largest when higher is better, among the rows not of rediskit).
//
// floorName names the floor row, and its metric after a colon when it is
// not the primary one ("Floor/ping-ping:p50-µs"). A table without a floor
// has no "÷ floor" column, and one where no row has a peer no "÷ best
// peer" column.
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
	// The best peer of each row: the smallest primary value (the largest
	// when higher is better) among the rows with its suffix, neither of
	// rediskit nor skipped.
	bests := make([]float64, len(rows))
	founds := make([]bool, len(rows))
	anyPeer := false
	for i, n := range rows {
		_, suffix := splitRow(family, n)
		for _, o := range rows {
			olib, osuffix := splitRow(family, o)
			if isRediskit(olib) || osuffix != suffix || slices.Contains(skipPeers, olib) {
				continue
			}
			if v, ok := r.get(o, primary); ok && (!founds[i] || (higherBetter && v > bests[i]) || (!higherBetter && v < bests[i])) {
				bests[i], founds[i] = v, true
			}
		}
		anyPeer = anyPeer || founds[i]
	}
	var ratioCols []string
	if compare && floorName != "" {
		ratioCols = append(ratioCols, "÷ floor")
	}
	if compare && anyPeer {
		ratioCols = append(ratioCols, "÷ best peer")
	}
	header := append(append([]string{family}, metrics...), ratioCols...)
	fmt.Fprintf(w, "| %s |\n|---|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)-1))
	for i, n := range rows {
		cells := []string{strings.TrimPrefix(n, family+"/")}
		for _, m := range metrics {
			if v, ok := r.get(n, m); ok {
				cells = append(cells, num(v))
			} else {
				cells = append(cells, "–")
			}
		}
		v := r.must(n, primary)
		ratio := func(ref float64, ok bool) string {
			if !ok || ref == 0 {
				return "–"
			}
			return num(v/ref) + "×"
		}
		for _, col := range ratioCols {
			if col == "÷ floor" {
				cells = append(cells, ratio(floor, hasFloor))
			} else {
				cells = append(cells, ratio(bests[i], founds[i]))
			}
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
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
	info     bool // no target: shown for information
}

func targets(r results, order []string) []target {
	ping := r.must("Floor/ping", "p50-µs")
	pingNs := r.must("Floor/ping-ping", "ns/op")
	var ts []target
	if gap, ok := r.get("LockHandoff/rediskit", "gap-p50-µs"); ok && ping > 0 {
		floor := r.must("Floor/ping-ping", "p50-µs")
		ts = append(ts, target{"hand-off gap p50 within 3 round trips of the floor (two round trips: release, acquire)",
			fmt.Sprintf("%s µs = floor %s µs + %s round trips of %s µs", num(gap), num(floor), num((gap-floor)/ping), num(ping)),
			gap-floor <= 3*ping, false})
		best := 0.0
		for _, p := range []string{"redislock-exp16ms", "redsync", "seed-100ms"} {
			if v, ok := r.get("LockHandoff/"+p, "gap-p50-µs"); ok && (best == 0 || v < best) {
				best = v
			}
		}
		ts = append(ts, target{"hand-off gap p50 at least 10× lower than the best non-spinning peer",
			fmt.Sprintf("%s× lower (best peer %s µs)", num(best/gap), num(best)), best/gap >= 10, false})
		for _, wl := range []string{"LockHandoff", "LockBackToBack"} {
			if req, ok := r.get(wl+"/rediskit", "req/op"); ok {
				ts = append(ts, target{"at most 3 Redis requests per contended acquisition (" + wl + ")",
					fmt.Sprintf("%s requests (%s server commands, script-internal ones included)", num(req), num(r.must(wl+"/rediskit", "srvcmd/op"))), req <= 3, false})
			}
		}
	}
	for _, m := range uncontendedModes {
		kit, peer := "LockUncontended/rediskit"+m.suffix+"/g=1", "LockUncontended/redislock-exp16ms"+m.suffix+"/g=1"
		ns, ok := r.get(kit, "ns/op")
		if !ok || pingNs == 0 {
			continue
		}
		measured := fmt.Sprintf("%s×", num(ns/pingNs))
		if same, ok := r.get("Floor/ping-ping"+m.suffix, "ns/op"); ok && m.suffix != "" {
			measured += fmt.Sprintf(" (%s× two round trips made the same way)", num(ns/same))
		}
		a, b := r.must(kit, "allocs/op"), r.must(peer, "allocs/op")
		ts = append(ts,
			target{"uncontended acquire+release within 1.2× of two raw round trips, " + m.what, measured, ns/pingNs <= 1.2, m.info},
			target{"no more allocations per acquire+release than bsm/redislock, " + m.what, fmt.Sprintf("%s vs %s", num(a), num(b)), a <= b, m.info})
	}
	ts = append(ts, fairTargets(r)...)
	ts = append(ts, foreignTargets(r, order)...)
	ts = append(ts, foreignFloorTargets(r, order)...)
	if ns, ok := r.get("CacheGetHit/rediskit", "ns/op"); ok {
		raw := r.must("CacheGetHit/raw-goredis-json", "ns/op")
		ts = append(ts, target{"cache Get hit within 1.2× of raw GET + json.Unmarshal", fmt.Sprintf("%s×", num(ns/raw)), ns/raw <= 1.2, false})
	}
	if ns, ok := r.get("CacheGetMany/rediskit/100", "ns/op"); ok {
		raw := r.must("CacheGetMany/raw-goredis-json/100", "ns/op")
		ts = append(ts, target{"GetMany(100) within 2× of one round trip (raw MGET of the 100 keys + decoding)",
			fmt.Sprintf("%s×", num(ns/raw)), ns/raw <= 2, false})
	}
	ts = append(ts, loadTargets(r)...)
	return append(ts, localTargets(r)...)
}

// fairTargets checks the hand-off against rueidislock's, in one process
// (LockHandoff) and across 8 (LockFleet): the gap, the requests and server
// commands per acquisition, and the longest wait; for AcquireWithTimeout,
// whose lock is held for its TTL when it returns, and for WithLock, whose
// watchdog ends fn's context if the lock may be lost, as rueidislock's
// WithContext does.
func fairTargets(r results) []target {
	var ts []target
	for _, s := range []struct {
		wl, what string
		ratio    float64
	}{{"LockHandoff", "in one process", 0.6}, {"LockFleet", "across 8 processes", 0.8}} {
		for _, k := range []struct{ row, api string }{{"rediskit", "AcquireWithTimeout"}, {"rediskit-withlock", "WithLock"}} {
			kit, peer := s.wl+"/"+k.row, s.wl+"/rueidislock"
			gap, ok1 := r.get(kit, "gap-p50-µs")
			peerGap, ok2 := r.get(peer, "gap-p50-µs")
			if !ok1 || !ok2 {
				continue
			}
			req, cmds, peerCmds := r.must(kit, "req/op"), r.must(kit, "srvcmd/op"), r.must(peer, "srvcmd/op")
			wait, peerWait := r.must(kit, "maxwait-ms"), r.must(peer, "maxwait-ms")
			what := s.what + ", " + k.api
			ts = append(ts,
				target{fmt.Sprintf("hand-off %s: gap p50 at most %s× rueidislock's", what, num(s.ratio)),
					fmt.Sprintf("%s× (%s µs vs %s µs)", num(gap/peerGap), num(gap), num(peerGap)), gap <= s.ratio*peerGap, false},
				target{fmt.Sprintf("hand-off %s: at most 3 requests, and fewer server commands than rueidislock, per acquisition", what),
					fmt.Sprintf("%s requests; %s vs %s server commands", num(req), num(cmds), num(peerCmds)), req <= 3 && cmds < peerCmds, false},
				target{fmt.Sprintf("hand-off %s: longest wait no more than rueidislock's", what),
					fmt.Sprintf("%s ms vs %s ms", num(wait), num(peerWait)), wait <= peerWait, false})
		}
	}
	for _, f := range []struct{ row, what string }{
		{"floor-fifo", "the least a fair hand-off costs (floor-fifo, no fault handling)"},
		{"floor-fifo-confirm", "the least a fair hand-off costs a waiter that confirms a lock handed over for a claim bound, as AcquireWithTimeout does (floor-fifo-confirm)"},
	} {
		floor, ok := r.get("LockFleet/"+f.row, "gap-p50-µs")
		peer, peerOK := r.get("LockFleet/rueidislock", "gap-p50-µs")
		if ok && peerOK {
			ts = append(ts, target{"hand-off across 8 processes: " + f.what + " next to rueidislock's gap; for information, no target",
				fmt.Sprintf("%s× (%s µs vs %s µs)", num(floor/peer), num(floor), num(peer)), false, true})
		}
	}
	return ts
}

// localTargets checks the local tier: its hits against a Redis hit and
// go-redis/cache's TinyLFU tier, and how long a write by another program
// goes unseen.
func localTargets(r results) []target {
	var ts []target
	if ns, ok := r.get("LocalHit/rediskit", "ns/op"); ok {
		if redis, ok := r.get("LocalHit/redis-hit", "ns/op"); ok {
			ts = append(ts, target{"local hit at least 20× faster than a Redis hit (rediskit Get without the tier)",
				fmt.Sprintf("%s× (%s ns vs %s ns)", num(redis/ns), num(ns), num(redis)), redis/ns >= 20, false})
		}
		if peer, ok := r.get("LocalHit/go-redis-cache-tinylfu", "ns/op"); ok {
			a, pa := r.must("LocalHit/rediskit", "allocs/op"), r.must("LocalHit/go-redis-cache-tinylfu", "allocs/op")
			ts = append(ts, target{"local hit no slower than go-redis/cache's TinyLFU hit, and no more allocations",
				fmt.Sprintf("%s ns vs %s ns; %s vs %s allocs", num(ns), num(peer), num(a), num(pa)), ns <= peer && a <= pa, false})
		}
	}
	if p99, ok := r.worst("LocalStaleness/rediskit", "p99-µs"); ok {
		p50, _ := r.get("LocalStaleness/rediskit", "p50-µs")
		ts = append(ts, target{"after a write by another program, the local tier stops serving the old value within p99 ≤ 5 ms (tracking on, loopback)",
			fmt.Sprintf("p50 %s µs, p99 %s µs (the worst run's), from the SET's send to the reader's first read of the new value", num(p50), num(p99)), p99 <= 5000, false})
	}
	return ts
}

// swrRoundTrips is how many round trips, made the same way, a value served
// stale may cost: its read is one script that returns the value and its
// TTL, made on a goroutine the caller can abandon, where the floor is one
// GET on the caller's.
const swrRoundTrips = 2

// loadTargets checks GetOrLoad's fleet-wide stampede protection, its stale
// serving, and its answers with Redis down.
func loadTargets(r results) []target {
	var ts []target
	if loads, ok := r.worst("CacheFleetStampede/rediskit", "loads/op"); ok {
		most, _ := r.worst("CacheFleetStampede/rediskit", "loads-max")
		measured := fmt.Sprintf("%s loads per stampede (the most of any run), at most %s in one stampede", num(loads), strconv.FormatFloat(most, 'f', 0, 64))
		for _, peer := range []struct{ row, name string }{{"go-redis-cache", "go-redis/cache"}, {"raw-goredis-json", "raw go-redis"}} {
			if v, ok := r.get("CacheFleetStampede/"+peer.row, "loads/op"); ok {
				measured += fmt.Sprintf("; %s %s", peer.name, num(v))
			}
		}
		ts = append(ts, target{"stampede across 4 processes × 50 goroutines: 1 load per stampede", measured, loads == 1, false})
	}
	const swr = "CacheExpiry/rediskit/stale-while-revalidate"
	if p50, ok := r.get(swr, "p50-µs"); ok {
		floor, hasFloor := r.get("CacheExpiry/raw-goredis-json/hit", "p50-µs")
		fewest, _ := r.least(swr, "loads/op")
		most, _ := r.worst(swr, "loads/op")
		measured := fmt.Sprintf("p50 %s µs", num(p50))
		if hasFloor && floor > 0 {
			measured += fmt.Sprintf(" = %s× one round trip made the same way (CacheExpiry/raw-goredis-json/hit: raw GET + json.Unmarshal after the same pause, p50 %s µs)", num(p50/floor), num(floor))
		}
		for _, other := range []struct{ row, what string }{
			{"CacheExpiry/rediskit/fresh-hit", "a fresh hit through GetOrLoad"},
			{"CacheExpiry/rediskit/stale-while-revalidate/cte", "the stale read on a client that honours contexts"},
			{"CacheExpiry/rediskit/plain-miss", "a plain miss"},
		} {
			if v, ok := r.get(other.row, "p50-µs"); ok {
				measured += fmt.Sprintf("; %s: p50 %s µs", other.what, num(v))
			}
		}
		if v, ok := r.get("CacheGetHit/raw-goredis-json", "p50-µs"); ok {
			measured += fmt.Sprintf("; for information, back-to-back CacheGetHit/raw-goredis-json p50 %s µs", num(v))
		}
		if fewest == most {
			measured += fmt.Sprintf("; %s refreshes per stale read in every run", num(most))
		} else {
			measured += fmt.Sprintf("; %s to %s refreshes per stale read", num(fewest), num(most))
		}
		ts = append(ts, target{fmt.Sprintf("stale value served within one round trip while one refresh runs (p50 within %d× the floor, one refresh per read)", swrRoundTrips),
			measured, hasFloor && p50 <= swrRoundTrips*floor && fewest == 1 && most == 1, false})
	}
	var down []string
	met, measured := true, false
	for _, how := range []string{"refused", "blackhole"} {
		row := "CacheRedisDown/rediskit/" + how
		p99, ok := r.get(row, "p99-µs")
		if !ok {
			continue
		}
		measured = true
		loaded, _ := r.least(row, "loader-%")
		most, _ := r.worst(row, "max-µs")
		met = met && loaded == 100 && p99 < 500_000
		down = append(down, fmt.Sprintf("%s: %s%% got the loader's value (the fewest of any run), p99 %s ms, max %s ms (of any run)", how, num(loaded), ms(p99/1000), ms(most/1000)))
	}
	if measured {
		ts = append(ts, target{"Redis down: every caller with a 500 ms deadline gets the loader's value, p99 under 500 ms",
			strings.Join(down, "; "), met, false})
	}
	return ts
}

// uncontendedModes are the ways LockUncontended sets up the caller's ctx
// and client, by row suffix (see benchmarks/lock_bench_test.go).
var uncontendedModes = []struct {
	suffix, what string
	info         bool
}{
	{"", "default client, context.Background()", false},
	{"/cte-deadline", "on a client that honours contexts (ContextTimeoutEnabled, a deadline per op)", false},
	{"/default-deadline", "default client, a deadline per op (every call on a goroutine the caller can abandon); for information, no target", true},
}

// foreignRow is one ForeignRelease row: who released, and the cap of the
// waiter's backoff, the last part of the row's name ("exp-8ms-512ms").
type foreignRow struct {
	name, releaser, backoff string
	cap                     float64 // ms
}

func foreignRows(order []string) []foreignRow {
	var rows []foreignRow
	for _, n := range order {
		rest, ok := strings.CutPrefix(n, "ForeignRelease/")
		if !ok {
			continue
		}
		releaser, backoff, _ := strings.Cut(rest, "/")
		last := backoff[strings.LastIndex(backoff, "-")+1:]
		cap, err := strconv.ParseFloat(strings.TrimSuffix(last, "ms"), 64)
		if err != nil || !strings.HasSuffix(last, "ms") {
			log.Fatalf("%s: no cap in ms at the end of the name", n)
		}
		rows = append(rows, foreignRow{n, releaser, backoff, cap})
	}
	return rows
}

// foreignBound is what a foreign release's gap is checked against: the
// documented bound, the backoff's cap plus a round trip (from the key being
// free), plus the release's own round trip, since the gap is timed from
// the start of the release, plus how late the Go runtime ran a goroutine
// whose timer fired, measured in the same benchmark (its worst in any run):
// the machine's delay, which the documentation names too. A round trip is
// this run's Floor/ping p99.
func foreignBound(r results, row string, cap float64) (float64, bool) {
	rt, ok := r.get("Floor/ping", "p99-µs")
	late, _ := r.worst(row, "timer-late-max-ms")
	return cap + 2*rt/1000 + late, ok
}

// foreignTargets checks, for each backoff, that every releaser that
// publishes nothing reaches the waiter within the bound.
func foreignTargets(r results, order []string) []target {
	var ts []target
	rows := foreignRows(order)
	var backoffs []string // in the order they ran
	for _, row := range rows {
		if !slices.Contains(backoffs, row.backoff) {
			backoffs = append(backoffs, row.backoff)
		}
	}
	for _, bo := range backoffs {
		met, measured, cap := true, []string{}, 0.0
		bound, hasBound := 0.0, false
		for _, row := range rows {
			if row.backoff != bo || row.releaser == "rediskit" {
				continue
			}
			cap = row.cap
			rowBound, ok := foreignBound(r, row.name, row.cap)
			bound, hasBound = max(bound, rowBound), ok
			p99, _ := r.get(row.name, "gap-p99-ms")
			most, _ := r.worst(row.name, "gap-max-ms")
			met = met && ok && p99 <= rowBound && most <= rowBound
			measured = append(measured, fmt.Sprintf("%s: p99 %s, max %s (bound %s)", row.releaser, ms(p99), ms(most), ms(rowBound)))
		}
		if len(measured) == 0 {
			continue
		}
		b := "not measured (no Floor/ping in this run)"
		if hasBound {
			b = ms(bound) + " ms"
		}
		ts = append(ts, target{
			fmt.Sprintf("a release that publishes nothing reaches a waiting rediskit acquisition within the documented bound, backoff cap (%s ms, %s) + a round trip + the runtime's timer delay", num(cap), bo),
			strings.Join(measured, "; ") + " ms; largest bound " + b, met, false})
	}
	return ts
}

// foreignFloorTargets checks that a release that publishes nothing reaches
// a waiting rediskit acquisition within 3 round trips at the median, with
// the default backoff: 1.5 × the gap of its ForeignFloor row, two round
// trips made the same way (idle connections, the same pauses, the release
// sent by the same client: redis-py's Lock for redis-py, go-redis for the
// releasers written in Go).
func foreignFloorTargets(r results, order []string) []target {
	floors := map[string]float64{}
	for _, n := range order {
		if name, ok := strings.CutPrefix(n, "ForeignFloor/"); ok {
			if v, ok := r.get(n, "gap-p50-ms"); ok {
				floors[name] = v
			}
		}
	}
	met, measured := true, []string{}
	for _, row := range foreignRows(order) {
		if row.releaser == "rediskit" || row.backoff != "exp-8ms-512ms" {
			continue
		}
		floorName := "go-redis"
		if row.releaser == "redis-py" {
			floorName = "redis-py"
		}
		p50, _ := r.get(row.name, "gap-p50-ms")
		floor, ok := floors[floorName]
		if !ok {
			met = false
			measured = append(measured, fmt.Sprintf("%s %s ms (no ForeignFloor/%s in this run)", row.releaser, num(p50), floorName))
			continue
		}
		met = met && p50 <= 1.5*floor
		m := fmt.Sprintf("%s %s ms, %s× ForeignFloor/%s (%s ms)", row.releaser, num(p50), num(p50/floor), floorName, num(floor))
		if pre, ok := r.get(row.name, "presend-p50-µs"); ok {
			m += fmt.Sprintf("; redis-py took %s µs of it before it sent the release", num(pre))
		}
		measured = append(measured, m)
	}
	if len(measured) == 0 {
		return nil
	}
	return []target{{"a release that publishes nothing reaches a waiting rediskit acquisition within 3 round trips (p50), tracking on, default backoff: at most 1.5× the ForeignFloor row whose release is sent by the same client (two round trips made the same way)",
		strings.Join(measured, "; "), met, false}}
}

// ms writes milliseconds to a tenth of one, whatever their size: the
// bound, and gaps compared with it.
func ms(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// foreignTable writes the ForeignRelease rows, each checked against the
// bound.
func foreignTable(w io.Writer, r results, order []string) {
	rows := foreignRows(order)
	if len(rows) == 0 {
		fmt.Fprintln(w, "_ForeignRelease: not measured in this run._")
		fmt.Fprintln(w)
		return
	}
	verdict := func(v, bound float64, ok bool) string {
		switch {
		case !ok:
			return "–"
		case v <= bound:
			return "yes"
		}
		return "**no**"
	}
	fmt.Fprintln(w, "| releaser | waiter's backoff | gap-p50-ms | gap-p99-ms | gap-max-ms | max − cap (ms) | waiter-req/op | timer-late-max-ms | bound-ms | p99 within | max within |\n|---|---|---|---|---|---|---|---|---|---|---|")
	for _, row := range rows {
		p50, _ := r.get(row.name, "gap-p50-ms")
		p99, _ := r.get(row.name, "gap-p99-ms")
		most, _ := r.worst(row.name, "gap-max-ms")
		req, _ := r.get(row.name, "waiter-req/op")
		late, _ := r.worst(row.name, "timer-late-max-ms")
		bound, ok := foreignBound(r, row.name, row.cap)
		b := "–"
		if ok {
			b = ms(bound)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.releaser, row.backoff, ms(p50), ms(p99), ms(most), strconv.FormatFloat(most-row.cap, 'f', 1, 64), num(req), ms(late), b,
			verdict(p99, bound, ok), verdict(most, bound, ok))
	}
	fmt.Fprintln(w)
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

	fmt.Fprintf(w, "Produced by `%s` on %s. Each figure is the median of the runs in that output, but for the foreign-release max, the largest of them.\n\n", *cmd, *machine)
	fmt.Fprintln(w, "### Targets")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | met |\n|---|---|---|")
	for _, t := range targets(r, order) {
		met := "yes"
		switch {
		case t.info:
			met = "– (no target)"
		case !t.met:
			met = "**no**"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.goal, t.measured, met)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "### Floor: raw go-redis round trips")
	fmt.Fprintln(w)
	table(w, r, order, "Floor", []string{"ns/op", "p50-µs", "p99-µs", "allocs/op"}, "", "", false)
	fmt.Fprintln(w, "### Locks, uncontended: acquire + release (÷ floor: two raw round trips; no suffix: default client, context.Background(); cte-deadline: ContextTimeoutEnabled client, context.WithTimeout per op; default-deadline: default client, context.WithTimeout per op)")
	fmt.Fprintln(w)
	table(w, r, order, "LockUncontended", []string{"ns/op", "p50-µs", "p99-µs", "allocs/op", "req/op", "srvcmd/op"}, "ns/op", "Floor/ping-ping", false)
	fmt.Fprintln(w, "### Locks, hand-off: while a key is held, 8 goroutines each ask for it once and hold it 1 ms (÷ floor: two raw round trips; best peer excludes the spinning tight loop)")
	fmt.Fprintln(w)
	table(w, r, order, "LockHandoff", []string{"gap-p50-µs", "gap-p99-µs", "wait-p50-µs", "wait-p99-µs", "maxwait-ms", "req/op", "srvcmd/op"}, "gap-p50-µs", "Floor/ping-ping:p50-µs", false, "redislock-tightloop")
	fmt.Fprintln(w, "### Locks, back to back: 8 goroutines take one key in a loop, 1 ms critical section, asking again as soon as they release (barging and fairness)")
	fmt.Fprintln(w)
	table(w, r, order, "LockBackToBack", []string{"acq/s", "gap-p50-µs", "gap-p99-µs", "maxwait-ms", "barge-%", "req/op", "srvcmd/op"}, "maxwait-ms", "", false, "redislock-tightloop")
	fmt.Fprintln(w, "### Locks across processes: 8 OS processes, one goroutine each, take one key in a loop, hold it 1 ms, release and ask again at once (gap: from a release's start to the next holder having the lock, whoever; barge-%: acquisitions by the process that held the lock just before; req/op and srvcmd/op: requests and server commands per acquisition, all processes together; rueidislock's waits are cut and made again every 200 ms: without that, one of its waiters waited for good with the key free; floor-fifo: not a library, the least a fair hand-off between processes costs, left out of the best peer; floor-fifo-confirm: the same, with the one round trip a waiter makes to confirm a lock handed over for a claim bound, as AcquireWithTimeout does; /cte: on clients that honour contexts)")
	fmt.Fprintln(w)
	table(w, r, order, "LockFleet", []string{"gap-p50-µs", "gap-p99-µs", "maxwait-ms", "barge-%", "req/op", "srvcmd/op"}, "gap-p50-µs", "Floor/ping-ping:p50-µs", false, "floor-fifo", "floor-fifo-confirm")
	fmt.Fprintln(w, "### Locks, foreign release: a rediskit acquisition waits while another program holds the key, which releases it at a random phase of the waiter's backoff (gap: from the release's start to the waiter holding the lock; p50 and p99 are medians of the runs, max is the largest over all runs; bound: the backoff's cap + 2 × this run's Floor/ping p99, the documented cap + a round trip from the key being free, plus the release's own round trip; only rediskit's release publishes a wake-up)")
	fmt.Fprintln(w)
	foreignTable(w, r, order)
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
	fmt.Fprintln(w, "### Cache stampede across processes: 4 OS processes × 50 goroutines miss one key at once, 10 ms loader (an op is one stampede; loads summed over the processes, loads-max the most in one stampede; latencies of all 200 callers; best peer excludes raw go-redis)")
	fmt.Fprintln(w)
	table(w, r, order, "CacheFleetStampede", []string{"loads/op", "loads-max", "p50-µs", "p99-µs"}, "p99-µs", "", false, "raw-goredis-json")
	fmt.Fprintln(w, "### Cache at expiry: one caller's GetOrLoad, 10 ms loader, each op after the same pause (stale-while-revalidate: WithStaleWhileRevalidate(10s), a value 1 s past its TTL; plain-miss: no window, a key whose TTL has just run out; fresh-hit: the window, a value 1 s before its TTL; /cte: on a client that honours contexts, where GetOrLoad reads on the caller's goroutine, not on one it can abandon; ÷ floor: raw GET + json.Unmarshal made the same way)")
	fmt.Fprintln(w)
	table(w, r, order, "CacheExpiry", []string{"p50-µs", "p99-µs", "loads/op"}, "p50-µs", "CacheExpiry/raw-goredis-json/hit", false, "raw-goredis-json")
	fmt.Fprintln(w, "### Local tier, hit: one present key (a 250-byte profile) read from each library's in-process tier once it holds it (rediskit: WithLocalCache; go-redis-cache-tinylfu: go-redis/cache with NewTinyLFU; go-redis-csc: go-redis v9.23's experimental client-side cache, RESP3; rueidis-docache: rueidis DoCache + json.Unmarshal; ÷ floor: redis-hit, a rediskit Get without the tier, one round trip)")
	fmt.Fprintln(w)
	table(w, r, order, "LocalHit", []string{"ns/op", "allocs/op", "B/op", "req/op", "srvcmd/op"}, "ns/op", "LocalHit/redis-hit", false, "redis-hit")
	fmt.Fprintln(w, "### Local tier, staleness: a plain client overwrites the key; the time from its SET's send to the reader (reading every ~60 µs) getting the new value (go-redis/cache's TinyLFU tier is left out: it never hears of other programs' writes, and serves the old value until its local TTL)")
	fmt.Fprintln(w)
	table(w, r, order, "LocalStaleness", []string{"p50-µs", "p99-µs"}, "p99-µs", "", false)
	fmt.Fprintln(w, "### Cache with Redis down: GetOrLoad on a default go-redis client, each call on its own key with a 500 ms deadline, loader instant, 16 callers at once (refused: nothing listens; blackhole: a listener that accepts and never answers; loader-%: calls that got the loader's value; late-%: calls that returned after their deadline)")
	fmt.Fprintln(w)
	table(w, r, order, "CacheRedisDown", []string{"loader-%", "late-%", "p50-µs", "p99-µs", "max-µs"}, "p99-µs", "", false)
}
