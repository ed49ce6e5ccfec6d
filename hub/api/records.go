package api

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// Records are the archive's documents as people may see them: every
// operation takes the identity it acts for and applies the rules of
// hub/auth. A document its caller may not see is ErrNotFound, exactly as
// one that does not exist, so that its existence does not leak.
type Records struct {
	Index   Index
	Archive Archive
	// Trust is the hub's trust configuration (roots and CRLs), which
	// verification uses.
	Trust *pki.Trust
	Now   func() time.Time // time.Now when nil
	// MaxVerifications bounds the verifications running at once, the
	// API's and the web UI's alike (an archived document re-verified, an
	// upload read and verified); one more is refused with ErrBusy rather
	// than queued. Zero: one per CPU.
	MaxVerifications int

	slotsOnce sync.Once
	slots     chan struct{}

	// CursorKey (32 bytes) seals the search cursors given to clients (see
	// cursor.go); when empty, a random key for the life of the process.
	CursorKey []byte

	keyOnce sync.Once
	aead    cipher.AEAD
	keyErr  error
}

// ErrBusy: every verification slot is taken. The API answers 503 with
// Retry-After.
var ErrBusy = fmt.Errorf("%w: the hub is verifying as many containers as it may at once; try again shortly", ErrUnavailable)

// busyRetryAfter is the Retry-After of ErrBusy, in seconds.
const busyRetryAfter = 2

// acquire takes a verification slot, or fails with ErrBusy.
func (rs *Records) acquire() (release func(), err error) {
	rs.slotsOnce.Do(func() {
		n := rs.MaxVerifications
		if n <= 0 {
			n = runtime.NumCPU()
		}
		rs.slots = make(chan struct{}, n)
	})
	select {
	case rs.slots <- struct{}{}:
		return func() { <-rs.slots }, nil
	default:
		return nil, ErrBusy
	}
}

func (rs *Records) now() time.Time {
	if rs.Now != nil {
		return rs.Now()
	}
	return time.Now()
}

// Search runs q as who may: records staff only ever search their own unit's
// documents (the query's Unit filter is forced to it, and a query for
// another unit finds nothing). Cursors, in and out, are sealed for who and
// the query (cursor.go).
func (rs *Records) Search(ctx context.Context, who *auth.Identity, q index.Query) (index.Page, error) {
	if who == nil {
		return index.Page{}, ErrUnauthorized
	}
	if !who.Can(auth.ReadAll) {
		scope := who.Scope()
		if q.Unit != "" {
			if err := q.Unit.Validate(); err != nil {
				return index.Page{}, fmt.Errorf("%w: unit: %v", ErrInvalid, err)
			}
		}
		if scope == "" || (q.Unit != "" && q.Unit != scope) {
			return index.Page{Items: []index.Summary{}}, nil
		}
		q.Unit = scope
	}
	if q.Cursor != "" {
		inner, err := rs.openCursor(who, q, q.Cursor)
		if err != nil {
			return index.Page{}, err
		}
		q.Cursor = inner
	}
	p, err := rs.Index.Search(ctx, q)
	if err != nil {
		return index.Page{}, err
	}
	if p.Items == nil {
		p.Items = []index.Summary{}
	}
	if p.NextCursor != "" {
		if p.NextCursor, err = rs.sealCursor(who, q, p.NextCursor); err != nil {
			return index.Page{}, err
		}
	}
	return p, nil
}

// Document is one document as the API shows it: its index entry (metadata,
// files, signer, archive keys, recipients with their delivery state, status
// history) and a summary of its signature.
type Document struct {
	*index.Detail
	Signature SignatureSummary `json:"signature"`
}

// SignatureSummary is what the hub recorded of a document's signature when
// it accepted it, after verifying it. A check now is Records.Verify.
type SignatureSummary struct {
	Officer     string          `json:"officer"`  // signer.full_name on the document
	Position    string          `json:"position"` // signer.position, with the competence
	CertSubject string          `json:"cert_subject_cn"`
	CertSerial  string          `json:"cert_serial"`
	Unit        document.UnitID `json:"unit"` // the unit the certificate belongs to
	UnitName    string          `json:"unit_name,omitempty"`
	SigningTime time.Time       `json:"signing_time,omitzero"` // the signer's own claim
	AcceptedAt  time.Time       `json:"accepted_at"`           // the hub's time of verification and acceptance
	// VerifiedOnAcceptance: the hub accepts only containers that verify, so
	// this is true for every archived document.
	VerifiedOnAcceptance bool `json:"verified_on_acceptance"`
}

// Document returns a document who may see, or ErrNotFound.
func (rs *Records) Document(ctx context.Context, who *auth.Identity, id document.ID) (*Document, error) {
	if who == nil {
		return nil, ErrUnauthorized
	}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	d, err := rs.Index.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !who.Sees(d.Doc.From, d.Doc.To) {
		return nil, fmt.Errorf("%w: document %s", ErrNotFound, id)
	}
	if d.Recipients == nil {
		d.Recipients = []index.Recipient{}
	}
	if d.History == nil {
		d.History = []index.StatusEntry{}
	}
	if d.Files == nil {
		d.Files = []index.File{}
	}
	sig := SignatureSummary{Officer: d.Doc.Signer.FullName, Position: strings.TrimSpace(d.Doc.Signer.Competence + " " + d.Doc.Signer.Position),
		CertSubject: d.Signer.SubjectCN, CertSerial: d.Signer.Serial, Unit: d.Signer.Unit, SigningTime: d.Signer.SigningTime,
		AcceptedAt: d.AcceptedAt, VerifiedOnAcceptance: true}
	if u, err := rs.Index.GetUnit(ctx, d.Signer.Unit); err == nil {
		sig.UnitName = u.Name
	}
	return &Document{Detail: d, Signature: sig}, nil
}

// Container returns the archived container of a document, for those who may
// read content.
func (rs *Records) Container(ctx context.Context, who *auth.Identity, id document.ID) ([]byte, *Document, error) {
	d, err := rs.Document(ctx, who, id)
	if err != nil {
		return nil, nil, err
	}
	if !who.Can(auth.ReadContent) {
		return nil, nil, fmt.Errorf("%w: the %s role sees metadata and reports, not content", ErrForbidden, who.User.Role)
	}
	b, _, err := rs.Archive.Get(ctx, d.ArchiveKey)
	if err != nil {
		return nil, nil, err
	}
	return b, d, nil
}

// Receipt returns the hub's signed receipt of a document.
func (rs *Records) Receipt(ctx context.Context, who *auth.Identity, id document.ID) ([]byte, *Document, error) {
	d, err := rs.Document(ctx, who, id)
	if err != nil {
		return nil, nil, err
	}
	if !who.Can(auth.Verify) {
		return nil, nil, ErrForbidden
	}
	b, _, err := rs.Archive.Get(ctx, d.ReceiptKey)
	if err != nil {
		return nil, nil, err
	}
	return b, d, nil
}

// File returns one payload file of a document (its name without files/)
// and its media type as the signed manifest declares it.
func (rs *Records) File(ctx context.Context, who *auth.Identity, id document.ID, name string) ([]byte, string, error) {
	rc, info, err := rs.OpenFile(ctx, who, id, name)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	b := make([]byte, info.Size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, "", fmt.Errorf("api: read %s of %s: %w", name, id, err)
	}
	// The end, where the CRC-32 is checked.
	if n, err := rc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return nil, "", fmt.Errorf("api: read %s of %s: longer than declared or damaged (%v)", name, id, err)
	}
	return b, info.MediaType, nil
}

// FileInfo is what OpenFile tells of a payload file.
type FileInfo struct {
	Size      int64
	MediaType string // as the signed manifest declares it
}

// OpenFile opens one payload file of a document (its name without files/)
// to read in a stream: only that file is inflated, never beyond its size,
// within the container limits.
func (rs *Records) OpenFile(ctx context.Context, who *auth.Identity, id document.ID, name string) (io.ReadCloser, FileInfo, error) {
	if !who.Can(auth.ReadContent) {
		if _, err := rs.Document(ctx, who, id); err != nil {
			return nil, FileInfo{}, err
		}
		return nil, FileInfo{}, fmt.Errorf("%w: the %s role sees metadata and reports, not content", ErrForbidden, who.User.Role)
	}
	b, d, err := rs.Container(ctx, who, id)
	if err != nil {
		return nil, FileInfo{}, err
	}
	if !slices.ContainsFunc(d.Files, func(f index.File) bool { return f.Name == name }) {
		return nil, FileInfo{}, fmt.Errorf("%w: document %s has no file %q", ErrNotFound, id, name)
	}
	e, err := container.OpenFile(b, container.DefaultLimits, container.FilesDir+name)
	if errors.Is(err, container.ErrNoSuchFile) {
		return nil, FileInfo{}, fmt.Errorf("%w: document %s has no file %q", ErrNotFound, id, name)
	}
	if err != nil {
		return nil, FileInfo{}, fmt.Errorf("api: open archived container %s: %w", id, err)
	}
	rc, err := e.Open()
	if err != nil {
		return nil, FileInfo{}, fmt.Errorf("api: open archived container %s: %w", id, err)
	}
	return rc, FileInfo{Size: e.Size, MediaType: e.MediaType}, nil
}

// Verification is the result of verifying a container now, with its
// receipt, and for an archived document, that the archive still holds what
// the hub accepted.
type Verification struct {
	Valid bool `json:"valid"`
	// CheckedAt is when the check ran; the signer's chain was checked at
	// Container.Signature.CheckedAt (now, or the receipt's acceptance time).
	CheckedAt time.Time                `json:"checked_at"`
	Container *container.Report        `json:"container"`
	Receipt   *container.ReceiptReport `json:"receipt,omitempty"`
	Archive   *ArchiveCheck            `json:"archive,omitempty"`
}

// ArchiveCheck compares the archive with the index.
type ArchiveCheck struct {
	ContainerKey  string `json:"container_key"`
	ReceiptKey    string `json:"receipt_key"`
	IndexedSHA256 string `json:"indexed_sha256"`
	// Matches: the archived container is byte for byte the one indexed and
	// receipted at acceptance.
	Matches  bool     `json:"matches"`
	Problems []string `json:"problems,omitempty"`
}

// At says when to check the signer's chain: AtNow (the default),
// AtAccepted (the acceptance time in the hub's receipt, once the receipt
// verifies) or an RFC 3339 time.
const (
	AtNow      = "now"
	AtAccepted = "accepted"
)

func parseAt(at string) (time.Time, bool, error) {
	switch at {
	case "", AtNow:
		return time.Time{}, false, nil
	case AtAccepted:
		return time.Time{}, true, nil
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("%w: at %q: want now, accepted or an RFC 3339 time", ErrInvalid, at)
	}
	return t, false, nil
}

// check verifies a container and an optional receipt.
func (rs *Records) check(data, receipt []byte, at string) (*Verification, error) {
	t, accepted, err := parseAt(at)
	if err != nil {
		return nil, err
	}
	now := rs.now()
	v := &Verification{CheckedAt: now.UTC()}
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	if receipt != nil {
		v.Receipt = container.VerifyReceipt(receipt, sum, container.Options{Trust: rs.Trust, At: now})
	}
	switch {
	case accepted && v.Receipt != nil && v.Receipt.Valid && v.Receipt.Receipt != nil:
		t = v.Receipt.Receipt.AcceptedAt
	case accepted:
		return nil, fmt.Errorf("%w: at=accepted needs a receipt that verifies", ErrInvalid)
	case t.IsZero():
		t = now
	}
	_, v.Container = container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: rs.Trust, At: t})
	v.Valid = v.Container.Valid && (v.Receipt == nil || v.Receipt.Valid)
	return v, nil
}

// Verify verifies an archived document's container now, as the hub's trust
// stands, with its receipt, and checks that the archive holds what was
// accepted.
func (rs *Records) Verify(ctx context.Context, who *auth.Identity, id document.ID, at string) (*Verification, error) {
	d, err := rs.Document(ctx, who, id)
	if err != nil {
		return nil, err
	}
	if !who.Can(auth.Verify) {
		return nil, ErrForbidden
	}
	release, err := rs.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	ac := &ArchiveCheck{ContainerKey: d.ArchiveKey, ReceiptKey: d.ReceiptKey, IndexedSHA256: d.ContainerSHA256}
	data, err := rs.readAll(ctx, d.ArchiveKey)
	if err != nil {
		var de *digestError
		if !errors.As(err, &de) {
			return nil, err
		}
		// Verify what is there: the report says what changed.
		ac.Problems = append(ac.Problems, "the archived container differs from the digest recorded when it was stored")
	}
	receipt, err := rs.readAll(ctx, d.ReceiptKey)
	var de *digestError
	switch {
	case errors.Is(err, archive.ErrNotFound):
		ac.Problems = append(ac.Problems, "the receipt is missing from the archive")
		receipt = nil
	case errors.As(err, &de):
		ac.Problems = append(ac.Problems, "the archived receipt differs from the digest recorded when it was stored")
	case err != nil:
		return nil, err
	}
	v, err := rs.check(data, receipt, at)
	if err != nil {
		return nil, err
	}
	if v.Receipt == nil {
		v.Receipt = &container.ReceiptReport{Reasons: reason.List{{Code: reason.ReceiptInvalid, Message: "no receipt in the archive"}}}
	}
	if rc := v.Receipt.Receipt; rc != nil && rc.DocumentID != d.Doc.ID {
		v.Receipt.Reasons.Add(reason.ReceiptInvalid, fmt.Sprintf("the receipt is for document %s", rc.DocumentID))
		v.Receipt.Valid = false
	}
	if v.Container.ContainerSHA256 != d.ContainerSHA256 {
		ac.Problems = append(ac.Problems, fmt.Sprintf("the archived container's SHA-256 is %s, the index recorded %s at acceptance",
			v.Container.ContainerSHA256, d.ContainerSHA256))
	}
	if v.Container.DocumentID != "" && v.Container.DocumentID != d.Doc.ID {
		ac.Problems = append(ac.Problems, fmt.Sprintf("the archived container is document %s", v.Container.DocumentID))
	}
	ac.Matches = len(ac.Problems) == 0
	v.Archive = ac
	v.Valid = v.Container.Valid && v.Receipt.Valid && ac.Matches
	return v, nil
}

// VerifyUpload verifies a container (and receipt) someone brought: an
// auditor's check of a copy, with the hub's trust. read reads the upload
// (the container, an optional receipt and the time to check at); it runs
// holding a verification slot, so that neither the uploads held in memory
// nor their verifications exceed MaxVerifications (ErrBusy, before read).
func (rs *Records) VerifyUpload(who *auth.Identity, read func() (data, receipt []byte, at string, err error)) (*Verification, error) {
	if !who.Can(auth.Verify) {
		return nil, ErrForbidden
	}
	release, err := rs.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	data, receipt, at, err := read()
	if err != nil {
		return nil, err
	}
	return rs.check(data, receipt, at)
}

type digestError struct{ err error }

func (e *digestError) Error() string { return e.err.Error() }

// readAll reads an archived object. When the content differs from the
// digest the archive recorded, it returns the content and a *digestError:
// verification reports on tampered bytes rather than failing.
func (rs *Records) readAll(ctx context.Context, key string) ([]byte, error) {
	rc, obj, err := rs.Archive.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.Grow(int(min(obj.Size, container.DefaultLimits.MaxSize)))
	_, err = buf.ReadFrom(rc)
	switch {
	case err == nil:
		return buf.Bytes(), nil
	case errors.Is(err, archive.ErrUnavailable), errors.Is(err, archive.ErrNotFound), ctx.Err() != nil:
		return nil, err
	case obj.Size >= 0 && int64(buf.Len()) == obj.Size:
		return buf.Bytes(), &digestError{err}
	}
	return nil, err
}

// UnitView is a registered unit with its state and certificate as the hub's
// trust sees them now, and its counters for those who may see them.
type UnitView struct {
	index.Unit
	// State is active, disabled (edx unit disable) or revoked (its
	// certificate is revoked by a CRL in force).
	State       string          `json:"state"`
	Certificate *CertView       `json:"certificate,omitempty"`
	Counters    *index.Counters `json:"counters,omitempty"`
}

// Unit states.
const (
	UnitActive   = "active"
	UnitDisabled = "disabled"
	UnitRevoked  = "revoked"
)

// CertView is a unit's certificate as the hub's trust sees it now.
type CertView struct {
	Serial   string      `json:"serial"`
	Subject  string      `json:"subject"`
	Issuer   string      `json:"issuer"`
	NotAfter time.Time   `json:"not_after"`
	Valid    bool        `json:"valid"`             // chains, in its validity, not revoked
	Reasons  reason.List `json:"reasons,omitempty"` // why not
}

// view adds a unit's state and certificate, checked now against the trust.
func (rs *Records) view(u index.Unit) UnitView {
	v := UnitView{Unit: u, State: UnitActive}
	if u.Disabled {
		v.State = UnitDisabled
	}
	if u.CertPEM == "" {
		// Registered before the hub kept certificates: the serial alone.
		if u.CertSerial != "" {
			v.Certificate = &CertView{Serial: u.CertSerial, NotAfter: u.CertNotAfter}
		}
		return v
	}
	certs, err := pki.ParseCertificates([]byte(u.CertPEM))
	if err != nil {
		v.Certificate = &CertView{Serial: u.CertSerial, NotAfter: u.CertNotAfter, Reasons: reason.List{{Code: reason.SignatureMalformed, Message: err.Error()}}}
		return v
	}
	c := certs[0]
	cv := &CertView{Serial: c.SerialNumber.Text(16), Subject: pki.SubjectString(c.Subject), Issuer: pki.SubjectString(c.Issuer), NotAfter: c.NotAfter.UTC()}
	if rs.Trust != nil {
		_, cv.Reasons = rs.Trust.Check(c, certs[1:], rs.now())
	}
	cv.Valid = rs.Trust != nil && len(cv.Reasons) == 0
	if cv.Reasons.Has(reason.SignatureRevoked) {
		v.State = UnitRevoked
	}
	v.Certificate = cv
	return v
}

// Units lists the registered units; with counters, each unit's counters that
// who may see (every unit for archivists, auditors and admins; their own
// for records staff).
func (rs *Records) Units(ctx context.Context, who *auth.Identity, counters bool) ([]UnitView, error) {
	us, err := rs.Index.ListUnits(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]UnitView, len(us))
	for i, u := range us {
		out[i] = rs.view(u)
		if counters && who.SeesUnit(u.ID) {
			c, err := rs.Index.UnitCounters(ctx, u.ID)
			if err != nil {
				return nil, err
			}
			out[i].Counters = &c
		}
	}
	return out, nil
}

// Unit returns a unit with its counters; ErrForbidden for records staff of
// another unit.
func (rs *Records) Unit(ctx context.Context, who *auth.Identity, id document.UnitID) (UnitView, error) {
	if err := id.Validate(); err != nil {
		return UnitView{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	u, err := rs.Index.GetUnit(ctx, id)
	if err != nil {
		return UnitView{}, err
	}
	if !who.SeesUnit(id) {
		return UnitView{}, fmt.Errorf("%w: unit %s is not yours", ErrForbidden, id)
	}
	c, err := rs.Index.UnitCounters(ctx, id)
	if err != nil {
		return UnitView{}, err
	}
	v := rs.view(u)
	v.Counters = &c
	return v, nil
}

// Overdue lists the documents the unit received, not finished, whose due
// date has passed; earliest due first.
func (rs *Records) Overdue(ctx context.Context, who *auth.Identity, id document.UnitID) ([]index.Summary, error) {
	if _, err := rs.Unit(ctx, who, id); err != nil {
		return nil, err
	}
	out, err := rs.Index.Overdue(ctx, id, rs.now())
	if out == nil {
		out = []index.Summary{}
	}
	return out, err
}

// pendingScan bounds how many received documents Pending looks through.
const pendingScan = 2000

// Pending lists up to limit documents the unit received and has not
// finished (no 06 finished, 02 refused or 13 cancelled from it), newest
// first, among its latest pendingScan received documents.
func (rs *Records) Pending(ctx context.Context, who *auth.Identity, id document.UnitID, limit int) ([]index.Summary, error) {
	if _, err := rs.Unit(ctx, who, id); err != nil {
		return nil, err
	}
	out := []index.Summary{}
	q := index.Query{To: id, Limit: 100}
	for scanned := 0; scanned < pendingScan; {
		p, err := rs.Index.Search(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, s := range p.Items {
			d, err := rs.Index.Get(ctx, s.ID)
			if err != nil {
				return nil, err
			}
			if i := slices.IndexFunc(d.Recipients, func(r index.Recipient) bool { return r.Unit == id }); i >= 0 && !d.Recipients[i].Done {
				out = append(out, s)
				if len(out) >= limit {
					return out, nil
				}
			}
		}
		scanned += len(p.Items)
		if p.NextCursor == "" {
			break
		}
		q.Cursor = p.NextCursor
	}
	return out, nil
}

// vietnam is the zone dates are meant in (UTC+7, no daylight saving).
var vietnam = time.FixedZone("ICT", 7*3600)

// ParseQuery reads a search from URL parameters (the API's and the web
// form's): q, from, to, unit, type, number, signer, status, since, until,
// sort, limit, cursor. since and until are acceptance dates (YYYY-MM-DD,
// Vietnam time, both days included) or RFC 3339 times (until excluded).
func ParseQuery(v url.Values) (index.Query, error) {
	q := index.Query{
		Text: v.Get("q"), From: document.UnitID(strings.TrimSpace(v.Get("from"))), To: document.UnitID(strings.TrimSpace(v.Get("to"))),
		Unit: document.UnitID(strings.TrimSpace(v.Get("unit"))), Type: v.Get("type"), Number: v.Get("number"), Signer: v.Get("signer"),
		Status: document.StatusCode(strings.TrimSpace(v.Get("status"))), Sort: v.Get("sort"), Cursor: v.Get("cursor"),
	}
	var err error
	if s := strings.TrimSpace(v.Get("since")); s != "" {
		if q.Since, err = parseBound(s, false); err != nil {
			return q, fmt.Errorf("%w: since: %v", ErrInvalid, err)
		}
	}
	if s := strings.TrimSpace(v.Get("until")); s != "" {
		if q.Until, err = parseBound(s, true); err != nil {
			return q, fmt.Errorf("%w: until: %v", ErrInvalid, err)
		}
	}
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit < 1 {
			return q, fmt.Errorf("%w: limit %q: want a positive number", ErrInvalid, s)
		}
	}
	return q, nil
}

func parseBound(s string, end bool) (time.Time, error) {
	if len(s) == len(time.DateOnly) {
		d, err := time.ParseInLocation(time.DateOnly, s, vietnam)
		if err != nil {
			return d, err
		}
		if end {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	return time.Parse(time.RFC3339, s)
}
