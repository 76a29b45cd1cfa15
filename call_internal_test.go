package rediskit

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
)

// TestInlineCalls: which calls run on their caller's goroutine. On a
// default client, a ctx that can end runs its calls where the caller can
// abandon them, unless mayOverrun marks a deadline as one the call may
// overrun (WithLock's release).
func TestInlineCalls(t *testing.T) {
	defClient := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer defClient.Close()
	cteClient := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer cteClient.Close()
	def, cte := newCalls(defClient), newCalls(cteClient)
	deadline, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cancellable, cancel2 := context.WithCancel(context.Background())
	defer cancel2()

	for _, c := range []struct {
		name   string
		cs     *calls
		ctx    context.Context
		inline bool
	}{
		{"default client, no end", def, context.Background(), true},
		{"default client, deadline", def, deadline, false},
		{"default client, deadline it may overrun", def, mayOverrun(deadline), true},
		{"default client, cancellable, marked, no deadline", def, mayOverrun(cancellable), false},
		{"ctx-timeouts client, deadline", cte, deadline, true},
		{"ctx-timeouts client, cancellable, no deadline", cte, cancellable, false},
	} {
		assert.Equal(t, c.inline, c.cs.inline(c.ctx), c.name)
	}
}
