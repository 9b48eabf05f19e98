package observe

import (
	"sync"
	"testing"
)

func TestBusDelivers(t *testing.T) {
	var b Bus[int]
	s := b.Subscribe(4)
	defer s.Close()
	b.Publish(1)
	b.Publish(2)
	if got, want := <-s.C(), 1; got != want {
		t.Fatalf("first value = %d, want %d", got, want)
	}
	if got, want := <-s.C(), 2; got != want {
		t.Fatalf("second value = %d, want %d", got, want)
	}
	if got, want := b.Len(), 1; got != want {
		t.Fatalf("Len = %d, want %d", got, want)
	}
}

func TestBusDropsSlowSubscriber(t *testing.T) {
	var b Bus[int]
	slow := b.Subscribe(1)
	fast := b.Subscribe(8)
	defer fast.Close()
	for i := range 3 {
		b.Publish(i)
	}
	// slow got the first value, then was dropped.
	if v, ok := <-slow.C(); !ok || v != 0 {
		t.Fatalf("slow first = %d, %v; want 0, true", v, ok)
	}
	if _, ok := <-slow.C(); ok {
		t.Fatal("slow subscriber's channel still open, want closed")
	}
	if !slow.Dropped() {
		t.Error("slow.Dropped() = false, want true")
	}
	if got, want := b.Dropped(), uint64(1); got != want {
		t.Errorf("bus Dropped = %d, want %d", got, want)
	}
	for i := range 3 {
		if v := <-fast.C(); v != i {
			t.Fatalf("fast got %d, want %d", v, i)
		}
	}
	slow.Close() // after a drop: no panic
}

func TestBusCloseEndsSubscriptions(t *testing.T) {
	var b Bus[string]
	s := b.Subscribe(1)
	b.Close()
	if _, ok := <-s.C(); ok {
		t.Fatal("channel open after Bus.Close")
	}
	if s.Dropped() {
		t.Error("Dropped after Bus.Close = true, want false")
	}
	late := b.Subscribe(1)
	if _, ok := <-late.C(); ok {
		t.Fatal("subscription after Close is open")
	}
	b.Publish("x") // no panic
	s.Close()
}

func TestBusConcurrent(t *testing.T) {
	var b Bus[int]
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range 100 {
				s := b.Subscribe(2)
				b.Publish(i)
				s.Close()
			}
		})
	}
	wg.Wait()
	if got := b.Len(); got != 0 {
		t.Fatalf("Len = %d after all closed, want 0", got)
	}
}
