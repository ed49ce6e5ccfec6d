package protocol

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// InlineLimit is the largest container sent inside a message; a larger one
// is staged, encrypted, beside the message (UploadStaged for submissions,
// PutStaged for deliveries) and the message names it and carries its key.
// Streams accept messages of up to twice this size.
const InlineLimit = 4 << 20

// Headers carried by edx messages.
const (
	HeaderMsgID     = "Nats-Msg-Id"          // de-duplication: see the Msg-Id functions
	HeaderDocID     = "Edx-Document-Id"      // the document's ULID
	HeaderSHA256    = "Edx-Container-Sha256" // hex SHA-256 of the container bytes
	HeaderSize      = "Edx-Container-Size"   // container size in bytes
	HeaderStaged    = "Edx-Staged"           // object name in the stage store when not inline
	HeaderStageKey  = "Edx-Stage-Key"        // base64 AES-256 key of the staged object
	HeaderStagedSeq = "Edx-Staged-Seq"       // on a staged submission: the upload stream's sequence of its first chunk
	HeaderReceipt   = "Edx-Receipt"          // base64 DER hub receipt, on deliveries
	HeaderSender    = "Edx-Sender"           // sender unit, on deliveries
	// HeaderFor, on a delivery to the city's gateway unit, lists the
	// recipients outside the city (comma-separated unit ids) the gateway
	// carries the document to, through the upstream axis.
	HeaderFor = "Edx-For"
	// HeaderNoticeTo, on a submission, names a subject under the sending
	// unit's inbox prefix (see NoticeTo) where the hub also sends the
	// submission's decision, so that the client that sent it (edx send)
	// hears about it even while the unit's agent reads the unit's notices.
	HeaderNoticeTo = "Edx-Notice-To"
	// HeaderKind says what a message to a unit is: KindNotice, or, when
	// absent, a delivery (IsNotice).
	HeaderKind      = "Edx-Kind"
	HeaderVersion   = "Edx-Protocol" // protocol version
	ProtocolVersion = "1"
)

// KindNotice is HeaderKind's value on a notice.
const KindNotice = "notice"

// Container is a signed container on the wire: its bytes inline, or the name
// of the staged object that holds them, with the digest that binds the two.
type Container struct {
	DocumentID document.ID
	SHA256     string // hex
	Size       int64
	// Staged is the name of the staged object (in StreamUpload for a
	// submission, StageBucket for a delivery); empty when Data is inline.
	Staged string
	// StageKey decrypts the staged object (OpenStage); set with Staged.
	StageKey []byte
	// StagedSeq is, for a staged submission, the sequence of its first
	// chunk in StreamUpload (UploadStaged sets it, GetUpload reads from it).
	StagedSeq uint64
	Data      []byte // the container bytes when inline
}

func (c *Container) setHeaders(h nats.Header) {
	h.Set(HeaderVersion, ProtocolVersion)
	h.Set(HeaderDocID, string(c.DocumentID))
	h.Set(HeaderSHA256, c.SHA256)
	h.Set(HeaderSize, strconv.FormatInt(c.Size, 10))
	if c.Staged != "" {
		h.Set(HeaderStaged, c.Staged)
		h.Set(HeaderStageKey, base64.StdEncoding.EncodeToString(c.StageKey))
		if c.StagedSeq > 0 {
			h.Set(HeaderStagedSeq, strconv.FormatUint(c.StagedSeq, 10))
		}
	}
}

// parseContainer reads the container headers; a staged object's name must
// start with stagePrefix.
func parseContainer(m *nats.Msg, stagePrefix string) (*Container, error) {
	c := &Container{
		DocumentID: document.ID(m.Header.Get(HeaderDocID)),
		SHA256:     m.Header.Get(HeaderSHA256),
		Staged:     m.Header.Get(HeaderStaged),
	}
	var errs []string
	if k := m.Header.Get(HeaderStageKey); c.Staged != "" {
		if err := validStageName(c.Staged, stagePrefix); err != nil {
			errs = append(errs, "header "+HeaderStaged+": "+err.Error())
		}
		key, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(key) != StageKeySize {
			errs = append(errs, fmt.Sprintf("header %s: want a base64 key of %d bytes", HeaderStageKey, StageKeySize))
		}
		c.StageKey = key
		if v := m.Header.Get(HeaderStagedSeq); v != "" {
			if c.StagedSeq, err = strconv.ParseUint(v, 10, 64); err != nil || c.StagedSeq == 0 {
				errs = append(errs, "header "+HeaderStagedSeq+": want a positive sequence")
			}
		}
	} else if k != "" {
		errs = append(errs, "header "+HeaderStageKey+" without "+HeaderStaged)
	}
	if err := c.DocumentID.Validate(); err != nil {
		errs = append(errs, "header "+HeaderDocID+": "+err.Error())
	}
	if len(c.SHA256) != 64 || strings.Trim(c.SHA256, "0123456789abcdef") != "" {
		errs = append(errs, "header "+HeaderSHA256+": want 64 lower-case hex digits")
	}
	n, err := strconv.ParseInt(m.Header.Get(HeaderSize), 10, 64)
	if err != nil || n <= 0 {
		errs = append(errs, "header "+HeaderSize+": want a positive size")
	}
	c.Size = n
	if c.Staged == "" {
		c.Data = m.Data
		if int64(len(m.Data)) != c.Size {
			errs = append(errs, fmt.Sprintf("body of %d bytes, header says %d", len(m.Data), c.Size))
		}
	} else if len(m.Data) != 0 {
		errs = append(errs, "a staged container's message must have an empty body")
	}
	if len(errs) > 0 {
		return c, errors.New(strings.Join(errs, "; "))
	}
	return c, nil
}

// SubmitMsg builds a unit's submission of a container.
func SubmitMsg(unit document.UnitID, c *Container) *nats.Msg {
	m := nats.NewMsg(SubmitSubject(string(unit)))
	c.setHeaders(m.Header)
	m.Header.Set(HeaderMsgID, SubmitMsgID(c.DocumentID, c.SHA256))
	m.Data = c.Data
	return m
}

// SubmitMsgID de-duplicates retries of the same submission; a different
// container under the same id is a different message (and the hub refuses it).
func SubmitMsgID(id document.ID, sha string) string {
	return string(id) + "." + sha[:min(16, len(sha))]
}

// NoticeTo returns the subject a submission names in HeaderNoticeTo for its
// decision, or "" when it names none or one the unit could not receive: the
// subject must be under the unit's own inbox prefix (InboxPrefix), which
// its permissions let it subscribe to and no other unit's do, and be a
// plain subject (no wildcard, no empty token, at most 256 bytes).
//
// The decision always goes to the unit's notices too (NoticeMsg),
// which its agent reads at least once; the copy to NoticeTo is a courtesy to
// the client that is waiting, sent once, never retried.
func NoticeTo(m *nats.Msg, unit document.UnitID) string {
	if m.Header == nil {
		return ""
	}
	to := m.Header.Get(HeaderNoticeTo)
	rest, ok := strings.CutPrefix(to, InboxPrefix(string(unit))+".")
	if !ok || rest == "" || len(to) > 256 || unit.Validate() != nil {
		return ""
	}
	for tok := range strings.SplitSeq(rest, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return ""
		}
	}
	return to
}

// ParseSubmit reads a submission; the unit comes from the subject.
func ParseSubmit(m *nats.Msg) (document.UnitID, *Container, error) {
	unit := document.UnitID(UnitFromSubject(m.Subject))
	if !strings.HasPrefix(m.Subject, SubjectSubmitPrefix) {
		return unit, nil, fmt.Errorf("protocol: subject %q is not a submission", m.Subject)
	}
	c, err := parseContainer(m, submitStagePrefix)
	if err == nil && c.Staged != "" && c.StagedSeq == 0 {
		err = errors.New("a staged submission needs header " + HeaderStagedSeq)
	}
	if err != nil {
		return unit, c, fmt.Errorf("protocol: submission: %w", err)
	}
	return unit, c, nil
}

// Delivery is what the hub routes to a recipient: the container as the
// sender signed it and the hub's receipt.
type Delivery struct {
	Recipient document.UnitID
	Sender    document.UnitID
	Container
	Receipt []byte // DER CMS
	// For is set on a delivery to the gateway unit: the recipients outside
	// the city it carries the document to (all of them among the
	// document's recipients, none registered in the city).
	For []document.UnitID
}

// DeliverMsg builds the message of a delivery.
func DeliverMsg(d *Delivery) *nats.Msg {
	m := nats.NewMsg(DeliverSubject(string(d.Recipient)))
	d.setHeaders(m.Header)
	m.Header.Set(HeaderMsgID, DeliverMsgID(d.DocumentID, d.Recipient))
	m.Header.Set(HeaderSender, string(d.Sender))
	m.Header.Set(HeaderReceipt, base64.StdEncoding.EncodeToString(d.Receipt))
	if len(d.For) > 0 {
		us := make([]string, len(d.For))
		for i, u := range d.For {
			us[i] = string(u)
		}
		m.Header.Set(HeaderFor, strings.Join(us, ","))
	}
	m.Data = d.Data
	return m
}

// DeliverMsgID is the document id plus the recipient.
func DeliverMsgID(id document.ID, recipient document.UnitID) string {
	return string(id) + "." + string(recipient)
}

// ParseDelivery reads a delivery.
func ParseDelivery(m *nats.Msg) (*Delivery, error) {
	c, err := parseContainer(m, deliverStagePrefix)
	if err != nil {
		return nil, fmt.Errorf("protocol: delivery: %w", err)
	}
	d := &Delivery{Recipient: document.UnitID(UnitFromSubject(m.Subject)), Sender: document.UnitID(m.Header.Get(HeaderSender)), Container: *c}
	if d.Receipt, err = base64.StdEncoding.DecodeString(m.Header.Get(HeaderReceipt)); err != nil || len(d.Receipt) == 0 {
		return nil, fmt.Errorf("protocol: delivery: no valid %s header", HeaderReceipt)
	}
	if v := m.Header.Get(HeaderFor); v != "" {
		for _, s := range strings.Split(v, ",") {
			u := document.UnitID(strings.TrimSpace(s))
			if err := u.Validate(); err != nil {
				return nil, fmt.Errorf("protocol: delivery: header %s: %w", HeaderFor, err)
			}
			if len(d.For) == document.MaxRecipients {
				return nil, fmt.Errorf("protocol: delivery: header %s: more than %d units", HeaderFor, document.MaxRecipients)
			}
			d.For = append(d.For, u)
		}
	}
	return d, nil
}

// NoticeType says what a notice tells its unit.
type NoticeType string

const (
	NoticeAccepted       NoticeType = "accepted"        // the hub accepted the sender's document; Receipt set
	NoticeRejected       NoticeType = "rejected"        // the hub refused the sender's document; Reasons set
	NoticeStatus         NoticeType = "status"          // a recipient reported a status; Status set
	NoticeStatusRejected NoticeType = "status_rejected" // the hub refused the unit's own status; Reasons set
)

// Notice is the hub's message to a unit about its own documents.
type Notice struct {
	Type       NoticeType       `json:"type"`
	DocumentID document.ID      `json:"document_id,omitempty"`
	SHA256     string           `json:"container_sha256,omitempty"`
	Time       time.Time        `json:"time"`
	ArchiveKey string           `json:"archive_key,omitempty"`
	Receipt    []byte           `json:"receipt,omitempty"` // DER CMS, base64 in JSON
	Recipients []string         `json:"recipients,omitempty"`
	Reasons    reason.List      `json:"reasons,omitempty"`
	Status     *document.Status `json:"status,omitempty"`
	// StatusSignature is, on a status notice, the reporting unit's
	// signature over the status and the container it is about
	// (container.SignStatus; DER CMS, base64 in JSON), when it signed it.
	StatusSignature []byte `json:"status_signature,omitempty"`
}

// NoticeMsg builds a notice to unit with its de-duplication id.
func NoticeMsg(unit document.UnitID, n *Notice, msgID string) (*nats.Msg, error) {
	b, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("protocol: notice: %w", err)
	}
	m := nats.NewMsg(DeliverSubject(string(unit)))
	m.Header.Set(HeaderVersion, ProtocolVersion)
	m.Header.Set(HeaderMsgID, msgID)
	m.Header.Set(HeaderKind, KindNotice)
	m.Data = b
	return m, nil
}

// ParseNotice reads a notice.
func ParseNotice(m *nats.Msg) (*Notice, error) {
	var n Notice
	if err := json.Unmarshal(m.Data, &n); err != nil {
		return nil, fmt.Errorf("protocol: notice: %w", err)
	}
	return &n, nil
}

// MaxStatusSize bounds a status message's body: a status within the field
// limits of document.Status is far smaller. EDX_STATUS refuses larger
// messages (broker), and ParseStatus refuses them too.
const MaxStatusSize = 64 << 10

// StatusReport is a status as a unit reports it: the status and, from an
// agent that signs its statuses, the unit's signature over the status and
// the container it is about (container.SignStatus: a DER CMS, base64 in
// JSON). A hub from before signatures reads the status and ignores the
// signature; a hub reads a report without one as an unsigned status.
type StatusReport struct {
	document.Status
	Signature []byte `json:"signature,omitempty"`
}

// StatusMsg builds a unit's status report, unsigned.
func StatusMsg(s *document.Status) (*nats.Msg, error) {
	return StatusReportMsg(&StatusReport{Status: *s})
}

// StatusReportMsg builds a unit's status report with its signature, if any.
// The de-duplication id is the status's alone: the same status sent again,
// signed again, is the same message.
func StatusReportMsg(r *StatusReport) (*nats.Msg, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("protocol: status: %w", err)
	}
	if len(b) > MaxStatusSize {
		return nil, fmt.Errorf("protocol: status: %d bytes, above the limit of %d", len(b), MaxStatusSize)
	}
	m := nats.NewMsg(StatusSubject(string(r.Unit)))
	m.Header.Set(HeaderVersion, ProtocolVersion)
	m.Header.Set(HeaderMsgID, StatusMsgID(&r.Status))
	m.Data = b
	return m, nil
}

// RelayStatusMsg builds the status report of a unit outside the city that
// the city's gateway unit relays from the upstream axis: published on the
// gateway's status subject, the status naming the outside unit.
func RelayStatusMsg(gateway document.UnitID, s *document.Status) (*nats.Msg, error) {
	m, err := StatusMsg(s)
	if err != nil {
		return nil, err
	}
	m.Subject = StatusSubject(string(gateway))
	return m, nil
}

// StatusMsgID identifies one status report.
func StatusMsgID(s *document.Status) string {
	return fmt.Sprintf("%s.%s.%s.%d", s.DocumentID, s.Unit, s.Code, s.Time.UnixNano())
}

// ParseStatus reads a status report, without its signature; the reporting
// unit comes from the subject.
func ParseStatus(m *nats.Msg) (document.UnitID, *document.Status, error) {
	unit, r, err := ParseStatusReport(m)
	if r == nil {
		return unit, nil, err
	}
	return unit, &r.Status, err
}

// ParseStatusReport reads a status report with its signature, if any; the
// reporting unit comes from the subject. The signature is not checked here.
func ParseStatusReport(m *nats.Msg) (document.UnitID, *StatusReport, error) {
	unit := document.UnitID(UnitFromSubject(m.Subject))
	if len(m.Data) > MaxStatusSize {
		return unit, nil, fmt.Errorf("protocol: status: %d bytes, above the limit of %d", len(m.Data), MaxStatusSize)
	}
	var r StatusReport
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return unit, nil, fmt.Errorf("protocol: status: %w", err)
	}
	if err := r.Validate(); err != nil {
		return unit, &r, fmt.Errorf("protocol: status: %w", err)
	}
	return unit, &r, nil
}
