package document

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// ID is a document id: a ULID set by the sending agent, edx's key everywhere.
type ID string

// NewID returns a new ULID for a document created at t.
func NewID(t time.Time) ID {
	return ID(ulid.MustNew(ulid.Timestamp(t), rand.Reader).String())
}

// ParseID validates s as a ULID in its canonical upper-case form.
func ParseID(s string) (ID, error) {
	id := ID(s)
	return id, id.Validate()
}

// Validate reports whether id is a canonical ULID.
func (id ID) Validate() error {
	u, err := ulid.ParseStrict(string(id))
	if err != nil {
		return fmt.Errorf("document id %q: not a ULID: %w", string(id), err)
	}
	if u.String() != string(id) {
		return fmt.Errorf("document id %q: not in canonical upper-case form", string(id))
	}
	return nil
}

// Time returns the time encoded in the ULID.
func (id ID) Time() time.Time {
	u, err := ulid.ParseStrict(string(id))
	if err != nil {
		return time.Time{}
	}
	return ulid.Time(u.Time()).UTC()
}

func (id ID) String() string { return string(id) }
