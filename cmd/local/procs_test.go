package main

import (
	"runtime"
	"testing"
)

// TestInstanceProcs: -functions-only runs with the deployed instance's
// GOMAXPROCS, unless the environment sets it or -cpus is 0.
func TestInstanceProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.GOMAXPROCS(3)
	t.Setenv("GOMAXPROCS", "")
	if got := instanceProcs(0); got != 3 {
		t.Errorf("-cpus 0: GOMAXPROCS %d, want Go's 3 unchanged", got)
	}
	if got := instanceProcs(1); got != 1 {
		t.Errorf("-cpus 1: GOMAXPROCS %d, want 1", got)
	}
	runtime.GOMAXPROCS(3)
	t.Setenv("GOMAXPROCS", "3")
	if got := instanceProcs(1); got != 3 {
		t.Errorf("-cpus 1 with GOMAXPROCS=3 in the environment: GOMAXPROCS %d, want 3", got)
	}
}
