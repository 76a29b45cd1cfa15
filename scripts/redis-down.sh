#!/usr/bin/env bash
# redis-down.sh stops exactly the Redis servers redis-up.sh started, by the
# pid files in their directories, and removes those directories. It is
# idempotent: with nothing running it says so and succeeds.
set -uo pipefail

dir=${REDISKIT_REDIS_DIR:-/tmp/rediskit-redis}
say() { echo "redis-down: $*" >&2; }

stopped=0
for pidfile in "$dir"/*/redis.pid; do
	[ -f "$pidfile" ] || continue
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
		kill "$pid"
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
		say "stopped $(basename "$(dirname "$pidfile")") (pid $pid)"
		stopped=$((stopped + 1))
	fi
done
[ "$stopped" -gt 0 ] || say "nothing running"
rm -rf "$dir"
