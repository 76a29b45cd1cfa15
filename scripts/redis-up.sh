#!/usr/bin/env bash
# redis-up.sh starts the real Redis servers the integration tests use, all on
# 127.0.0.1, without persistence, each in its own directory with a pid file:
#   - one standalone server            (REDISKIT_REDIS_ADDR)
#   - five independent masters          (REDISKIT_REDLOCK_ADDRS, for Redlock)
#   - a Redis Cluster of three masters, one replica each (REDISKIT_CLUSTER_ADDRS)
# It installs redis-server (and python3-redis, for the seed interop test)
# with apt-get when missing. It is idempotent: servers already running are
# left as they are. The exports for the tests are printed and written to
# $REDISKIT_REDIS_DIR/env; `source` that file, or eval this script's output.
#
# Ports start at REDISKIT_PORT_BASE (default 17300), far from 6379; the
# cluster bus uses port+10000.
set -euo pipefail

dir=${REDISKIT_REDIS_DIR:-/tmp/rediskit-redis}
base=${REDISKIT_PORT_BASE:-17300}
standalone=$base
masters=($((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)) $((base + 5)))
cluster=($((base + 10)) $((base + 11)) $((base + 12)) $((base + 13)) $((base + 14)) $((base + 15)))

say() { echo "redis-up: $*" >&2; }

apt_updated=
apt_install() {
	if [ -z "$apt_updated" ]; then
		say "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
		apt_updated=1
	fi
	say "apt-get install -y $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
/usr/bin/python3 -c 'import redis' 2>/dev/null || apt_install python3-redis || say "python3-redis unavailable: the seed interop test will skip"

alive() { [ -f "$1/redis.pid" ] && kill -0 "$(cat "$1/redis.pid")" 2>/dev/null; }

start() { # start PORT [extra redis-server args...]
	local port=$1; shift
	local d="$dir/$port"
	if alive "$d"; then
		say "127.0.0.1:$port already running (pid $(cat "$d/redis.pid"))"
		return
	fi
	if redis-cli -p "$port" ping >/dev/null 2>&1; then
		say "127.0.0.1:$port is served by a Redis this script did not start (not in $dir); stop it, or set REDISKIT_PORT_BASE"
		exit 1
	fi
	mkdir -p "$d"
	redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
		--dir "$d" --pidfile "$d/redis.pid" --logfile "$d/redis.log" \
		--save '' --appendonly no "$@"
	for _ in $(seq 100); do
		redis-cli -p "$port" ping >/dev/null 2>&1 && break
		sleep 0.05
	done
	redis-cli -p "$port" ping >/dev/null || { say "127.0.0.1:$port did not start; see $d/redis.log"; exit 1; }
	say "started 127.0.0.1:$port (pid $(cat "$d/redis.pid"))"
}

start "$standalone"
for p in "${masters[@]}"; do start "$p"; done
for p in "${cluster[@]}"; do
	start "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
done

if redis-cli -p "${cluster[0]}" cluster info | grep -q '^cluster_state:ok'; then
	say "cluster already formed"
else
	say "creating the cluster"
	addrs=()
	for p in "${cluster[@]}"; do addrs+=("127.0.0.1:$p"); done
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/cluster-create.log" 2>&1 ||
		{ cat "$dir/cluster-create.log" >&2; exit 1; }
fi
for p in "${cluster[@]}"; do
	for _ in $(seq 200); do
		redis-cli -p "$p" cluster info | grep -q '^cluster_state:ok' && break
		sleep 0.1
	done
	redis-cli -p "$p" cluster info | grep -q '^cluster_state:ok' || { say "127.0.0.1:$p: cluster not ok"; exit 1; }
done
say "cluster ok"

join() { local IFS=,; echo "$*"; }
redlock=(); for p in "${masters[@]}"; do redlock+=("127.0.0.1:$p"); done
seeds=(); for p in "${cluster[@]:0:3}"; do seeds+=("127.0.0.1:$p"); done
cat >"$dir/env" <<ENV
export REDISKIT_REDIS_ADDR=127.0.0.1:$standalone
export REDISKIT_REDLOCK_ADDRS=$(join "${redlock[@]}")
export REDISKIT_CLUSTER_ADDRS=$(join "${seeds[@]}")
ENV
cat "$dir/env"
