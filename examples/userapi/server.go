package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rediskit/rediskit"
)

// config holds the service's tunables; tests shorten the durations.
type config struct {
	LockTTL  time.Duration // expiry of user:N:lock (the seed's 10 s)
	LockWait time.Duration // how long perform-action waits for the lock (the seed's 5 s)
	Work     time.Duration // simulated work done under the lock
	DBDelay  time.Duration // latency of the simulated database
	CacheTTL time.Duration // how long users stay cached
}

func defaultConfig() config {
	return config{
		LockTTL:  10 * time.Second,
		LockWait: 5 * time.Second,
		Work:     500 * time.Millisecond,
		DBDelay:  300 * time.Millisecond,
		CacheTTL: time.Minute,
	}
}

// User is what GET /api/v1/users/{id} returns, stored in Redis as plain JSON
// under user:{id}.
type User struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// userDB is a deliberately slow in-memory database of users 1 to 1000.
type userDB struct {
	delay time.Duration
	loads atomic.Int64
}

func (db *userDB) load(ctx context.Context, id int) (User, error) {
	db.loads.Add(1)
	select {
	case <-time.After(db.delay):
	case <-ctx.Done():
		return User{}, ctx.Err()
	}
	if id < 1 || id > 1000 {
		return User{}, fmt.Errorf("user %d: %w", id, rediskit.ErrNotFound)
	}
	return User{ID: id, Name: fmt.Sprintf("User %d", id), Email: fmt.Sprintf("user%d@example.com", id)}, nil
}

// server is the Go port of the seed's FastAPI endpoints.
type server struct {
	cfg    config
	log    *slog.Logger
	locker *rediskit.Locker
	users  *rediskit.Cache[User]
	db     *userDB
}

func newServer(client redis.UniversalClient, cfg config, log *slog.Logger) *server {
	return &server{
		cfg:    cfg,
		log:    log,
		locker: rediskit.NewLocker(client),
		users:  rediskit.NewCache[User](client, rediskit.WithNegativeCaching(10*time.Second)),
		db:     &userDB{delay: cfg.DBDelay},
	}
}

// close ends the locker's subscription and the cache's loads. It does not
// close the Redis client.
func (s *server) close() {
	_ = s.locker.Close()
	_ = s.users.Close()
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/users/perform-action/", s.performAction)
	mux.HandleFunc("POST /api/v1/users/attempt-action/", s.attemptAction)
	mux.HandleFunc("GET /api/v1/users/{id}", s.getUser)
	// The same paths without a method answer 405 in JSON, not ServeMux's
	// plain text; anything else is a JSON 404.
	mux.HandleFunc("/api/v1/users/perform-action/", methodNotAllowed(http.MethodPost))
	mux.HandleFunc("/api/v1/users/attempt-action/", methodNotAllowed(http.MethodPost))
	mux.HandleFunc("/api/v1/users/{id}", methodNotAllowed(http.MethodGet))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, detail("Not Found"))
	})
	return mux
}

// performAction waits up to LockWait for user:N:lock, as the seed's
// acquire_lock_with_timeout did, and answers 423 when it cannot have it.
func (s *server) performAction(w http.ResponseWriter, r *http.Request) {
	id, ok := userIDParam(w, r)
	if !ok {
		return
	}
	key := fmt.Sprintf("user:%d:lock", id)
	lock, err := s.locker.AcquireWithTimeout(r.Context(), key, s.cfg.LockTTL, s.cfg.LockWait)
	if err != nil {
		s.lockFailed(w, r, key, err, http.StatusLocked)
		return
	}
	s.work(w, r, lock)
}

// attemptAction tries user:N:lock once, as the seed's try_acquire_lock did,
// and answers "failed" at once when it is held.
func (s *server) attemptAction(w http.ResponseWriter, r *http.Request) {
	id, ok := userIDParam(w, r)
	if !ok {
		return
	}
	key := fmt.Sprintf("user:%d:lock", id)
	lock, err := s.locker.TryAcquire(r.Context(), key, s.cfg.LockTTL)
	if err != nil {
		s.lockFailed(w, r, key, err, http.StatusOK)
		return
	}
	s.work(w, r, lock)
}

// work does the simulated work under lock, releases it, and answers.
func (s *server) work(w http.ResponseWriter, r *http.Request, lock *rediskit.Lock) {
	select {
	case <-time.After(s.cfg.Work):
	case <-r.Context().Done():
	}
	// Release even if the client went away: the context must outlive it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.LockTTL)
	defer cancel()
	if err := lock.Release(ctx); err != nil {
		s.log.Warn("release", "key", lock.Key(), "err", err)
	}
	writeJSON(w, http.StatusOK, result{Status: "success"})
}

// lockFailed answers a failed acquisition: busy with busyStatus (423 for
// perform-action, 200 with "failed" for attempt-action, as the seed), and a
// Redis failure with 503.
func (s *server) lockFailed(w http.ResponseWriter, r *http.Request, key string, err error, busyStatus int) {
	// A wait that ran out while Redis kept failing wraps both
	// ErrNotObtained and the last error: Redis being down is not contention.
	var netErr net.Error
	busy := errors.Is(err, rediskit.ErrNotObtained) && !errors.As(err, &netErr)
	switch {
	case busy && busyStatus == http.StatusOK:
		writeJSON(w, http.StatusOK, result{Status: "failed", Detail: "Could not acquire lock"})
	case busy:
		writeJSON(w, busyStatus, detail("Could not acquire lock"))
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
	default:
		s.log.Error("acquire", "key", key, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, detail("Redis unavailable"))
	}
}

// getUser reads a user through the cache. If Redis is down, GetOrLoad still
// answers from the database.
func (s *server) getUser(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, detail("id must be an integer"))
		return
	}
	fromDB := false
	u, err := s.users.GetOrLoad(r.Context(), fmt.Sprintf("user:%d", id), s.cfg.CacheTTL, func(ctx context.Context) (User, error) {
		fromDB = true
		return s.db.load(ctx, id)
	})
	switch {
	case errors.Is(err, rediskit.ErrNotFound):
		writeJSON(w, http.StatusNotFound, detail("User not found"))
	case err != nil:
		s.log.Error("get user", "id", id, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, detail("could not load the user"))
	default:
		writeJSON(w, http.StatusOK, map[string]any{"user": u, "cached": !fromDB, "db_loads": s.db.loads.Load()})
	}
}

// userIDParam reads the user_id query parameter, answering 400 if it is
// missing or not an integer.
func userIDParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	raw := r.URL.Query().Get("user_id")
	if raw == "" {
		writeJSON(w, http.StatusBadRequest, detail("user_id is required"))
		return 0, false
	}
	id, err := strconv.Atoi(raw)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, detail("user_id must be an integer"))
		return 0, false
	}
	return id, true
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeJSON(w, http.StatusMethodNotAllowed, detail("Method Not Allowed"))
	}
}

// result is the seed's answer to the two actions.
type result struct {
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func detail(msg string) map[string]string { return map[string]string{"detail": msg} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
