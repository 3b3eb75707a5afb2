//go:build race

package masking

// raceEnabled: under the race detector sync.Pool drops items at random.
const raceEnabled = true
