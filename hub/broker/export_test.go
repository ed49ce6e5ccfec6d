package broker

import "time"

// SetMigrateHook makes MigrateUnitStreams stop after a step when f returns
// an error, as a crash there would (for tests); nil removes it.
func SetMigrateHook(f func(step string) error) { migrateHook = f }

// SetTrimClock sets a Trimmer's clock (for tests).
func SetTrimClock(t *Trimmer, now func() time.Time) { t.now = now }
