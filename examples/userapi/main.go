// Command userapi is the seed's FastAPI user service ported to Go on
// rediskit: two lock-guarded actions and a cached user read. With no Redis
// configured it starts an embedded in-process Redis (miniredis), so
//
//	go run ./examples/userapi
//
// works on a machine with nothing installed. See README.md beside this file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	switch err := run(log, os.Args[1:]); {
	case errors.Is(err, flag.ErrHelp): // -h: the usage is printed, and that is all
	case err != nil:
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, args []string) error {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("userapi", flag.ContinueOnError)
	addr := fs.String("addr", envOr("ADDR", ":9001"), "listen address (env ADDR)")
	fs.DurationVar(&cfg.Work, "work", cfg.Work, "simulated work done under the lock")
	fs.DurationVar(&cfg.LockWait, "lock-wait", cfg.LockWait, "how long perform-action waits for the lock")
	fs.DurationVar(&cfg.DBDelay, "db-delay", cfg.DBDelay, "latency of the simulated user database")
	if err := fs.Parse(args); err != nil {
		return err
	}

	client, stopRedis, err := connect(log)
	if err != nil {
		return err
	}
	defer stopRedis()

	srv := newServer(client, cfg, log)
	defer srv.close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: srv.routes(), ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests")
	// In-flight requests finish and release their locks; then the deferred
	// calls close the locker, the cache and Redis, in that order.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.LockTTL)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// connect returns a client for the Redis the environment names, with the
// seed's variables (REDIS_URL, or REDIS_HOST, REDIS_PORT, REDIS_USER,
// REDIS_PWD), or for an embedded miniredis when none is set. The first log
// line says which.
func connect(log *slog.Logger) (redis.UniversalClient, func(), error) {
	opts, err := redisOptions()
	if err != nil {
		return nil, nil, err
	}
	if opts == nil {
		mr, err := miniredis.Run()
		if err != nil {
			return nil, nil, err
		}
		log.Info("redis: embedded miniredis (set REDIS_URL or REDIS_HOST to use a real Redis)", "addr", mr.Addr())
		client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		return client, func() { _ = client.Close(); mr.Close() }, nil
	}
	log.Info("redis: connecting", "addr", opts.Addr)
	client := redis.NewClient(opts)
	return client, func() { _ = client.Close() }, nil
}

// redisOptions reads the seed's environment variables; nil means none is
// set.
func redisOptions() (*redis.Options, error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		return redis.ParseURL(url)
	}
	host := os.Getenv("REDIS_HOST")
	if host == "" {
		return nil, nil
	}
	return &redis.Options{
		Addr:     fmt.Sprintf("%s:%s", host, envOr("REDIS_PORT", "6379")),
		Username: os.Getenv("REDIS_USER"),
		Password: os.Getenv("REDIS_PWD"),
	}, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
