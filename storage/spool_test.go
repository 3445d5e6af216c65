package storage

import (
	"context"
	"testing"
	"time"
)

func TestSpoolBudgetAwaitRoom(t *testing.T) {
	var b spoolBudget
	if !b.take(6, 10) || b.take(5, 10) {
		t.Fatal("take: want 6 of 10 taken, then 5 more refused")
	}
	if !b.take(3, 10) { // 9 of 10 taken
		t.Fatal("take 3 more: refused")
	}
	if b.awaitRoom(t.Context(), 11, 10, time.Hour) {
		t.Error("awaitRoom took more than the budget")
	}
	if b.awaitRoom(t.Context(), 5, 10, 20*time.Millisecond) {
		t.Error("awaitRoom took room nobody gave back")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if b.awaitRoom(ctx, 5, 10, time.Hour) {
		t.Error("awaitRoom took room after its context ended")
	}
	got := make(chan bool)
	go func() { got <- b.awaitRoom(t.Context(), 5, 10, time.Hour) }()
	time.Sleep(10 * time.Millisecond)
	b.give(2)
	select {
	case ok := <-got:
		t.Fatalf("awaitRoom returned %v with only 3 free", ok)
	case <-time.After(20 * time.Millisecond):
	}
	b.give(2)
	if !<-got {
		t.Fatal("awaitRoom gave up although room was given back")
	}
	if used := b.Load(); used != 10 {
		t.Errorf("used %d, want 10", used)
	}
}
