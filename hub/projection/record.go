package projection

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// Reader reads archived objects (hub/archive.Store).
type Reader interface {
	Get(ctx context.Context, key string) ([]byte, archive.Object, error)
}

// Archive reads and lists archived objects (hub/archive.Store).
type Archive interface {
	Reader
	List(ctx context.Context, prefix string) iter.Seq2[archive.Object, error]
}

// Record is the index entry of an accepted container: its metadata, files,
// signer and where it and its receipt are archived. The pipeline builds it
// at acceptance (and publishes it as the accepted event); a rebuild builds
// the same record from the archive alone (Document).
func Record(c *container.Container, rep *container.Report, rc *container.Receipt, receiptKey string) index.Record {
	rec := index.Record{
		Doc: *c.Meta, RawMeta: c.MetaRaw, ContainerSHA256: rep.ContainerSHA256, Size: int64(rep.Size),
		ArchiveKey: rc.ArchiveKey, ReceiptKey: receiptKey, AcceptedAt: rc.AcceptedAt,
		Signer: index.SignerInfo{SubjectCN: signerCN(rep), Unit: rep.SignerUnit},
	}
	if s := rep.Signature; s != nil {
		rec.Signer.Serial = s.SignerSerial
		if s.SigningTime != nil {
			rec.Signer.SigningTime = *s.SigningTime
		}
	}
	for _, f := range rep.Files {
		if strings.HasPrefix(f.Name, container.FilesDir) {
			rec.Files = append(rec.Files, index.File{Name: strings.TrimPrefix(f.Name, container.FilesDir), MediaType: f.MediaType, Size: int64(f.Size), SHA256: f.SHA256})
		}
	}
	return rec
}

func signerCN(rep *container.Report) string {
	if rep.Signature == nil {
		return ""
	}
	for _, part := range strings.Split(rep.Signature.SignerSubject, ", ") {
		if v, ok := strings.CutPrefix(part, "CN="); ok {
			return v
		}
	}
	return rep.Signature.SignerSubject
}

// Document reads an archived container (at containerKey) and its receipt
// and builds its index record. The container must verify and match its
// receipt, the receipt must verify as of now, and the container's signer
// chain is checked as of the receipt's acceptance time, a time the hub
// signed.
func Document(ctx context.Context, a Reader, trust *pki.Trust, now time.Time, containerKey string) (index.Record, error) {
	data, _, err := a.Get(ctx, containerKey)
	if err != nil {
		return index.Record{}, err
	}
	rkey := strings.TrimSuffix(containerKey, containerName) + receiptName
	rb, _, err := a.Get(ctx, rkey)
	if err != nil {
		return index.Record{}, fmt.Errorf("receipt: %w", err)
	}
	return documentFrom(data, rb, rkey, trust, now)
}

func documentFrom(data, receipt []byte, rkey string, trust *pki.Trust, now time.Time) (index.Record, error) {
	sum := sha256.Sum256(data)
	rr := container.VerifyReceipt(receipt, hex.EncodeToString(sum[:]), container.Options{Trust: trust, At: now})
	if rr.Receipt == nil || !rr.Valid {
		return index.Record{}, fmt.Errorf("receipt %s: %v", rkey, rr.Reasons)
	}
	// The signer's chain as of the hub's acceptance, a time the hub signed.
	c, rep := container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: trust, At: rr.Receipt.AcceptedAt})
	if c == nil {
		return index.Record{}, fmt.Errorf("container: %v", rep.Reasons)
	}
	return Record(c, rep, rr.Receipt, rkey), nil
}

// Accepted is what the archive says of a document's acceptance: its
// receipt, which names the sender and the recipients.
type Accepted struct {
	Receipt *container.Receipt
	Key     string // the receipt's key
}

// Party reports whether unit sent or received the document.
func (a *Accepted) Party(unit document.UnitID) bool {
	if a.Receipt.From == unit {
		return true
	}
	for _, r := range a.Receipt.To {
		if r == unit {
			return true
		}
	}
	return false
}

// ReadAccepted reads a document's receipt from the archive: the shared
// truth of its acceptance, which every hub can read whatever its own index
// holds. A document with no receipt is not accepted (yet): the error wraps
// archive.ErrNotFound. The receipt is the one the hub wrote (the archive is
// write-once); its signature is checked as the pipeline checks the receipt
// it reuses on a redelivery.
func ReadAccepted(ctx context.Context, a Reader, trust *pki.Trust, now time.Time, id document.ID) (*Accepted, error) {
	key := ReceiptKey(id)
	b, _, err := a.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	r := container.VerifyReceipt(b, "", container.Options{Trust: trust, At: now})
	if r.Receipt == nil {
		return nil, fmt.Errorf("projection: archived receipt %s unreadable: %v", key, r.Reasons)
	}
	if r.Receipt.DocumentID != id {
		return nil, fmt.Errorf("projection: archived receipt %s names document %s", key, r.Receipt.DocumentID)
	}
	return &Accepted{Receipt: r.Receipt, Key: key}, nil
}

// Statuses lists the statuses archived for a document, from their keys
// alone (unit, code and time; no flag, no text): who has reported what,
// for judging a new status on a document this hub has not indexed yet.
func Statuses(ctx context.Context, a Archive, id document.ID) ([]index.StatusEntry, error) {
	var out []index.StatusEntry
	for o, err := range a.List(ctx, StatusPrefix(id)) {
		if err != nil {
			return nil, err
		}
		k, err := ParseKey(o.Key)
		if err != nil || k.Kind != KindStatus {
			continue
		}
		out = append(out, index.StatusEntry{Status: document.Status{DocumentID: id, Unit: k.Unit, Code: k.Code, Time: k.At}})
	}
	return out, nil
}

// archivedStatus is the archived form of a recorded status: the status
// with the flag and the reception time the index keeps, so that a rebuilt
// index holds the same history as the indexes that applied the status
// event, and, for a signed status, the unit's signature (container.
// SignStatus, DER) whose SHA-256 the entry names: one object per status,
// one write. (Archives from before kept the signature in an object of its
// own beside the status, StatusSignatureKey; readers take either.)
type archivedStatus struct {
	index.StatusEntry
	Signature []byte `json:"signature,omitempty"`
}

// EncodeStatus is the archived form of a recorded status and its unit's
// signature (nil for an unsigned status).
func EncodeStatus(e index.StatusEntry, sig []byte) ([]byte, error) {
	return json.Marshal(archivedStatus{StatusEntry: e, Signature: sig})
}

// DecodeStatus reads an archived status and the signature archived with
// it (nil for an unsigned one, or one archived before signatures were kept
// in the status's object). One archived before flags were kept has a zero
// ReceivedAt: the index then computes its flag.
func DecodeStatus(b []byte) (index.StatusEntry, []byte, error) {
	var a archivedStatus
	if err := json.Unmarshal(b, &a); err != nil {
		return a.StatusEntry, nil, fmt.Errorf("projection: status: %w", err)
	}
	return a.StatusEntry, a.Signature, nil
}

// Flag reports whether st is out of order (document.InOrder) after the
// unit's previous progress code in history: the latest of its progress
// codes (01 to 06) with a time not after st's, as the index decides it.
func Flag(history []index.StatusEntry, st document.Status) bool {
	var prev *index.StatusEntry
	for i := range history {
		h := &history[i]
		at := h.Time.UnixMicro() // the index's precision
		if h.Unit != st.Unit || !progress(h.Code) || at > st.Time.UnixMicro() {
			continue
		}
		if h.Code == st.Code && at == st.Time.UnixMicro() {
			continue // st itself
		}
		if prev == nil || later(h, prev) {
			prev = h
		}
	}
	var code document.StatusCode
	if prev != nil {
		code = prev.Code
	}
	return !document.InOrder(code, st.Code)
}

func progress(c document.StatusCode) bool { return c >= "01" && c <= "06" && len(c) == 2 }

// later orders statuses as the index does: time, then reception, then code.
func later(a, b *index.StatusEntry) bool {
	switch {
	case a.Time.UnixMicro() != b.Time.UnixMicro():
		return a.Time.UnixMicro() > b.Time.UnixMicro()
	case !a.ReceivedAt.Equal(b.ReceivedAt):
		return a.ReceivedAt.After(b.ReceivedAt)
	}
	return a.Code > b.Code
}

// DecodeUnit reads an archived unit record.
func DecodeUnit(b []byte) (index.Unit, error) {
	var u index.Unit
	if err := json.Unmarshal(b, &u); err != nil {
		return u, fmt.Errorf("projection: unit: %w", err)
	}
	return u, nil
}

// EncodeUnit is the archived form of a unit's record.
func EncodeUnit(u index.Unit) ([]byte, error) { return json.MarshalIndent(u, "", "  ") }

// Rejected is the index entry of a rejected submission or refused status
// archived at key (its reasons.json).
func (r *RejectedRecord) Rejected(key string) index.Rejected {
	return index.Rejected{Ref: r.Ref, Sender: r.Sender, At: r.Received, Reasons: r.Reasons, ArchiveKey: key}
}

// DecodeRejected reads an archived reasons.json.
func DecodeRejected(b []byte) (RejectedRecord, error) {
	var r RejectedRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("projection: rejected: %w", err)
	}
	return r, nil
}

// IsNotFound reports whether err says an archived object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, archive.ErrNotFound) }
