package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Search runs q as who may: records staff only ever search their own unit's
// documents (the query's Unit filter is forced to it, and a query for
// another unit finds nothing). Cursors, in and out, are sealed for who and
// the query (cursor.go).
func (svc *Service) Search(ctx context.Context, who *auth.Identity, q index.Query) (index.Page, error) {
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
		inner, err := svc.openCursor(who, q, q.Cursor)
		if err != nil {
			return index.Page{}, err
		}
		q.Cursor = inner
	}
	p, err := svc.d.Index.Search(ctx, q)
	if err != nil {
		return index.Page{}, err
	}
	if p.Items == nil {
		p.Items = []index.Summary{}
	}
	if p.NextCursor != "" {
		if p.NextCursor, err = svc.sealCursor(who, q, p.NextCursor); err != nil {
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
// it accepted it, after verifying it. A check now is Service.Verify.
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
func (svc *Service) Document(ctx context.Context, who *auth.Identity, id document.ID) (*Document, error) {
	if who == nil {
		return nil, ErrUnauthorized
	}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	d, err := svc.d.Index.Get(ctx, id)
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
	if u, err := svc.unit(ctx, d.Signer.Unit); err == nil {
		sig.UnitName = u.Name
	}
	return &Document{Detail: d, Signature: sig}, nil
}

// Container returns the archived container of a document, for those who may
// read content.
func (svc *Service) Container(ctx context.Context, who *auth.Identity, id document.ID) ([]byte, *Document, error) {
	d, err := svc.Document(ctx, who, id)
	if err != nil {
		return nil, nil, err
	}
	if !who.Can(auth.ReadContent) {
		return nil, nil, fmt.Errorf("%w: the %s role sees metadata and reports, not content", ErrForbidden, who.User.Role)
	}
	b, _, err := svc.d.Archive.Get(ctx, d.ArchiveKey)
	if err != nil {
		return nil, nil, err
	}
	return b, d, nil
}

// Receipt returns the hub's signed receipt of a document.
func (svc *Service) Receipt(ctx context.Context, who *auth.Identity, id document.ID) ([]byte, *Document, error) {
	d, err := svc.Document(ctx, who, id)
	if err != nil {
		return nil, nil, err
	}
	if !who.Can(auth.Verify) {
		return nil, nil, ErrForbidden
	}
	b, _, err := svc.d.Archive.Get(ctx, d.ReceiptKey)
	if err != nil {
		return nil, nil, err
	}
	return b, d, nil
}

// File returns one payload file of a document (its name without files/)
// and its media type as the signed manifest declares it.
func (svc *Service) File(ctx context.Context, who *auth.Identity, id document.ID, name string) ([]byte, string, error) {
	rc, info, err := svc.OpenFile(ctx, who, id, name)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	b := make([]byte, info.Size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, "", fmt.Errorf("service: read %s of %s: %w", name, id, err)
	}
	// The end, where the CRC-32 is checked.
	if n, err := rc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return nil, "", fmt.Errorf("service: read %s of %s: longer than declared or damaged (%v)", name, id, err)
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
func (svc *Service) OpenFile(ctx context.Context, who *auth.Identity, id document.ID, name string) (io.ReadCloser, FileInfo, error) {
	if !who.Can(auth.ReadContent) {
		if _, err := svc.Document(ctx, who, id); err != nil {
			return nil, FileInfo{}, err
		}
		return nil, FileInfo{}, fmt.Errorf("%w: the %s role sees metadata and reports, not content", ErrForbidden, who.User.Role)
	}
	b, d, err := svc.Container(ctx, who, id)
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
		return nil, FileInfo{}, fmt.Errorf("service: open archived container %s: %w", id, err)
	}
	rc, err := e.Open()
	if err != nil {
		return nil, FileInfo{}, fmt.Errorf("service: open archived container %s: %w", id, err)
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
func (svc *Service) check(data, receipt []byte, at string) (*Verification, error) {
	t, accepted, err := parseAt(at)
	if err != nil {
		return nil, err
	}
	now := svc.now()
	v := &Verification{CheckedAt: now.UTC()}
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	if receipt != nil {
		v.Receipt = container.VerifyReceipt(receipt, sum, container.Options{Trust: svc.d.Trust, At: now})
	}
	switch {
	case accepted && v.Receipt != nil && v.Receipt.Valid && v.Receipt.Receipt != nil:
		t = v.Receipt.Receipt.AcceptedAt
	case accepted:
		return nil, fmt.Errorf("%w: at=accepted needs a receipt that verifies", ErrInvalid)
	case t.IsZero():
		t = now
	}
	_, v.Container = container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: svc.d.Trust, At: t})
	v.Valid = v.Container.Valid && (v.Receipt == nil || v.Receipt.Valid)
	return v, nil
}

// Verify verifies an archived document's container now, as the hub's trust
// stands, with its receipt, and checks that the archive holds what was
// accepted.
func (svc *Service) Verify(ctx context.Context, who *auth.Identity, id document.ID, at string) (*Verification, error) {
	d, err := svc.Document(ctx, who, id)
	if err != nil {
		return nil, err
	}
	if !who.Can(auth.Verify) {
		return nil, ErrForbidden
	}
	release, err := svc.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	ac := &ArchiveCheck{ContainerKey: d.ArchiveKey, ReceiptKey: d.ReceiptKey, IndexedSHA256: d.ContainerSHA256}
	data, err := svc.readAll(ctx, d.ArchiveKey)
	if err != nil {
		var de *digestError
		if !errors.As(err, &de) {
			return nil, err
		}
		// Verify what is there: the report says what changed.
		ac.Problems = append(ac.Problems, "the archived container differs from the digest recorded when it was stored")
	}
	receipt, err := svc.readAll(ctx, d.ReceiptKey)
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
	v, err := svc.check(data, receipt, at)
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

// MaxUpload bounds an uploaded container and its receipt.
var MaxUpload = container.DefaultLimits.MaxSize + 1<<20

// VerifyUpload verifies a container (and receipt) someone brought: an
// auditor's check of a copy, with the hub's trust. read reads the upload
// (the container, an optional receipt and the time to check at); it runs
// holding a verification slot, so that neither the uploads held in memory
// nor their verifications exceed MaxVerifications (ErrBusy, before read).
func (svc *Service) VerifyUpload(who *auth.Identity, read func() (data, receipt []byte, at string, err error)) (*Verification, error) {
	if !who.Can(auth.Verify) {
		return nil, ErrForbidden
	}
	release, err := svc.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	data, receipt, at, err := read()
	if err != nil {
		return nil, err
	}
	return svc.check(data, receipt, at)
}

type digestError struct{ err error }

func (e *digestError) Error() string { return e.err.Error() }

// readAll reads an archived object. When the content differs from the
// digest the archive recorded, it returns the content and a *digestError:
// verification reports on tampered bytes rather than failing.
func (svc *Service) readAll(ctx context.Context, key string) ([]byte, error) {
	rc, obj, err := svc.d.Archive.Open(ctx, key)
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
