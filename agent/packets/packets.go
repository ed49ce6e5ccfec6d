// Package packets speaks edXML with the document system: it takes edXML
// packets (documents and statuses) for sending, names documents by the
// edXML DocumentIds the document system knows, and gives back received
// documents and statuses as packets, one item at a time with the document
// system's acknowledgements (the axis protocol's way).
//
// A document packet is read with pkg/edxml, its attachments streamed to
// files in a temporary folder under the agent's data directory, within the
// agent's size limit. The agent gives the document its edx id, checks that
// the packet's sender (From/OrganId) is its own unit, links a revocation,
// update or replacement (business types 1–3) to the document it names
// (Bussiness/DocumentId, else ResponseFor/DocumentId) among those this
// agent sent, and a reply to the document its ResponseFor names when the
// agent knows it. The container holds the attachments and the packet
// itself, byte for byte, as files/original.edxml: nothing of it is lost.
// Then the document is signed and spooled as any other (agent/outbox).
//
// A status packet names its document in ResponseFor/DocumentId (edx's id
// or the edXML DocumentId). 13 (the sender takes back a document) is about
// a document this unit sent and goes to the hub with the unit's statuses;
// the other codes are the unit's reports on a document it received
// (agent/inbox). The status's time is the agent's, when it takes it.
package packets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
	"github.com/edxhub/edx/pkg/reason"
)

// Config is where packets are unpacked and how large they may be.
type Config struct {
	// TempDir holds packets while they are read; it is emptied by New.
	// Required.
	TempDir string
	// MaxPacket bounds a document packet (zero: the outbox's container
	// limit).
	MaxPacket int64
	// UnitName is this unit's name, for the agencies list.
	UnitName string
}

// MaxStatusPacket bounds a status packet.
const MaxStatusPacket = 1 << 20

// Exchange takes and gives packets for one unit.
type Exchange struct {
	cfg   Config
	unit  document.UnitID
	ob    *outbox.Outbox
	spool *spool.Spool
	inbox *inbox.Store
	now   func() time.Time
}

// New returns an exchange over the agent's outbox, spool and inbox.
func New(cfg Config, ob *outbox.Outbox, sp *spool.Spool, in *inbox.Store) (*Exchange, error) {
	if cfg.TempDir == "" || ob == nil || sp == nil || in == nil {
		return nil, errors.New("packets: temp dir, outbox, spool and inbox are required")
	}
	if cfg.MaxPacket <= 0 {
		cfg.MaxPacket = ob.MaxSize()
	}
	if err := os.RemoveAll(cfg.TempDir); err != nil {
		return nil, fmt.Errorf("packets: %w", err)
	}
	if err := os.MkdirAll(cfg.TempDir, 0o750); err != nil {
		return nil, fmt.Errorf("packets: %w", err)
	}
	return &Exchange{cfg: cfg, unit: ob.Unit(), ob: ob, spool: sp, inbox: in, now: time.Now}, nil
}

// Unit is the unit the exchange speaks for.
func (x *Exchange) Unit() document.UnitID { return x.unit }

// Submission says where a packet comes from.
type Submission struct {
	Source         string // "api", "folder:<name>", "axis:<system>", "bridge:<axis>"
	IdempotencyKey string // a second packet with the same key gives the first document back
	// Upstream is set by the gateway unit's bridge (agent/bridge) for a
	// packet it fetched from the upstream axis (Axis and DocID): its sender
	// is outside the city. The document becomes this unit's (from), its
	// sender outside goes to document.Upstream with Axis and DocID.
	Upstream *document.Upstream
}

// Result is what a packet became: a spooled document (Duplicate when the
// idempotency key was used before) or a queued status.
type Result struct {
	Document  *spool.Record
	Duplicate bool
	Status    *inbox.Status
}

// ErrStatusPacket wraps the refusal of a status packet where a document
// packet was expected.
var ErrStatusPacket = errors.New("a status packet, not a document")

func invalid(msg, field, problem string) *outbox.Error {
	e := &outbox.Error{Kind: outbox.Invalid, Message: msg}
	if field != "" {
		e.Problems = document.Problems{{Field: field, Message: problem}}
	}
	return e
}

// statusPacketError refuses a status packet sent as a document; errors.Is
// finds ErrStatusPacket.
type statusPacketError struct{ refusal *outbox.Error }

func (e statusPacketError) Error() string   { return e.refusal.Error() }
func (e statusPacketError) Unwrap() []error { return []error{e.refusal, ErrStatusPacket} }

// SubmitDocument takes a document packet: it is read, checked, signed and
// spooled (see the package comment). Refusals are *outbox.Error; a status
// packet is refused with an error wrapping ErrStatusPacket.
func (x *Exchange) SubmitDocument(ctx context.Context, r io.Reader, s Submission) (*spool.Record, bool, error) {
	res, err := x.submit(ctx, r, s, false)
	if err != nil {
		return nil, false, err
	}
	return res.Document, !res.Duplicate, nil
}

// Submit takes a document or a status packet, whichever it is.
func (x *Exchange) Submit(ctx context.Context, r io.Reader, s Submission) (*Result, error) {
	return x.submit(ctx, r, s, true)
}

func (x *Exchange) submit(ctx context.Context, r io.Reader, s Submission, statuses bool) (*Result, error) {
	dir, err := os.MkdirTemp(x.cfg.TempDir, "packet-")
	if err != nil {
		return nil, fmt.Errorf("packets: %w", err)
	}
	defer os.RemoveAll(dir)
	orig := filepath.Join(dir, "packet.edxml")
	if err := save(r, orig, x.cfg.MaxPacket); err != nil {
		return nil, err
	}
	f, err := os.Open(orig)
	if err != nil {
		return nil, fmt.Errorf("packets: %w", err)
	}
	defer f.Close()
	pk, err := edxml.ParseToDir(f, filepath.Join(dir, "doc"), edxml.Options{
		Limits:  edxml.Limits{MaxPacket: x.cfg.MaxPacket},
		ID:      document.NewID(x.now()),
		Resolve: func(v string) (document.ID, bool) { return x.resolveReply(ctx, v) },
	})
	if errors.Is(err, edxml.ErrStatusPacket) {
		if !statuses {
			return nil, statusPacketError{invalid("a status packet, not a document: send it as the status of the document it names", "", "")}
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("packets: %w", err)
		}
		st, err := x.SubmitStatus(ctx, io.LimitReader(f, MaxStatusPacket+1), "")
		if err != nil {
			return nil, err
		}
		return &Result{Status: st}, nil
	}
	if err != nil {
		return nil, packetErr(err)
	}
	if s.Upstream != nil {
		if err := x.inbound(pk.Document, *s.Upstream); err != nil {
			return nil, err
		}
	}
	if err := x.check(ctx, pk.Document); err != nil {
		return nil, err
	}
	files := make([]container.File, 0, len(pk.Attachments)+1)
	for _, a := range pk.Attachments {
		if a.File == edxml.OriginalFile {
			return nil, invalid("invalid packet", fmt.Sprintf("AttachmentEncoded/Attachment[%d]", a.Index),
				fmt.Sprintf("the attachment is named %s, the name edx keeps for the packet itself: rename it", edxml.OriginalFile))
		}
		data, err := os.ReadFile(filepath.Join(dir, "doc", edxml.FilesDir, a.File))
		if err != nil {
			return nil, fmt.Errorf("packets: %w", err)
		}
		files = append(files, container.File{Name: a.File, MediaType: a.Detected, Data: data})
	}
	data, err := os.ReadFile(orig)
	if err != nil {
		return nil, fmt.Errorf("packets: %w", err)
	}
	files = append(files, container.File{Name: edxml.OriginalFile, MediaType: "application/xml", Data: data})
	meta, err := pk.Document.Marshal()
	if err != nil {
		return nil, invalid("invalid packet", "document", err.Error())
	}
	rec, created, err := x.ob.Submit(ctx, outbox.Submission{Meta: meta, Files: files, Source: s.Source, IdempotencyKey: s.IdempotencyKey, FromPacket: true})
	if err != nil {
		return nil, err
	}
	return &Result{Document: rec, Duplicate: !created}, nil
}

// save copies a packet to path, within max bytes.
func save(r io.Reader, path string, max int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("packets: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(r, max+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err // the reader's error: the caller knows it (a body too large, a broken connection)
	}
	if n > max {
		return &outbox.Error{Kind: outbox.TooLarge, Message: fmt.Sprintf("the packet exceeds the limit of %d bytes", max)}
	}
	if n == 0 {
		return invalid("empty packet", "packet", "no bytes: send an edXML packet")
	}
	return nil
}

// packetErr turns a packet the codec cannot read into a refusal with its
// reason code.
func packetErr(err error) error {
	var pe *edxml.Error
	if errors.As(err, &pe) {
		kind := outbox.Invalid
		if pe.Code == reason.EdXMLTooLarge {
			kind = outbox.TooLarge
		}
		return &outbox.Error{Kind: kind, Message: "not a readable edXML packet", Reasons: reason.List{pe.Reason()}}
	}
	return fmt.Errorf("packets: %w", err)
}

// inbound makes a document the gateway brought in from the upstream axis
// this unit's: its sender outside the city goes to document.Upstream.
func (x *Exchange) inbound(d *document.Document, up document.Upstream) error {
	refuse := func(field, msg string) error {
		return &outbox.Error{Kind: outbox.Unprocessable, Message: "not a document from outside the city", Problems: document.Problems{{Field: field, Message: msg}}}
	}
	switch {
	case d.From == "":
		return invalid("invalid packet", "From/OrganId", "required: the sender outside the city")
	case d.From == x.unit:
		return refuse("From/OrganId", fmt.Sprintf("the packet is from the gateway unit %s itself", x.unit))
	case slices.Contains(d.To, x.unit):
		return refuse("To/OrganId", fmt.Sprintf("the packet is addressed to the gateway unit %s itself, which only carries documents: address the unit of the city", x.unit))
	}
	up.From, up.FromName = d.From, d.FromName
	d.Upstream = &up
	d.From, d.FromName = x.unit, x.cfg.UnitName
	return nil
}

// check completes a document read from a packet: its sender, and the
// document a revocation, update or replacement is about.
func (x *Exchange) check(ctx context.Context, d *document.Document) error {
	switch d.From {
	case "":
		d.From = x.unit
	case x.unit:
	default:
		return &outbox.Error{Kind: outbox.Unprocessable, Message: "wrong sender", Problems: document.Problems{{Field: "From/OrganId",
			Message: fmt.Sprintf("the packet is from %s; this agent sends for unit %s only", d.From, x.unit)}}}
	}
	if d.BusinessType == document.BusinessNew {
		return nil
	}
	ref, field := edxml.BusinessDocumentID(d), "Bussiness/DocumentId"
	if ref == "" {
		if rfs := edxml.ResponseFors(d); len(rfs) > 0 {
			ref, field = rfs[0].DocumentID, "ResponseFor/DocumentId"
		}
	}
	if ref == "" {
		return invalid("invalid packet", "Bussiness/DocumentId", fmt.Sprintf("business type %d (revocation, update or replacement) names no document: give the DocumentId of the document it is about", d.BusinessType))
	}
	rec, err := x.findSent(ctx, ref)
	if errors.Is(err, spool.ErrNotFound) {
		return invalid("invalid packet", field, fmt.Sprintf("business type %d names %s, which is not a document this agent sent for unit %s", d.BusinessType, ref, x.unit))
	}
	if err != nil {
		return err
	}
	d.InReplyTo = rec.ID
	return nil
}

// findSent finds a document this agent sent by its edx id or edXML
// DocumentId.
func (x *Exchange) findSent(ctx context.Context, ref string) (*spool.Record, error) {
	ref = strings.TrimSpace(ref)
	if id, err := document.ParseID(ref); err == nil {
		return x.spool.Get(ctx, id)
	}
	return x.spool.FindEdXML(ctx, ref)
}

// findReceived finds a document the inbox holds by its edx id or edXML
// DocumentId.
func (x *Exchange) findReceived(ctx context.Context, ref string) (*inbox.Item, error) {
	ref = strings.TrimSpace(ref)
	if id, err := document.ParseID(ref); err == nil {
		return x.inbox.Get(ctx, id)
	}
	return x.inbox.FindEdXML(ctx, ref)
}

// resolveReply maps the document a reply answers to its edx id, when this
// agent received or sent it.
func (x *Exchange) resolveReply(ctx context.Context, ref string) (document.ID, bool) {
	if it, err := x.findReceived(ctx, ref); err == nil {
		return it.ID, true
	}
	if rec, err := x.findSent(ctx, ref); err == nil {
		return rec.ID, true
	}
	return "", false
}

// SubmitStatus takes a status packet. about, when set, is the document it
// must be about (the API's path names it); otherwise ResponseFor/
// DocumentId names it. The status is queued for the hub and returned.
func (x *Exchange) SubmitStatus(ctx context.Context, r io.Reader, about document.ID) (*inbox.Status, error) {
	sp, err := readStatus(r)
	if err != nil {
		return nil, err
	}
	return x.takeStatus(ctx, sp, about)
}

// SubmitTakeBack takes a status packet of the sender about a document it
// sent, about: 13 only.
func (x *Exchange) SubmitTakeBack(ctx context.Context, r io.Reader, about document.ID) (*inbox.Status, error) {
	sp, err := readStatus(r)
	if err != nil {
		return nil, err
	}
	if sp.Code != document.StatusCancelled {
		return nil, invalid("invalid status", "StatusCode", fmt.Sprintf("%s: the sender of a document reports 13 (it takes the document back); recipients report on the documents they received", sp.Code))
	}
	return x.takeStatus(ctx, sp, about)
}

// TakeBack queues the unit's 13 on a document it sent: it takes the
// document back.
func (x *Exchange) TakeBack(ctx context.Context, id document.ID, description string, officer *document.Officer) (*inbox.Status, error) {
	if _, err := x.spool.Get(ctx, id); err != nil {
		return nil, err
	}
	return x.inbox.QueueTakeBack(ctx, document.Status{DocumentID: id, Unit: x.unit, Time: x.now().UTC(),
		Code: document.StatusCancelled, Description: description, Officer: officer})
}

func readStatus(r io.Reader) (*edxml.StatusPacket, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxStatusPacket+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxStatusPacket {
		return nil, &outbox.Error{Kind: outbox.TooLarge, Message: fmt.Sprintf("the status packet exceeds the limit of %d bytes", MaxStatusPacket)}
	}
	sp, err := edxml.ParseStatus(bytes.NewReader(data), edxml.Limits{MaxPacket: MaxStatusPacket})
	if errors.Is(err, edxml.ErrDocumentPacket) {
		return nil, invalid("a document packet, not a status: send documents to POST /v1/documents", "", "")
	}
	if err != nil {
		return nil, packetErr(err)
	}
	return sp, nil
}

func (x *Exchange) takeStatus(ctx context.Context, sp *edxml.StatusPacket, about document.ID) (*inbox.Status, error) {
	if sp.From.ID != "" && document.UnitID(sp.From.ID) != x.unit {
		return nil, &outbox.Error{Kind: outbox.Unprocessable, Message: "wrong sender", Problems: document.Problems{{Field: "From/OrganId",
			Message: fmt.Sprintf("the status is from %s; this agent reports for unit %s only", sp.From.ID, x.unit)}}}
	}
	ref := strings.TrimSpace(sp.ResponseFor.DocumentID)
	takeBack := sp.Code == document.StatusCancelled
	var id document.ID
	switch {
	case about != "":
		id = about
		if ref != "" && !x.names(ctx, about, ref, takeBack) {
			return nil, invalid("invalid status", "ResponseFor/DocumentId", fmt.Sprintf("%s does not name document %s", ref, about))
		}
	case ref == "":
		return nil, invalid("invalid status", "ResponseFor/DocumentId", "required: the document the status is about")
	case takeBack:
		rec, err := x.findSent(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("packets: status 13 names %s: %w", ref, err)
		}
		id = rec.ID
	default:
		it, err := x.findReceived(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("packets: status %s names %s: %w", sp.Code, ref, err)
		}
		id = it.ID
	}
	st := sp.Status(func(string) (document.ID, bool) { return id, true })
	st.Unit, st.Time = x.unit, x.now().UTC()
	if !takeBack {
		return x.inbox.AddStatus(ctx, st)
	}
	if _, err := x.spool.Get(ctx, id); err != nil {
		if errors.Is(err, spool.ErrNotFound) {
			return nil, &outbox.Error{Kind: outbox.Unprocessable, Message: "not this unit's document", Problems: document.Problems{{Field: "StatusCode",
				Message: fmt.Sprintf("13 takes back a document the unit sent; %s is not one this agent sent", id)}}}
		}
		return nil, err
	}
	return x.inbox.QueueTakeBack(ctx, st)
}

// names reports whether ref (an edx id or an edXML DocumentId) names
// document id: one the unit sent (a take-back) or received.
func (x *Exchange) names(ctx context.Context, id document.ID, ref string, sent bool) bool {
	if ref == string(id) {
		return true
	}
	if sent {
		rec, err := x.spool.Get(ctx, id)
		return err == nil && rec.EdXMLID == ref
	}
	it, err := x.inbox.Get(ctx, id)
	return err == nil && it.EdXMLID == ref
}

// Item kinds (the axis protocol's message types).
const (
	KindDocument = "edoc"
	KindStatus   = "status"
)

// Item is a document or a status waiting for the document system. Its ID
// is the document's edx id, or, for a status, the document's id with -s
// and the status's number in the spool (a recipient's status on a sent
// document) or -r and its number in the inbox (a sender's status on a
// received document).
type Item struct {
	ID         string
	Kind       string
	DocumentID document.ID
	From, To   document.UnitID
	Code       document.StatusCode // a status's code
	Created    time.Time
	Transport  string // the document system's last acknowledgement: "" (none yet), fail, processing
}

// Pending returns up to limit items of a kind the document system has not
// taken yet, oldest first.
func (x *Exchange) Pending(ctx context.Context, kind string, limit int) ([]Item, error) {
	var out []Item
	switch kind {
	case KindDocument:
		its, err := x.inbox.NotHandedOver(ctx, limit)
		if err != nil {
			return nil, err
		}
		for _, it := range its {
			out = append(out, Item{ID: string(it.ID), Kind: kind, DocumentID: it.ID, From: it.From, To: x.unit, Created: it.ReceivedAt, Transport: it.Transport})
		}
	case KindStatus:
		sts, err := x.spool.NotHandedOver(ctx, x.unit, limit)
		if err != nil {
			return nil, err
		}
		for _, st := range sts {
			out = append(out, Item{ID: string(st.DocumentID) + "-s" + strconv.FormatInt(st.Seq, 10), Kind: kind, DocumentID: st.DocumentID,
				From: st.Unit, To: x.unit, Code: st.Code, Created: st.ReceivedAt, Transport: st.Transport})
		}
		ss, err := x.inbox.SenderStatusesNotHandedOver(ctx, limit)
		if err != nil {
			return nil, err
		}
		for _, st := range ss {
			out = append(out, Item{ID: string(st.DocumentID) + "-r" + strconv.FormatInt(st.Seq, 10), Kind: kind, DocumentID: st.DocumentID,
				From: st.Unit, To: x.unit, Code: st.Code, Created: st.ReceivedAt, Transport: st.Transport})
		}
		sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
		if len(out) > limit {
			out = out[:limit]
		}
	default:
		return nil, fmt.Errorf("packets: kind %q: want %s or %s", kind, KindDocument, KindStatus)
	}
	return out, nil
}

// ErrNotFound: no item of this id.
var ErrNotFound = errors.New("packets: no such document or status")

type itemRef struct {
	id   document.ID
	kind byte // 0: a document, 's': a status in the spool, 'r': a sender's status in the inbox
	seq  int64
}

func parseItem(s string) (itemRef, error) {
	s = strings.TrimSpace(s)
	base, rest, found := strings.Cut(s, "-")
	id, err := document.ParseID(base)
	if err != nil {
		return itemRef{}, fmt.Errorf("%w: %q", ErrNotFound, s)
	}
	if !found {
		return itemRef{id: id}, nil
	}
	if len(rest) < 2 || (rest[0] != 's' && rest[0] != 'r') {
		return itemRef{}, fmt.Errorf("%w: %q", ErrNotFound, s)
	}
	seq, err := strconv.ParseInt(rest[1:], 10, 64)
	if err != nil || seq <= 0 {
		return itemRef{}, fmt.Errorf("%w: %q", ErrNotFound, s)
	}
	return itemRef{id: id, kind: rest[0], seq: seq}, nil
}

// WriteItem writes an item as a packet: a received document, or a status.
// It returns the item's kind.
func (x *Exchange) WriteItem(ctx context.Context, w io.Writer, itemID string) (string, error) {
	ref, err := parseItem(itemID)
	if err != nil {
		return "", err
	}
	switch ref.kind {
	case 's':
		return KindStatus, x.WriteSentStatus(ctx, w, ref.id, ref.seq)
	case 'r':
		return KindStatus, x.WriteSenderStatus(ctx, w, ref.id, ref.seq)
	}
	return KindDocument, x.inbox.WritePacketOf(ctx, w, ref.id)
}

// HandOver records the document system's acknowledgement of an item:
// done, fail or processing.
func (x *Exchange) HandOver(ctx context.Context, itemID, transport string) error {
	ref, err := parseItem(itemID)
	if err != nil {
		return err
	}
	switch transport {
	case inbox.TransportDone, inbox.TransportFail, inbox.TransportProcessing:
	default:
		return invalid("invalid acknowledgement", "status", fmt.Sprintf("%q: want done, fail or processing", transport))
	}
	switch ref.kind {
	case 's':
		return x.spool.HandOver(ctx, ref.id, ref.seq, transport)
	case 'r':
		return x.inbox.HandOverSenderStatus(ctx, ref.id, ref.seq, transport)
	}
	return x.inbox.HandOver(ctx, ref.id, transport)
}

// WriteSentStatus writes a recipient's status on a document this unit sent
// as a status packet: ResponseFor names the document as the unit's
// document system knows it (its edXML DocumentId).
func (x *Exchange) WriteSentStatus(ctx context.Context, w io.Writer, id document.ID, seq int64) error {
	rec, err := x.spool.Get(ctx, id)
	if err != nil {
		return err
	}
	st, err := x.spool.Status(ctx, id, seq)
	if err != nil {
		return err
	}
	about := edxml.ResponseFor{OrganID: string(x.unit), DocumentID: rec.EdXMLID}
	if raw, err := x.spool.Container(id); err == nil {
		lim := container.DefaultLimits
		lim.MaxSize = max(lim.MaxSize, int64(len(raw)))
		if c, err := container.Open(raw, lim); err == nil {
			about = responseFor(c.Meta, rec.EdXMLID)
		}
	}
	return edxml.WriteStatus(w, edxml.NewStatusPacket(st.Status, about))
}

// WriteSenderStatus writes a sender's status on a document this unit
// received (13) as a status packet.
func (x *Exchange) WriteSenderStatus(ctx context.Context, w io.Writer, id document.ID, seq int64) error {
	it, err := x.inbox.Get(ctx, id)
	if err != nil {
		return err
	}
	st, err := x.inbox.SenderStatus(ctx, id, seq)
	if err != nil {
		return err
	}
	sp := edxml.NewStatusPacket(st.Status, responseFor(&it.Meta, it.EdXMLID))
	sp.From.Name = it.Meta.FromName
	return edxml.WriteStatus(w, sp)
}

// responseFor names a document as edXML does.
func responseFor(d *document.Document, edxmlID string) edxml.ResponseFor {
	if edxmlID == "" {
		edxmlID = string(d.ID)
	}
	return edxml.ResponseFor{OrganID: string(d.From), Code: strings.Trim(d.Number+"/"+d.Notation, "/"),
		PromulgationDate: d.PromulgatedAt, DocumentID: edxmlID}
}

// Unit is a unit the agent knows, with its name when known.
type Unit struct {
	ID   document.UnitID
	Name string
}

// Units returns this unit and those it exchanged documents with (the
// agent has no list of every unit the hub knows), sorted.
func (x *Exchange) Units(ctx context.Context) ([]Unit, error) {
	names := map[document.UnitID]string{x.unit: x.cfg.UnitName}
	sent, err := x.spool.Units(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range sent {
		if _, ok := names[u]; !ok {
			names[u] = ""
		}
	}
	senders, err := x.inbox.Senders(ctx)
	if err != nil {
		return nil, err
	}
	for u, n := range senders {
		if names[u] == "" {
			names[u] = n
		}
	}
	out := make([]Unit, 0, len(names))
	for u, n := range names {
		out = append(out, Unit{ID: u, Name: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Recent returns up to limit documents this unit sent, newest first.
func (x *Exchange) Recent(ctx context.Context, limit int) ([]*spool.Record, error) {
	return x.spool.Recent(ctx, limit)
}
