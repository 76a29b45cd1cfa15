// Package benchmarks measures rediskit side by side with the libraries Go
// services would use instead (github.com/bsm/redislock,
// github.com/go-redsync/redsync/v4, github.com/go-redis/cache/v9, and
// redis-py's Lock, driven through python3) and with raw go-redis, on a real
// Redis. It is a module of its own so that the
// library's go.mod stays lean. See BENCHMARKS.md at the repository root.
package benchmarks
