package broker

import "time"

// SetMigrateHook makes MigrateUnitStreams stop after a step when f returns
// an error, as a crash there would (for tests); nil removes it.
func SetMigrateHook(f func(step string) error) { migrateHook = f }

// SetTrimClock sets a Trimmer's clock (for tests).
func SetTrimClock(t *Trimmer, now func() time.Time) { t.now = now }

// TrimPending returns what a Trimmer was told of for a unit and has not
// removed.
func TrimPending(t *Trimmer, unit string) []uint64 { return t.pending(unit) }

// SetPullResponseThreshold sets the threshold of pull requests' reply
// mappings for accounts signed from now on, and returns the old one (for
// tests).
func SetPullResponseThreshold(d time.Duration) time.Duration {
	old := pullResponseThreshold
	pullResponseThreshold = d
	return old
}

// TrimAcked returns the floor a unit's requests told the Trimmer.
func TrimAcked(t *Trimmer, unit string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.units[unit]; s != nil {
		return s.acked
	}
	return 0
}
