package evidence

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/tsa"
)

// Proof is the evidence for one decision: the entry, its inclusion in a
// checkpoint the log signed, and an RFC 3161 token over that checkpoint. It
// holds without the hub: the log's public key, the TSA's roots and this
// bundle are enough. Byte fields are base64 in JSON.
type Proof struct {
	// Index is the entry's position in the log.
	Index uint64 `json:"index"`
	// Entry is the entry exactly as logged (its canonical encoding).
	Entry []byte `json:"entry"`
	// Checkpoint is the signed checkpoint the proof is against, byte for
	// byte as it was time-stamped.
	Checkpoint []byte `json:"checkpoint"`
	// Hashes is the inclusion proof (RFC 6962 / RFC 9162).
	Hashes [][]byte `json:"hashes"`
	// Timestamp is an RFC 3161 token over SHA-256(Checkpoint); empty while
	// the checkpoint awaits its time-stamp.
	Timestamp []byte `json:"timestamp,omitempty"`
	// Previous is the log's time-stamped checkpoint before Checkpoint, one
	// that does not hold the entry yet, with its token and the proof that
	// its tree is a prefix of Checkpoint's: the entry was logged after the
	// TSA's time on it. Absent when the log has no such checkpoint (the
	// entry is in the first time-stamped one).
	Previous *Anchor `json:"previous,omitempty"`
}

// Anchor is a time-stamped checkpoint of the log older than a proof's, and
// the consistency proof from it to the proof's checkpoint.
type Anchor struct {
	Checkpoint  []byte   `json:"checkpoint"`
	Timestamp   []byte   `json:"timestamp"`
	Consistency [][]byte `json:"consistency"`
}

// ProofOptions say what a proof is checked against.
type ProofOptions struct {
	// Origin and LogKey identify the log: its checkpoint origin and the
	// verifier of its note signatures (note.NewVerifier of its vkey).
	Origin string
	LogKey note.Verifier
	// TSARoots are the trust roots for the time-stamp. Required when the
	// proof carries a token or RequireTimestamp is set.
	TSARoots *x509.CertPool
	// RequireTimestamp refuses a proof without a time-stamp.
	RequireTimestamp bool
}

// Verified is what a valid proof establishes.
type Verified struct {
	Entry      *Entry
	Checkpoint *log.Checkpoint
	// Time is the TSA's genTime: the decision was in the log by then. Zero
	// when the proof carries no token.
	Time time.Time
	// After is the TSA's genTime on the previous time-stamped checkpoint:
	// the decision was logged after it. Zero without one.
	After time.Time
	// Previous is that checkpoint (nil without one).
	Previous *log.Checkpoint
}

// Verify checks the checkpoint's signature, the entry's inclusion, the
// entry's format and, when present, the time-stamp over the checkpoint.
func (p *Proof) Verify(o ProofOptions) (*Verified, error) {
	if o.LogKey == nil || o.Origin == "" {
		return nil, errors.New("evidence: proof: the log's origin and key are required")
	}
	cp, err := OpenCheckpoint(p.Checkpoint, o.Origin, o.LogKey)
	if err != nil {
		return nil, err
	}
	if err := VerifyInclusion(p.Entry, p.Index, p.Hashes, cp); err != nil {
		return nil, err
	}
	e, err := ParseEntry(p.Entry)
	if err != nil {
		return nil, err
	}
	v := &Verified{Entry: e, Checkpoint: cp}
	if len(p.Timestamp) == 0 {
		if o.RequireTimestamp {
			return nil, errors.New("evidence: proof: the checkpoint carries no time-stamp")
		}
		return v, nil
	}
	if o.TSARoots == nil {
		return nil, errors.New("evidence: proof: a time-stamp and no TSA roots to check it")
	}
	d := sha256.Sum256(p.Checkpoint)
	if v.Time, err = tsa.Verify(p.Timestamp, d[:], o.TSARoots, time.Time{}); err != nil {
		return nil, fmt.Errorf("evidence: proof: %w", err)
	}
	if p.Previous == nil {
		return v, nil
	}
	prev, err := OpenCheckpoint(p.Previous.Checkpoint, o.Origin, o.LogKey)
	if err != nil {
		return nil, fmt.Errorf("evidence: proof: previous %w", err)
	}
	if prev.Size > p.Index {
		return nil, fmt.Errorf("evidence: proof: the previous checkpoint (size %d) already holds entry %d", prev.Size, p.Index)
	}
	if err := VerifyConsistency(prev, cp, p.Previous.Consistency); err != nil {
		return nil, fmt.Errorf("evidence: proof: %w", err)
	}
	pd := sha256.Sum256(p.Previous.Checkpoint)
	if v.After, err = tsa.Verify(p.Previous.Timestamp, pd[:], o.TSARoots, time.Time{}); err != nil {
		return nil, fmt.Errorf("evidence: proof: previous checkpoint: %w", err)
	}
	if v.After.After(v.Time) {
		return nil, fmt.Errorf("evidence: proof: the previous checkpoint was time-stamped at %s, after this one (%s)",
			v.After.UTC().Format(time.RFC3339), v.Time.UTC().Format(time.RFC3339))
	}
	v.Previous = prev
	return v, nil
}
