package fleet

import (
	"math/rand/v2"
	"time"
)

// backoff is the wait between attempts to reach etcd: doubling from min to max, with
// a quarter of jitter so that a fleet does not come back in step after an outage.
type backoff struct {
	min, max, cur time.Duration
}

// next is the wait before the next attempt.
func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur - time.Duration(rand.Int64N(int64(b.cur)/4+1))
}

// reset starts over after a success.
func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until done is closed; false if done was.
func sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}
