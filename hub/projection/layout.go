// Package projection owns the archive's key layout and the projection of
// the archive onto the index: where each archived object lives (key
// builders), what a key names (ParseKey), and how each object becomes what
// the index keeps (Record for an accepted container and its receipt, the
// archived status, unit and rejected records). The pipeline writes with it,
// the decision events carry what it projects, and a rebuild (edx-hub
// reindex, a new hub catching up) reads the archive back through it: one
// definition, so the three always agree.
//
// The layout, in one bucket:
//
//	<yyyy>/<mm>/<dd>/<id>/container.asice        the signed container, byte for byte
//	<yyyy>/<mm>/<dd>/<id>/receipt.p7s            the hub's signed receipt
//	<yyyy>/<mm>/<dd>/<id>/status/<unit>-<code>-<unix ns>.json
//	                                             a recorded status (index.StatusEntry) with the
//	                                             unit's signature over it (container.SignStatus)
//	<yyyy>/<mm>/<dd>/<id>/status/<unit>-<code>-<unix ns>.p7s
//	                                             that signature, in archives written before it
//	                                             went into the status's object (read, not written)
//	units/<unit>/<unix ns>.json                  a unit's record after each change (index.Unit)
//	rejected/<yyyy>/<mm>/<dd>/<ref>/reasons.json a refused submission or status (RejectedRecord)
//	rejected/<yyyy>/<mm>/<dd>/<ref>/<name>       what is kept of its bytes (RejectedContainer, ...)
//	crl/<sha256>.crl                             a CRL the hub relied on (not indexed)
//	tlog/<origin>/...                            a hub's transparency log as of its time-stamped
//	                                             checkpoints (hub/tlog.Mirror; not indexed)
//
// A document's date is the UTC date of its id (a ULID): any hub computes
// where a document is archived from its id alone. A rejected submission's
// date is the time the hub received it.
package projection

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// File names in the layout.
const (
	containerName = "container.asice"
	receiptName   = "receipt.p7s"
	statusDir     = "status"
	unitsDir      = "units"
	rejectedDir   = "rejected"
	crlDir        = "crl"
	logDir        = "tlog"

	// ReasonsName is a rejected submission's or status's record (RejectedRecord).
	ReasonsName = "reasons.json"
	// RejectedContainer is a rejected submission kept whole,
	// RejectedHead its first bytes (pipeline.Config.RejectedKeep), and
	// RejectedStatus a refused status's message body.
	RejectedContainer = "container.asice"
	RejectedHead      = "container-head.bin"
	RejectedStatus    = "status.json"
)

const dayLayout = "2006/01/02"

func datePrefix(t time.Time) string { return t.UTC().Format(dayLayout) + "/" }

// DocumentPrefix is where everything of a document is archived:
// "2026/11/25/<id>/", by the UTC date of its id.
func DocumentPrefix(id document.ID) string { return datePrefix(id.Time()) + string(id) + "/" }

// ContainerKey is the key of a document's signed container.
func ContainerKey(id document.ID) string { return DocumentPrefix(id) + containerName }

// ReceiptKey is the key of the hub's signed receipt for a document, beside
// its container.
func ReceiptKey(id document.ID) string { return DocumentPrefix(id) + receiptName }

// StatusPrefix is where a document's recorded statuses are archived.
func StatusPrefix(id document.ID) string { return DocumentPrefix(id) + statusDir + "/" }

// StatusKey is where a recorded status is archived, beside its document.
// Its name holds the unit, the code and the time (Unix nanoseconds), so
// that listing StatusPrefix tells who reported what when without reading
// one object.
func StatusKey(s *document.Status) string {
	return fmt.Sprintf("%s%s-%s-%d.json", StatusPrefix(s.DocumentID), s.Unit, s.Code, s.Time.UnixNano())
}

// StatusSignatureKey is where archives written before signatures went
// into the status's object (EncodeStatus) hold the reporting unit's
// signature over a recorded status (container.SignStatus, DER CMS): beside
// the status, under the same name with .p7s. It is read, no longer
// written; it is also the name the signature gets in an audit bundle.
func StatusSignatureKey(s *document.Status) string {
	return strings.TrimSuffix(StatusKey(s), ".json") + statusSignatureExt
}

const statusSignatureExt = ".p7s"

// UnitKey is where the record of a unit after one change is archived.
func UnitKey(id document.UnitID, at time.Time) string {
	return fmt.Sprintf("%s/%s/%d.json", unitsDir, id, at.UnixNano())
}

// UnitsPrefix is where every unit's records are.
const UnitsPrefix = unitsDir + "/"

// RejectedKey is the key of one file of a rejected submission or status:
// "rejected/2026/11/25/<ref>/<name>", by the UTC date of t (when the hub
// received it).
func RejectedKey(t time.Time, ref, name string) string {
	return rejectedDir + "/" + datePrefix(t) + ref + "/" + name
}

// CRLKey is the key of a CRL the hub relied on, by the hex SHA-256 of its
// DER: "crl/<sha256>.crl". Content-addressed, so each CRL is stored once.
func CRLKey(sha256hex string) string {
	return crlDir + "/" + sha256hex + ".crl"
}

// LogPrefix is where the transparency log of origin (one per hub) is
// mirrored: "tlog/<origin>/", the origin as it is (a schema-less URL such
// as edx.example.gov.vn/hub/1, whose slashes make folders).
func LogPrefix(origin string) string { return logDir + "/" + origin + "/" }

// LogsPrefix is where every hub's log is mirrored.
const LogsPrefix = logDir + "/"

// Kind is what an archived object is.
type Kind int

// Kinds of archived objects.
const (
	KindOther           Kind = iota // not part of the layout (ignored by a rebuild)
	KindContainer                   // a document's container
	KindReceipt                     // a document's receipt
	KindStatus                      // a recorded status
	KindUnit                        // a unit's record
	KindRejected                    // a rejected submission's or status's reasons.json
	KindRejectedPart                // the bytes kept of a rejected submission or status
	KindStatusSignature             // a unit's signature over a recorded status (beside it; not indexed itself)
)

func (k Kind) String() string {
	switch k {
	case KindContainer:
		return "container"
	case KindReceipt:
		return "receipt"
	case KindStatus:
		return "status"
	case KindUnit:
		return "unit"
	case KindRejected:
		return "rejected"
	case KindRejectedPart:
		return "rejected part"
	case KindStatusSignature:
		return "status signature"
	}
	return "other"
}

// Key is what ParseKey read from a key.
type Key struct {
	Kind Kind
	// Day is the key's date (UTC midnight), for dated keys.
	Day time.Time
	// Doc is the document of a container, receipt or status.
	Doc document.ID
	// Unit, Code and At: a status's unit, code and time; a unit record's
	// unit and time.
	Unit document.UnitID
	Code document.StatusCode
	At   time.Time
	// Ref and Name: a rejected submission's or status's reference and file.
	Ref, Name string
}

// ErrLayout: a key under the layout's prefixes that does not follow it.
var ErrLayout = errors.New("projection: key outside the archive layout")

// ParseKey tells what an archived object is from its key. A key that is
// not part of the layout at all (the readiness probe's, an operator's file)
// is KindOther with no error; one under the layout's prefixes that does not
// follow it is an error wrapping ErrLayout, so that a rebuild reports it
// rather than skip it silently.
func ParseKey(key string) (Key, error) {
	bad := func(why string) (Key, error) {
		return Key{}, fmt.Errorf("%w: %s: %s", ErrLayout, key, why)
	}
	parts := strings.Split(key, "/")
	switch {
	case parts[0] == unitsDir:
		if len(parts) != 3 {
			return bad("want units/<unit>/<unix ns>.json")
		}
		u := document.UnitID(parts[1])
		if err := u.Validate(); err != nil {
			return bad(err.Error())
		}
		ns, ok := strings.CutSuffix(parts[2], ".json")
		n, err := strconv.ParseInt(ns, 10, 64)
		if !ok || err != nil {
			return bad("want units/<unit>/<unix ns>.json")
		}
		return Key{Kind: KindUnit, Unit: u, At: time.Unix(0, n).UTC()}, nil
	case parts[0] == rejectedDir:
		if len(parts) != 6 {
			return bad("want rejected/<yyyy>/<mm>/<dd>/<ref>/<name>")
		}
		day, err := time.Parse(dayLayout, strings.Join(parts[1:4], "/"))
		if err != nil {
			return bad("date: " + err.Error())
		}
		k := Key{Kind: KindRejectedPart, Day: day, Ref: parts[4], Name: parts[5]}
		if k.Name == ReasonsName {
			k.Kind = KindRejected
		}
		return k, nil
	case len(parts[0]) != 4 || strings.Trim(parts[0], "0123456789") != "":
		return Key{Kind: KindOther}, nil // not a dated document key
	}
	if len(parts) < 5 {
		return bad("want <yyyy>/<mm>/<dd>/<id>/<file>")
	}
	day, err := time.Parse(dayLayout, strings.Join(parts[:3], "/"))
	if err != nil {
		return bad("date: " + err.Error())
	}
	id := document.ID(parts[3])
	if err := id.Validate(); err != nil {
		return bad(err.Error())
	}
	k := Key{Day: day, Doc: id}
	switch {
	case len(parts) == 5 && parts[4] == containerName:
		k.Kind = KindContainer
	case len(parts) == 5 && parts[4] == receiptName:
		k.Kind = KindReceipt
	case len(parts) == 6 && parts[4] == statusDir:
		kind := KindStatus
		name, ok := strings.CutSuffix(parts[5], ".json")
		if !ok {
			name, ok = strings.CutSuffix(parts[5], statusSignatureExt)
			kind = KindStatusSignature
		}
		i := strings.LastIndexByte(name, '-')
		j := strings.LastIndexByte(name[:max(i, 0)], '-')
		if !ok || i < 0 || j < 0 {
			return bad("want status/<unit>-<code>-<unix ns>.json or .p7s")
		}
		n, err := strconv.ParseInt(name[i+1:], 10, 64)
		if err != nil {
			return bad("status time: " + err.Error())
		}
		k.Kind, k.Unit, k.Code, k.At = kind, document.UnitID(name[:j]), document.StatusCode(name[j+1:i]), time.Unix(0, n).UTC()
		if err := k.Unit.Validate(); err != nil {
			return bad(err.Error())
		}
		if err := k.Code.Validate(); err != nil {
			return bad(err.Error())
		}
	default:
		return bad("not a container, receipt or status")
	}
	return k, nil
}

// RejectedRecord is reasons.json beside a rejected submission, or a refused
// status, in the archive.
type RejectedRecord struct {
	Ref      string          `json:"ref"`
	Sender   document.UnitID `json:"sender"`
	Subject  string          `json:"subject"`
	Received time.Time       `json:"received"`
	SHA256   string          `json:"container_sha256"` // of the submitted bytes (a status's body)
	Reasons  reason.List     `json:"reasons"`
	// Size is the submitted container's size; Kept how many of its first
	// bytes are archived beside: all of them (RejectedContainer), the
	// first pipeline.Config.RejectedKeep (RejectedHead), or none once the
	// unit has used its budget of rejected bytes. A refused status's body
	// is kept as RejectedStatus.
	Size int64 `json:"size"`
	Kept int64 `json:"kept"`
	// Status is set for a refused status: what it said, when it could be
	// read (the document it named, the code).
	Status *document.Status `json:"status,omitempty"`
}
