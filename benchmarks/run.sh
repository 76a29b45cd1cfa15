#!/usr/bin/env bash
# run.sh measures rediskit and its peers on real Redis and rewrites
# ../BENCHMARKS.md: the text of BENCHMARKS.head.md, then the results the
# report command computes from this run. With REDISKIT_REDIS_ADDR and
# REDISKIT_REDLOCK_ADDRS unset, it starts the servers with
# ../scripts/redis-up.sh and stops them after.
#
# BENCH_COUNT (default 5) is how many times each benchmark runs; the tables
# show medians. BENCH_OUTPUT=file rewrites BENCHMARKS.md from the output of
# an earlier run instead of running again.
set -euo pipefail
cd "$(dirname "$0")"
count=${BENCH_COUNT:-5}
if [ -n "${BENCH_OUTPUT:-}" ]; then
	out=$BENCH_OUTPUT
else
	if [ -z "${REDISKIT_REDIS_ADDR:-}" ]; then
		export REDISKIT_REDIS_DIR=$(mktemp -d /tmp/rediskit-bench.XXXXXX)
		trap '../scripts/redis-down.sh' EXIT
		exports=$(../scripts/redis-up.sh)
		eval "$exports"
	fi
	out=$(mktemp /tmp/rediskit-bench.XXXXXX.txt)
	go test -run '^$' -bench 'CacheGetHit|CacheSet|CacheGetMany' -benchtime 2s -count "$count" . | tee "$out"
	# The lock benchmarks compare libraries row by row and with the raw
	# round trips of Floor, and with -count N each row's runs come one
	# after another, minutes from the other rows', while this machine's
	# speed drifts by more than the differences they show: each pass runs
	# every row once instead, so that each run of a row sits beside the
	# other rows' runs of its pass.
	for _ in $(seq "$count"); do
		go test -run '^$' -bench '^BenchmarkFloor$|LockUncontended|Redlock' -benchtime 2s -count 1 .
		go test -run '^$' -bench 'LockHandoff' -benchtime 120x -count 1 .
		go test -run '^$' -bench 'LockBackToBack' -benchtime 400x -count 1 .
		go test -run '^$' -bench 'LockFleet' -benchtime 400x -count 1 .
	done | tee -a "$out"
	go test -run '^$' -bench 'CacheStampede' -benchtime 20x -count "$count" . | tee -a "$out"
	# The foreign release's rows are held against ForeignFloor: in passes too.
	for _ in $(seq "$count"); do
		go test -run '^$' -bench 'ForeignRelease|ForeignFloor' -benchtime 320x -count 1 .
	done | tee -a "$out"
	# Each op of these is a whole stampede, or a call 15 ms apart, or a call
	# that meets a dead server: few ops keep each line under about a minute.
	go test -run '^$' -bench 'CacheFleetStampede' -benchtime 50x -count "$count" . | tee -a "$out"
	go test -run '^$' -bench 'CacheExpiry' -benchtime 100x -count "$count" . | tee -a "$out"
	go test -run '^$' -bench 'CacheRedisDown' -benchtime 16x -count "$count" . | tee -a "$out"
	go test -run '^$' -bench 'LocalHit' -benchtime 2s -count "$count" . | tee -a "$out"
	go test -run '^$' -bench 'LocalStaleness' -benchtime 400x -count "$count" . | tee -a "$out"
fi

machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, Redis $(redis-server --version | cut -d' ' -f3 | tr -d 'v=') on 127.0.0.1 sharing the cores with the client, $(go version | cut -d' ' -f3), $(date -u +%Y-%m-%d)"
{
	cat BENCHMARKS.head.md
	go run ./report -in "$out" -machine "$machine" -cmd "benchmarks/run.sh (BENCH_COUNT=$count)"
	echo '<details><summary>Raw output of this run</summary>'
	echo
	echo '```'
	grep -E '^(Benchmark|goos|goarch|cpu|pkg)' "$out"
	echo '```'
	echo '</details>'
} >../BENCHMARKS.md
echo "wrote BENCHMARKS.md"
