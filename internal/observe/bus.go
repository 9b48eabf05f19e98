package observe

import (
	"sync"
	"sync/atomic"
)

// Bus fans out values of type T to subscribers. The zero value is ready to
// use. It is safe for concurrent use.
type Bus[T any] struct {
	dropped atomic.Uint64

	mu     sync.Mutex // guards following
	subs   map[*Subscription[T]]struct{}
	closed bool
}

// Subscription is one subscriber of a Bus. Receive from C; when C is closed
// the subscription has ended, either by Close, by Bus.Close, or because the
// subscriber fell behind (see Dropped).
type Subscription[T any] struct {
	bus *Bus[T]
	ch  chan T
	// dropped is set before ch is closed when the bus dropped the subscriber
	// for being slow.
	dropped atomic.Bool
}

// Subscribe returns a new subscription whose channel holds up to buffer
// values (at least 1). The caller must call Close when done.
func (b *Bus[T]) Subscribe(buffer int) *Subscription[T] {
	buffer = max(buffer, 1)
	s := &Subscription[T]{bus: b, ch: make(chan T, buffer)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(s.ch)
		return s
	}
	if b.subs == nil {
		b.subs = make(map[*Subscription[T]]struct{})
	}
	b.subs[s] = struct{}{}
	return s
}

// Publish delivers v to every subscriber that has room for it and drops the
// subscribers that have not. It never blocks.
func (b *Bus[T]) Publish(v T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- v:
		default:
			s.dropped.Store(true)
			delete(b.subs, s)
			close(s.ch)
			b.dropped.Add(1)
		}
	}
}

// Len returns the number of current subscribers.
func (b *Bus[T]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Dropped returns how many subscribers were dropped for being slow, since the
// bus was created.
func (b *Bus[T]) Dropped() uint64 { return b.dropped.Load() }

// Close ends every subscription and refuses new ones (their channels start
// closed). Publish after Close does nothing.
func (b *Bus[T]) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for s := range b.subs {
		close(s.ch)
	}
	b.subs = nil
}

// C returns the channel the subscription's values arrive on.
func (s *Subscription[T]) C() <-chan T { return s.ch }

// Dropped reports whether the bus ended the subscription because the
// subscriber fell behind. Meaningful once C is closed.
func (s *Subscription[T]) Dropped() bool { return s.dropped.Load() }

// Close ends the subscription. It is safe to call more than once and after
// the bus dropped the subscriber.
func (s *Subscription[T]) Close() {
	b := s.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.ch)
	}
}
