//go:build race

package genimg

// raceEnabled: the race detector slows everything several times over.
const raceEnabled = true
