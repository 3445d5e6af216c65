//go:build race

package e2e

// raceEnabled: the race detector slows everything several times over.
const raceEnabled = true
