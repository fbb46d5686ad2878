package pubsub

import "testing"

// TestPublisherCountsWaited: a live change that finds the window full,
// or its device's last publish unanswered, or others pending before it,
// is counted as having waited; one that can go out at once is not.
func TestPublisherCountsWaited(t *testing.T) {
	p := newPublisher(2)
	dev := func(n string) pubKey { return pubKey{name: n} }
	p.put(dev("a"), pubValue{})
	if _, _, ok := p.take(); !ok {
		t.Fatal("a not taken")
	}
	if w := p.stats().Waited; w != 0 {
		t.Fatalf("waited %d after a change that went out at once", w)
	}
	p.put(dev("a"), pubValue{}) // a is in flight
	if w := p.stats().Waited; w != 1 {
		t.Fatalf("waited %d, want 1 (its device in flight)", w)
	}
	p.put(dev("b"), pubValue{}) // a's newer value is pending before it
	if w := p.stats().Waited; w != 2 {
		t.Fatalf("waited %d, want 2 (another pending before it)", w)
	}
	if _, _, ok := p.take(); !ok { // b (a is busy): the window is full
		t.Fatal("b not taken")
	}
	p.done(dev("a"), false)
	if _, _, ok := p.take(); !ok { // a's newer value
		t.Fatal("a's newer value not taken")
	}
	p.put(dev("c"), pubValue{})
	if w := p.stats().Waited; w != 3 {
		t.Fatalf("waited %d, want 3 (window full)", w)
	}
	p.putBulk(dev("d"), pubValue{})
	if w := p.stats().Waited; w != 3 {
		t.Fatalf("waited %d: a republish is not a live change", w)
	}
}
