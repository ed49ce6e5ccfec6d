// Package outbox accepts documents for sending: it checks the metadata and
// files a document system hands over, completes the metadata (id, sender),
// builds and signs the container with the unit's key, or checks a container
// the document system signed itself, and writes it to the spool. A document
// is accepted when Submit returns without error, and not before.
package outbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// Kind says why a submission was refused.
type Kind int

const (
	Invalid       Kind = iota + 1 // malformed or incomplete input: fix and retry
	TooLarge                      // over the size limit
	Unprocessable                 // well-formed, but not this unit's to send (wrong sender, bad signature)
)

// Error is a refused submission with field-level problems or reason codes.
type Error struct {
	Kind     Kind
	Message  string
	Problems document.Problems
	Reasons  reason.List
}

func (e *Error) Error() string {
	switch {
	case len(e.Problems) > 0:
		return "outbox: " + e.Message + ": " + e.Problems.Error()
	case len(e.Reasons) > 0:
		return "outbox: " + e.Message + ": " + e.Reasons.Error()
	}
	return "outbox: " + e.Message
}

// Submission is what a document system hands over: metadata and files, or a
// container it built and signed itself.
type Submission struct {
	Meta           []byte           // document.json; id and from may be left out
	Files          []container.File // the payload files
	Container      []byte           // a prebuilt signed container, instead of Meta and Files
	Source         string           // "api", "folder:<name>"
	IdempotencyKey string
	// FromPacket marks the submission of an edXML packet (agent/packets):
	// its files include the packet itself, under the name edXML keeps for
	// it (files/original.edxml), which other submissions may not use.
	FromPacket bool
}

// Spool is where accepted documents go (agent/spool).
type Spool interface {
	Add(ctx context.Context, e spool.Entry) (*spool.Record, bool, error)
}

// Outbox checks, signs and spools submissions.
type Outbox struct {
	unit    document.UnitID
	signer  *pki.Signer
	trust   *pki.Trust
	spool   Spool
	maxSize int64
	now     func() time.Time
}

// New returns an outbox for unit. The signer's certificate must belong to
// the unit; maxSize bounds a container (zero: container.DefaultLimits).
func New(unit document.UnitID, signer *pki.Signer, trust *pki.Trust, sp Spool, maxSize int64) (*Outbox, error) {
	if err := unit.Validate(); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if signer == nil || trust == nil || sp == nil {
		return nil, errors.New("outbox: signer, trust and spool are required")
	}
	u, err := pki.UnitOf(signer.Cert())
	if err != nil {
		return nil, fmt.Errorf("outbox: signing certificate: %w", err)
	}
	if u != unit {
		return nil, fmt.Errorf("outbox: the signing certificate belongs to unit %s, this agent is %s", u, unit)
	}
	if maxSize <= 0 {
		maxSize = container.DefaultLimits.MaxSize
	}
	return &Outbox{unit: unit, signer: signer, trust: trust, spool: sp, maxSize: maxSize, now: time.Now}, nil
}

// Unit is the unit the outbox sends for.
func (o *Outbox) Unit() document.UnitID { return o.unit }

// MaxSize is the largest container accepted.
func (o *Outbox) MaxSize() int64 { return o.maxSize }

// Submit checks a submission, signs it (unless prebuilt) and spools it. It
// returns the spooled record and whether it is new: a repeated submission
// (same id with the same metadata and files, or the same idempotency key)
// returns the document spooled the first time. Refusals are *Error.
func (o *Outbox) Submit(ctx context.Context, s Submission) (*spool.Record, bool, error) {
	var (
		raw      []byte
		manifest []byte
		d        *document.Document
		err      error
	)
	if s.Container != nil {
		if s.Meta != nil || len(s.Files) > 0 {
			return nil, false, &Error{Kind: Invalid, Message: "a prebuilt container comes alone",
				Problems: document.Problems{{Field: "container", Message: "send either a container or metadata with files, not both"}}}
		}
		raw = s.Container
		if d, manifest, err = o.checkContainer(raw); err != nil {
			return nil, false, err
		}
	} else {
		if raw, d, manifest, err = o.build(s); err != nil {
			return nil, false, err
		}
	}
	ms := sha256.Sum256(manifest)
	cs := sha256.Sum256(raw)
	rec, created, err := o.spool.Add(ctx, spool.Entry{
		ID: d.ID, Container: raw, SHA256: hex.EncodeToString(cs[:]), ManifestSHA256: hex.EncodeToString(ms[:]),
		To: d.To, Subject: d.Subject, Source: s.Source, IdempotencyKey: s.IdempotencyKey, EdXMLID: edXMLID(d),
	})
	if err != nil {
		return nil, false, err
	}
	return rec, created, nil
}

// build completes, checks and signs metadata and files.
func (o *Outbox) build(s Submission) ([]byte, *document.Document, []byte, error) {
	var p document.Problems
	size := int64(len(s.Meta))
	for _, f := range s.Files {
		size += int64(len(f.Data))
	}
	if size > o.maxSize {
		return nil, nil, nil, &Error{Kind: TooLarge, Message: fmt.Sprintf("%d bytes of metadata and files exceed the limit of %d", size, o.maxSize)}
	}
	if len(s.Meta) == 0 {
		p.Add("metadata", "required: the document's metadata (document.json)")
	}
	if len(s.Files) == 0 {
		p.Add("files", "at least one file is required")
	}
	var d *document.Document
	if len(s.Meta) > 0 {
		var err error
		if d, err = document.Parse(s.Meta); err != nil {
			p.Add("metadata", err.Error())
		}
	}
	if d == nil {
		return nil, nil, nil, &Error{Kind: Invalid, Message: "invalid submission", Problems: p}
	}
	meta := s.Meta
	changed := false
	if d.ID == "" {
		d.ID, changed = document.NewID(o.now()), true
	}
	if d.From == "" {
		d.From, changed = o.unit, true
	}
	if d.From != o.unit {
		return nil, nil, nil, &Error{Kind: Unprocessable, Message: "wrong sender",
			Problems: document.Problems{{Field: "from", Message: fmt.Sprintf("this agent sends for unit %s, not %s", o.unit, d.From)}}}
	}
	if err := d.Validate(); err != nil {
		var ps document.Problems
		if errors.As(err, &ps) {
			p = append(p, ps...)
		} else {
			p.Add("metadata", err.Error())
		}
	}
	seen := map[string]bool{}
	for i, f := range s.Files {
		if seen[f.Name] {
			p.Add(fmt.Sprintf("files[%d]", i), fmt.Sprintf("file name %q given twice", f.Name))
		}
		seen[f.Name] = true
		if _, err := container.Prepare(validMeta, []container.File{f}); err != nil {
			p.Add(fmt.Sprintf("files[%d]", i), err.Error())
		}
		if f.Name == edxml.OriginalFile && !s.FromPacket {
			p.Add(fmt.Sprintf("files[%d]", i), fmt.Sprintf("the name %s is kept for the edXML packet a document came from: send the packet itself, or rename the file", edxml.OriginalFile))
		}
	}
	if len(p) > 0 {
		return nil, nil, nil, &Error{Kind: Invalid, Message: "invalid submission", Problems: p}
	}
	if changed {
		var err error
		if meta, err = d.Marshal(); err != nil {
			return nil, nil, nil, fmt.Errorf("outbox: %w", err)
		}
	}
	u, err := container.Prepare(meta, s.Files)
	if err != nil {
		return nil, nil, nil, &Error{Kind: Invalid, Message: "invalid submission", Problems: document.Problems{{Field: "files", Message: err.Error()}}}
	}
	sig, err := container.SignDetached(u.Manifest, o.signer)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("outbox: sign %s: %w", d.ID, err)
	}
	raw, err := u.Seal(sig)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("outbox: %w", err)
	}
	if int64(len(raw)) > o.maxSize {
		return nil, nil, nil, &Error{Kind: TooLarge, Message: fmt.Sprintf("the container of %d bytes exceeds the limit of %d", len(raw), o.maxSize)}
	}
	return raw, d, u.Manifest, nil
}

// edXMLID is the document's edXML DocumentId, as the document system
// speaking edXML knows it.
func edXMLID(d *document.Document) string {
	if d.EdXMLID != "" {
		return d.EdXMLID
	}
	return edxml.DocumentID(d)
}

// validMeta lets build check one file name at a time with container.Prepare.
var validMeta = func() []byte {
	d := document.Template(time.Unix(1700000000, 0))
	b, _ := d.Marshal()
	return b
}()

func onlyTransient(rs reason.List) bool {
	for _, r := range rs {
		if !r.Code.Transient() {
			return false
		}
	}
	return len(rs) > 0
}

// checkContainer verifies a prebuilt container as the hub will.
func (o *Outbox) checkContainer(raw []byte) (*document.Document, []byte, error) {
	if int64(len(raw)) > o.maxSize {
		return nil, nil, &Error{Kind: TooLarge, Message: fmt.Sprintf("the container of %d bytes exceeds the limit of %d", len(raw), o.maxSize)}
	}
	lim := container.DefaultLimits
	lim.MaxSize = o.maxSize
	c, rep := container.VerifyBytes(raw, lim, container.Options{Trust: o.trust, At: o.now()})
	if c == nil {
		return nil, nil, &Error{Kind: Invalid, Message: "not a readable container", Reasons: rep.Reasons}
	}
	if c.Meta.From != o.unit {
		return nil, nil, &Error{Kind: Unprocessable, Message: "wrong sender",
			Problems: document.Problems{{Field: "from", Message: fmt.Sprintf("this agent sends for unit %s, not %s", o.unit, c.Meta.From)}},
			Reasons:  rep.Reasons}
	}
	if !rep.Valid && !onlyTransient(rep.Reasons) {
		return nil, nil, &Error{Kind: Unprocessable, Message: "the container does not verify", Problems: rep.Problems, Reasons: rep.Reasons}
	}
	// A stale CRL says nothing about the document: the hub decides, and
	// holds it until it has a current CRL.
	return c.Meta, c.Manifest, nil
}
