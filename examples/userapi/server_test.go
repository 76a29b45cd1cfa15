package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// After dials fail (TestRedisDown), go-redis probes the server on a
	// goroutine of its pool that sleeps a second between probes and ends
	// at its next wake-up once the client is closed.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

type fixture struct {
	mr     *miniredis.Miniredis
	client *redis.Client
	srv    *server
	http   *httptest.Server
}

func newFixture(t *testing.T, cfg config) *fixture {
	t.Helper()
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	srv := newServer(client, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ts := httptest.NewServer(srv.routes())
	t.Cleanup(func() {
		ts.Close()
		srv.close()
		_ = client.Close()
	})
	return &fixture{mr: mr, client: client, srv: srv, http: ts}
}

func testConfig() config {
	return config{LockTTL: 10 * time.Second, LockWait: 2 * time.Second, Work: 100 * time.Millisecond,
		DBDelay: 50 * time.Millisecond, CacheTTL: time.Minute}
}

// call makes a request and decodes its JSON answer.
func (f *fixture) call(t *testing.T, method, path string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.http.URL+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

func TestAttemptActionContention(t *testing.T) {
	cfg := testConfig()
	// Long enough for all the requests to arrive while the first holds the
	// lock, on a loaded machine too: a request after its release may win.
	cfg.Work = time.Second
	f := newFixture(t, cfg)
	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	var mu sync.Mutex
	statuses := map[string]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, body := f.call(t, http.MethodPost, "/api/v1/users/attempt-action/?user_id=1")
			assert.Equal(t, http.StatusOK, code)
			mu.Lock()
			statuses[body["status"].(string)]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	assert.Equal(t, map[string]int{"success": 1, "failed": n - 1}, statuses)
	assert.False(t, f.mr.Exists("user:1:lock"), "released after the work")
}

func TestAttemptActionFailedBody(t *testing.T) {
	f := newFixture(t, testConfig())
	_, err := f.srv.locker.TryAcquire(context.Background(), "user:3:lock", time.Minute)
	require.NoError(t, err)
	resp, err := http.Post(f.http.URL+"/api/v1/users/attempt-action/?user_id=3", "", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, `{"status":"failed","detail":"Could not acquire lock"}`, strings.TrimSpace(string(body)))
}

func TestPerformActionWaitsForTheHolder(t *testing.T) {
	f := newFixture(t, testConfig())
	ctx := context.Background()
	holder, err := f.srv.locker.TryAcquire(ctx, "user:2:lock", time.Minute)
	require.NoError(t, err)
	time.AfterFunc(200*time.Millisecond, func() { _ = holder.Release(ctx) })

	// The holder's lock lasts a minute and the wait is 2 s: success means
	// the request got the lock when the holder released it.
	code, body := f.call(t, http.MethodPost, "/api/v1/users/perform-action/?user_id=2")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "success", body["status"])
}

func TestPerformActionLockedWhenTheHolderOutlivesTheWait(t *testing.T) {
	cfg := testConfig()
	cfg.LockWait = 150 * time.Millisecond
	f := newFixture(t, cfg)
	_, err := f.srv.locker.TryAcquire(context.Background(), "user:2:lock", time.Minute)
	require.NoError(t, err)
	code, body := f.call(t, http.MethodPost, "/api/v1/users/perform-action/?user_id=2")
	assert.Equal(t, http.StatusLocked, code)
	assert.Equal(t, "Could not acquire lock", body["detail"])
}

func TestConcurrentPerformActionsAllSucceedInTurn(t *testing.T) {
	f := newFixture(t, testConfig())
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body := f.call(t, http.MethodPost, "/api/v1/users/perform-action/?user_id=9")
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, "success", body["status"])
		}()
	}
	wg.Wait()
	assert.EqualValues(t, 5, f.srv.locker.Stats().Acquired)
}

func TestGetUserThroughTheCache(t *testing.T) {
	f := newFixture(t, testConfig())
	code, body := f.call(t, http.MethodGet, "/api/v1/users/7")
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, false, body["cached"])
	assert.EqualValues(t, 1, body["db_loads"])
	assert.Equal(t, map[string]any{"id": 7.0, "name": "User 7", "email": "user7@example.com"}, body["user"])

	code, body = f.call(t, http.MethodGet, "/api/v1/users/7")
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, true, body["cached"])
	assert.EqualValues(t, 1, body["db_loads"], "the second read is a hit")

	// Written back after the first caller was answered.
	require.Eventually(t, func() bool { return f.mr.Exists("user:7") }, 5*time.Second, time.Millisecond)
	raw, err := f.mr.Get("user:7")
	require.NoError(t, err)
	assert.JSONEq(t, `{"id":7,"name":"User 7","email":"user7@example.com"}`, raw, "plain JSON, readable by the seed")

	code, _ = f.call(t, http.MethodGet, "/api/v1/users/4242")
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = f.call(t, http.MethodGet, "/api/v1/users/4242")
	assert.Equal(t, http.StatusNotFound, code)
	assert.EqualValues(t, 2, f.srv.db.loads.Load(), "the missing user is negatively cached")
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, testConfig())
	tests := []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/api/v1/users/perform-action/", http.StatusBadRequest},
		{http.MethodPost, "/api/v1/users/perform-action/?user_id=abc", http.StatusBadRequest},
		{http.MethodPost, "/api/v1/users/attempt-action/?user_id=", http.StatusBadRequest},
		{http.MethodGet, "/api/v1/users/perform-action/?user_id=1", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/api/v1/users/attempt-action/?user_id=1", http.StatusMethodNotAllowed},
		{http.MethodPost, "/api/v1/users/7", http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/v1/users/seven", http.StatusBadRequest},
		{http.MethodGet, "/nowhere", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			code, body := f.call(t, tt.method, tt.path)
			assert.Equal(t, tt.code, code)
			assert.NotEmpty(t, body["detail"])
		})
	}
}

func TestRedisDown(t *testing.T) {
	f := newFixture(t, testConfig())
	f.mr.Close()
	for _, path := range []string{"/api/v1/users/perform-action/?user_id=1", "/api/v1/users/attempt-action/?user_id=1"} {
		code, body := f.call(t, http.MethodPost, path)
		assert.Equal(t, http.StatusServiceUnavailable, code, path)
		assert.Equal(t, "Redis unavailable", body["detail"])
	}
	// Reads degrade to the database instead of failing.
	code, body := f.call(t, http.MethodGet, "/api/v1/users/3")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, false, body["cached"])
	assert.Positive(t, f.srv.users.Stats().RedisErrors)
}

func TestRedisOptionsFromTheSeedsEnvironment(t *testing.T) {
	for _, name := range []string{"REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_USER", "REDIS_PWD"} {
		t.Setenv(name, "")
	}
	opts, err := redisOptions()
	require.NoError(t, err)
	assert.Nil(t, opts, "nothing set: embedded miniredis")

	t.Setenv("REDIS_HOST", "10.0.0.5")
	t.Setenv("REDIS_USER", "app")
	t.Setenv("REDIS_PWD", "secret")
	opts, err = redisOptions()
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.5:6379", opts.Addr)
	assert.Equal(t, "app", opts.Username)
	assert.Equal(t, "secret", opts.Password)

	t.Setenv("REDIS_URL", "redis://u:p@127.0.0.1:6390/2")
	opts, err = redisOptions()
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:6390", opts.Addr)
	assert.Equal(t, 2, opts.DB)

	t.Setenv("REDIS_URL", "notaurl://x")
	_, err = redisOptions()
	assert.Error(t, err)
}
