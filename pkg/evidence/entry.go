// Package evidence is what hub, agents, the CLI and auditors share to read
// the hub's evidence without trusting the hub: the entry format of its
// transparency log (one entry per decision), a client that reads the log's
// tiles over HTTP (C2SP tlog-tiles) and builds inclusion and consistency
// proofs, and the proof bundle that shows one entry is in a checkpoint the
// log signed and a TSA time-stamped.
//
// The hub writes the log (hub/tlog); agents witness it (pkg/witness).
package evidence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// Version is the entry format's version; an entry of another version is
// refused, not guessed at.
const Version = 1

// MaxEntrySize bounds one encoded entry (a document to all 1,500 units of a
// city is about 30 KiB).
const MaxEntrySize = 64 << 10

// Kind is what the hub decided.
type Kind string

// The decisions the log records.
const (
	// Accepted: a container passed every check and was archived. Doc,
	// Container, Sender, Recipients, Time (the acceptance time the receipt
	// carries), CRLs (the digests of the CRLs the signer's chain was
	// checked against, archived under crl/<sha256>.crl); Receipt (the
	// digest of the signed receipt) when the receipt is signed before the
	// entry is logged. The hub's receipts carry the entry's log index
	// (origin and index), so they are signed after it and the entry omits
	// the receipt's digest: the receipt and the entry name the same
	// document, container and time, and the receipt names the entry.
	Accepted Kind = "accepted"
	// Rejected: a submission was refused. Container (the digest of what was
	// submitted), Reasons (stable codes); Sender and Doc when known; CRLs
	// when the signer's chain was checked against some (a revocation).
	Rejected Kind = "rejected"
	// Delivered: a recipient's agent acknowledged a container. Doc,
	// Container, Unit (the recipient).
	Delivered Kind = "delivered"
	// Status: a unit reported a status. Doc, Unit (who reported), Status;
	// Digest of the signed status when there is one.
	Status Kind = "status"
	// UnitChange: the unit registry changed. Unit, Action, Digest (of the
	// unit's record as stored).
	UnitChange Kind = "unit"
	// Certificate: a certificate was issued, registered or revoked. Action,
	// Serial, Digest (of the DER); Unit when it is a unit's.
	Certificate Kind = "certificate"
	// Trust: the trust store changed. Action, Digest (of the PEM bundle now
	// in force).
	Trust Kind = "trust"
	// CRL: a CRL was installed. Action, Digest (of its DER); Serial (its CRL
	// number, hexadecimal) when it has one.
	CRL Kind = "crl"
)

var actions = map[Kind][]string{
	UnitChange:  {"registered", "updated", "rotated", "disabled", "enabled", "revoked", "removed"},
	Certificate: {"issued", "registered", "revoked"},
	Trust:       {"replaced"},
	CRL:         {"installed"},
}

// Entry is one decision. Digests are lower-case hexadecimal SHA-256. Time is
// when the hub decided, in UTC. Fields a kind does not use stay empty.
type Entry struct {
	V          int       `json:"v"`
	Kind       Kind      `json:"kind"`
	Time       time.Time `json:"time"`
	Doc        string    `json:"doc,omitempty"`
	Container  string    `json:"container,omitempty"`
	Receipt    string    `json:"receipt,omitempty"`
	Sender     string    `json:"sender,omitempty"`
	Recipients []string  `json:"recipients,omitempty"`
	Unit       string    `json:"unit,omitempty"`
	Status     string    `json:"status,omitempty"`
	Reasons    []string  `json:"reasons,omitempty"`
	Action     string    `json:"action,omitempty"`
	Serial     string    `json:"serial,omitempty"`
	Digest     string    `json:"digest,omitempty"`
	CRLs       []string  `json:"crls,omitempty"`
}

var (
	hexDigestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reasonRE    = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)
	serialRE    = regexp.MustCompile(`^[0-9a-f]{1,64}$`)
)

// Validate checks e against its kind: required fields present, fields the
// kind does not use empty, identifiers and digests well formed.
func (e *Entry) Validate() error {
	if e.V != Version {
		return fmt.Errorf("evidence: entry version %d (want %d)", e.V, Version)
	}
	if e.Time.IsZero() || e.Time.Location() != time.UTC {
		return errors.New("evidence: entry time missing or not in UTC")
	}
	type field struct {
		name string
		set  bool
	}
	all := []field{
		{"doc", e.Doc != ""}, {"container", e.Container != ""}, {"receipt", e.Receipt != ""},
		{"sender", e.Sender != ""}, {"recipients", e.Recipients != nil}, {"unit", e.Unit != ""},
		{"status", e.Status != ""}, {"reasons", e.Reasons != nil}, {"action", e.Action != ""},
		{"serial", e.Serial != ""}, {"digest", e.Digest != ""}, {"crls", e.CRLs != nil},
	}
	var required, optional []string
	switch e.Kind {
	case Accepted:
		required, optional = []string{"doc", "container", "sender", "recipients"}, []string{"receipt", "crls"}
	case Rejected:
		required, optional = []string{"container", "reasons"}, []string{"doc", "sender", "crls"}
	case Delivered:
		required = []string{"doc", "container", "unit"}
	case Status:
		required, optional = []string{"doc", "unit", "status"}, []string{"digest"}
	case UnitChange:
		required = []string{"unit", "action", "digest"}
	case Certificate:
		required, optional = []string{"action", "serial", "digest"}, []string{"unit"}
	case Trust:
		required = []string{"action", "digest"}
	case CRL:
		required, optional = []string{"action", "digest"}, []string{"serial"}
	default:
		return fmt.Errorf("evidence: unknown entry kind %q", e.Kind)
	}
	for _, f := range all {
		switch {
		case slices.Contains(required, f.name):
			if !f.set {
				return fmt.Errorf("evidence: %s entry without %s", e.Kind, f.name)
			}
		case slices.Contains(optional, f.name):
		default:
			if f.set {
				return fmt.Errorf("evidence: %s entry with %s", e.Kind, f.name)
			}
		}
	}
	if e.Doc != "" {
		if err := document.ID(e.Doc).Validate(); err != nil {
			return fmt.Errorf("evidence: %w", err)
		}
	}
	for name, d := range map[string]string{"container": e.Container, "receipt": e.Receipt, "digest": e.Digest} {
		if d != "" && !hexDigestRE.MatchString(d) {
			return fmt.Errorf("evidence: %s %q is not a lower-case hex SHA-256", name, d)
		}
	}
	for _, u := range append([]string{e.Sender, e.Unit}, e.Recipients...) {
		if u != "" {
			if err := document.UnitID(u).Validate(); err != nil {
				return fmt.Errorf("evidence: %w", err)
			}
		}
	}
	if e.Recipients != nil {
		if len(e.Recipients) == 0 {
			return errors.New("evidence: empty recipients")
		}
		seen := make(map[string]bool, len(e.Recipients))
		for _, r := range e.Recipients {
			if seen[r] {
				return fmt.Errorf("evidence: recipient %s twice", r)
			}
			seen[r] = true
		}
	}
	if e.Status != "" {
		if err := document.StatusCode(e.Status).Validate(); err != nil {
			return fmt.Errorf("evidence: %w", err)
		}
	}
	if e.Reasons != nil {
		if len(e.Reasons) == 0 {
			return errors.New("evidence: empty reasons")
		}
		for _, r := range e.Reasons {
			if !reasonRE.MatchString(r) || len(r) > 100 {
				return fmt.Errorf("evidence: reason %q is not a reason code", r)
			}
		}
	}
	if e.CRLs != nil {
		if len(e.CRLs) == 0 || len(e.CRLs) > 64 {
			return fmt.Errorf("evidence: %d CRLs (want 1 to 64, or none)", len(e.CRLs))
		}
		for i, d := range e.CRLs {
			if !hexDigestRE.MatchString(d) {
				return fmt.Errorf("evidence: CRL %q is not a lower-case hex SHA-256", d)
			}
			if i > 0 && e.CRLs[i-1] >= d {
				return errors.New("evidence: CRLs not sorted, or one twice")
			}
		}
	}
	if e.Action != "" && !slices.Contains(actions[e.Kind], e.Action) {
		return fmt.Errorf("evidence: %s entry with action %q (want one of %v)", e.Kind, e.Action, actions[e.Kind])
	}
	if e.Serial != "" && !serialRE.MatchString(e.Serial) {
		return fmt.Errorf("evidence: serial %q is not lower-case hexadecimal", e.Serial)
	}
	return nil
}

// Marshal validates e and returns its canonical encoding: compact JSON with
// the fields in the order of Entry, times in RFC 3339 UTC. The same decision
// always encodes to the same bytes, so the same leaf hash.
func (e *Entry) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("evidence: encode entry: %w", err)
	}
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("evidence: entry of %d bytes (max %d)", len(b), MaxEntrySize)
	}
	return b, nil
}

// ParseEntry decodes an entry from the log. It accepts only the canonical
// encoding Marshal produces (no unknown fields, no other spelling of the same
// entry), so an entry has exactly one byte form and one leaf hash.
func ParseEntry(data []byte) (*Entry, error) {
	if len(data) > MaxEntrySize {
		return nil, fmt.Errorf("evidence: entry of %d bytes (max %d)", len(data), MaxEntrySize)
	}
	var e Entry
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("evidence: entry: %w", err)
	}
	if dec.More() {
		return nil, errors.New("evidence: entry: trailing data")
	}
	again, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, data) {
		return nil, errors.New("evidence: entry is not in canonical form")
	}
	return &e, nil
}

// Key identifies the decision an entry records, so that a decision logged
// twice (a redelivery after a crash between the append and what recorded
// it, or two hubs racing on the same submission, each in its own log) is
// recognised as one: readers of the log group entries by Key. The time is
// part of the key only where it is the decision's own (the stream time of
// the message decided on, the same on every redelivery); an acceptance is
// one per document and container, whatever its time.
func (e *Entry) Key() string {
	switch e.Kind {
	case Accepted:
		return "accepted/" + e.Doc + "/" + e.Container
	case Rejected:
		return "rejected/" + e.Container + "/" + e.Sender + "/" + e.Doc + "/" + e.Time.UTC().Format(time.RFC3339Nano)
	case Delivered:
		return "delivered/" + e.Doc + "/" + e.Unit + "/" + e.Container
	case Status:
		return "status/" + e.Doc + "/" + e.Unit + "/" + e.Status + "/" + e.Time.UTC().Format(time.RFC3339Nano)
	case UnitChange:
		return "unit/" + e.Unit + "/" + e.Action + "/" + e.Digest
	case Certificate:
		return "certificate/" + e.Action + "/" + e.Serial + "/" + e.Digest
	case Trust, CRL:
		return string(e.Kind) + "/" + e.Action + "/" + e.Digest
	}
	return string(e.Kind) + "/" + e.Time.UTC().Format(time.RFC3339Nano)
}
