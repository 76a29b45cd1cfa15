package rediskit

import (
	"fmt"
	"math/rand"
	"time"
)

// Backoff decides how long a waiting acquisition sleeps before its next
// attempt. Implementations must be safe for concurrent use.
type Backoff interface {
	// Next returns the sleep before retry number retry, counting from 1.
	Next(retry int) time.Duration
}

// ExponentialBackoff returns a Backoff whose sleep doubles with each retry,
// from min up to max, with equal jitter: the sleep before a retry is drawn
// uniformly from [d/2, d], where d is the doubled delay, so that waiters
// woken together spread out. A min below one millisecond is raised to one
// millisecond, and a max below min is raised to min.
func ExponentialBackoff(min, max time.Duration) Backoff {
	if min < time.Millisecond {
		min = time.Millisecond
	}
	if max < min {
		max = min
	}
	return exponentialBackoff{min: min, max: max}
}

type exponentialBackoff struct{ min, max time.Duration }

func (b exponentialBackoff) Next(retry int) time.Duration {
	d := b.max
	if retry < 1 {
		retry = 1
	}
	// Shifting by 62 or more would overflow; by then d is long past max.
	if retry <= 62 {
		if e := b.min << (retry - 1); e > 0 && e < b.max {
			d = e
		}
	}
	half := d / 2
	return half + time.Duration(rand.Int63n(int64(d-half)+1))
}

func (b exponentialBackoff) String() string {
	return fmt.Sprintf("ExponentialBackoff(%v, %v)", b.min, b.max)
}

// ConstantBackoff returns a Backoff that always sleeps d, the seed's fixed
// polling. A d below one millisecond is raised to one millisecond.
func ConstantBackoff(d time.Duration) Backoff {
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return constantBackoff(d)
}

type constantBackoff time.Duration

func (b constantBackoff) Next(int) time.Duration { return time.Duration(b) }
func (b constantBackoff) String() string         { return fmt.Sprintf("ConstantBackoff(%v)", time.Duration(b)) }
