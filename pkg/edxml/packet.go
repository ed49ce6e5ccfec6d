package edxml

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Options control Parse.
type Options struct {
	Limits Limits
	// ID is set as the document's id: edXML carries none of edx's.
	ID document.ID
	// Open returns where the decoded content of attachment i (0-based, in
	// packet order) goes; Parse closes it when the content ends. The
	// attachment's name may come after its content, so Open is not told
	// it. Nil discards the content (its size, SHA-256 and type are still
	// found).
	Open func(i int) (io.WriteCloser, error)
	// Resolve maps the edXML DocumentId of the document this one answers
	// (ResponseFor) to its edx id, for in_reply_to. Nil takes an edx id (a
	// ULID) as is and leaves anything else unresolved.
	Resolve func(edxmlID string) (document.ID, bool)
}

// Attachment is one attachment of a packet.
type Attachment struct {
	Index       int    `json:"index"`                  // 1-based, in packet order
	Name        string `json:"name"`                   // AttachmentName as sent
	File        string `json:"file"`                   // the name edx keeps it under: files/<File>
	ContentID   string `json:"content_id,omitempty"`   // as sent
	Description string `json:"description,omitempty"`  // as sent
	ContentType string `json:"content_type,omitempty"` // as declared by the sender
	Detected    string `json:"detected"`               // media type of the bytes
	Zipped      bool   `json:"zipped,omitempty"`       // the sender zipped it: kept as sent, File ends in .zip
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"` // hex
}

// Packet is a document packet read.
type Packet struct {
	Document    *document.Document
	Attachments []Attachment
	Warnings    []string // what a reader should know: zipped attachments, a manifest that names no attachment ...
}

// Parse reads a document packet. Its document is not validated: call
// Document.Validate. A status packet is an error wrapping ErrStatusPacket.
func Parse(r io.Reader, opt Options) (*Packet, error) {
	if err := opt.Limits.Validate(); err != nil {
		return nil, err
	}
	h := &docHandler{opt: opt, d: &document.Document{ID: opt.ID}}
	p := newParser(r, opt.Limits, h)
	h.p = p
	if err := h.run(); err != nil {
		h.closeSink()
		return nil, err
	}
	return &Packet{Document: h.d, Attachments: h.list, Warnings: h.warnings}, nil
}

type docHandler struct {
	p        *parser
	opt      Options
	d        *document.Document
	atts     []*attState
	list     []Attachment
	typeRaw  string
	reply    string
	refs     []refRec
	warnings []string
	buf      []byte
	sink     io.WriteCloser // open while an attachment streams
}

type attState struct {
	Attachment
	path    string
	content bool
	head    []byte
}

type refRec struct {
	path string
	key  []int
	n    *node
}

func (h *docHandler) run() error {
	p := h.p
	root, err := p.root()
	if err != nil {
		return err
	}
	switch root.Name.Local {
	case "edXML":
	case "Envelope":
		return &Error{Code: reason.EdXMLMalformed, Path: "/" + root.Name.Local, Msg: "a SOAP envelope", Err: ErrStatusPacket}
	default:
		return errf(reason.EdXMLMalformed, "/"+root.Name.Local, "the root element is %s, not edXML", root.Name.Local)
	}
	if err := p.walk(packetSchema, rootPath, nil, 0); err != nil {
		return err
	}
	if err := p.end(); err != nil {
		return err
	}
	return h.finish()
}

func (h *docHandler) begin(e *elem, rep int, path string) error {
	switch e.name {
	case "To":
		if len(h.d.To) >= document.MaxRecipients {
			return errf(reason.EdXMLLimit, path, "more than %d recipients", document.MaxRecipients)
		}
		for len(h.d.To) < rep {
			h.d.To = append(h.d.To, "")
		}
	case "Attachment":
		if rep > h.p.lim.MaxAttachments {
			return errf(reason.EdXMLLimit, path, "more than %d attachments", h.p.lim.MaxAttachments)
		}
		for len(h.atts) < rep {
			h.atts = append(h.atts, &attState{Attachment: Attachment{Index: len(h.atts) + 1}, path: path})
		}
	}
	return nil
}

func (h *docHandler) set(f field, rep int, path, v string) (bool, error) {
	d := h.d
	switch f {
	case fFrom:
		d.From = document.UnitID(v)
	case fFromName:
		d.FromName = v
	case fTo:
		d.To[rep-1] = document.UnitID(v)
	case fNumber:
		d.Number = v
	case fNotation:
		d.Notation = v
	case fPlace:
		d.PromulgatedPlace = v
	case fPromulgated:
		return false, dateField(&d.PromulgatedAt, path, v)
	case fType:
		if _, ok := document.LookupDocType(v); ok || v == "" {
			d.Type = v
			return false, nil
		}
		h.typeRaw = v
		return true, nil
	case fTypeName:
		d.TypeName = v
	case fSubject:
		d.Subject = v
	case fContent:
		d.Content = v
	case fCompetence:
		d.Signer.Competence = v
	case fPosition:
		d.Signer.Position = v
	case fFullName:
		d.Signer.FullName = v
	case fDue:
		return false, dateField(&d.DueDate, path, v)
	case fPlaces:
		if v != "" {
			d.Places = append(d.Places, v)
		}
	case fPriority:
		n, err := intField(path, v)
		d.Urgency = document.Urgency(n)
		return false, err
	case fSphere:
		d.Sphere = v
	case fPages:
		n, err := intField(path, v)
		d.PageCount = n
		return false, err
	case fSteering:
		d.Steering = v
	case fEdXMLID:
		d.EdXMLID = v
	case fBusiness:
		n, err := intField(path, v)
		d.BusinessType = document.BusinessType(n)
		return false, err
	case fReplyDoc:
		if rep == 1 {
			h.reply = v
		}
		return true, nil
	case fAttID:
		h.atts[rep-1].ContentID = v
		return true, nil
	case fAttName:
		h.atts[rep-1].Name = v
		return true, nil
	case fAttDesc:
		h.atts[rep-1].Description = v
		return true, nil
	case fAttType:
		h.atts[rep-1].ContentType = v
		return true, nil
	default:
		return false, fmt.Errorf("edxml: internal: field %d in a document packet", f)
	}
	return false, nil
}

func dateField(dst *string, path, v string) error {
	if v == "" {
		*dst = ""
		return nil
	}
	t, ok := parseDate(v)
	if !ok {
		return errf(reason.EdXMLField, path, "%q is not a date (want yyyy/MM/dd)", clip(v, 40))
	}
	*dst = t.Format(jsonDate)
	return nil
}

func intField(path, v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < -1<<31 || n > 1<<31-1 {
		return 0, errf(reason.EdXMLField, path, "%q is not a whole number", clip(v, 40))
	}
	return n, nil
}

func (h *docHandler) raw(e *elem, path string, key []int, n *node) bool {
	if e == referenceElem {
		h.refs = append(h.refs, refRec{path: path, key: key, n: n})
		return false
	}
	return true
}

// content streams an attachment's base64 content into its sink, counting,
// hashing and sniffing it on the way.
func (h *docHandler) content(rep int, path string) error {
	p, a := h.p, h.atts[rep-1]
	a.content = true
	name := ""
	if a.Name != "" {
		name = fmt.Sprintf(" %q", a.Name)
	}
	if p.dec.InputOffset()+p.in.skipped != p.in.n {
		return fmt.Errorf("edxml: internal: the XML decoder read ahead of %s", path)
	}
	var w io.Writer = io.Discard
	if h.opt.Open != nil {
		wc, err := h.opt.Open(rep - 1)
		if err != nil {
			return fmt.Errorf("edxml: attachment %d%s: %w", rep, name, err)
		}
		h.sink, w = wc, wc
	}
	sum := sha256.New()
	cw := &counter{head: a.head[:0]}
	if !p.in.selfClosed() {
		cr := &contentReader{in: p.in, start: p.in.n}
		if h.buf == nil {
			h.buf = make([]byte, 32<<10)
		}
		_, err := io.CopyBuffer(io.MultiWriter(w, sum, cw), base64.NewDecoder(base64.StdEncoding, cr), h.buf)
		p.in.skipped += cr.consumed()
		p.in.mark = p.in.n
		if err != nil {
			var ce base64.CorruptInputError
			switch {
			case errors.Is(err, errBadRef):
				return errf(reason.EdXMLBase64, path, "attachment %d%s: content is not valid base64 (%v)", rep, name, err)
			case errors.As(err, &ce):
				return errf(reason.EdXMLBase64, path, "attachment %d%s: content is not valid base64 (bad character or padding at character %d)", rep, name, int64(ce)+1)
			case errors.Is(err, errPacketTooLarge), errors.Is(err, io.ErrUnexpectedEOF):
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return errf(reason.EdXMLMalformed, path, "the packet ends inside attachment %d%s", rep, name)
				}
				return p.readErr(path, err)
			case cr.err != nil && cr.err != io.EOF:
				return &Error{Code: reason.EdXMLMalformed, Path: path, Msg: fmt.Sprintf("attachment %d%s: unreadable", rep, name), Err: cr.err}
			}
			return fmt.Errorf("edxml: attachment %d%s: %w", rep, name, err)
		}
	}
	if err := h.closeSink(); err != nil {
		return fmt.Errorf("edxml: attachment %d%s: %w", rep, name, err)
	}
	a.Size, a.head = cw.n, cw.head
	a.SHA256 = fmt.Sprintf("%x", sum.Sum(nil))
	return nil
}

func (h *docHandler) closeSink() error {
	if h.sink == nil {
		return nil
	}
	err := h.sink.Close()
	h.sink = nil
	return err
}

// counter counts bytes and keeps the first 512 for sniffing.
type counter struct {
	n    int64
	head []byte
}

func (c *counter) Write(b []byte) (int, error) {
	c.n += int64(len(b))
	if k := 512 - len(c.head); k > 0 {
		c.head = append(c.head, b[:min(k, len(b))]...)
	}
	return len(b), nil
}

// finish resolves what needs the whole packet: the document type, the
// document answered, the attachments' names and types, the manifest.
func (h *docHandler) finish() error {
	d := h.d
	if h.typeRaw != "" {
		d.Type = h.typeRaw
		for _, t := range document.DocTypes {
			if d.TypeName != "" && strings.EqualFold(t.Name, d.TypeName) {
				d.Type = t.Code
			}
		}
	}
	if h.reply != "" {
		resolve := h.opt.Resolve
		if resolve == nil {
			resolve = func(s string) (document.ID, bool) {
				id, err := document.ParseID(s)
				return id, err == nil
			}
		}
		if id, ok := resolve(h.reply); ok {
			d.InReplyTo = id
		}
	}
	used := map[string]int{}
	for _, a := range h.atts {
		if !a.content {
			return errf(reason.EdXMLAttachment, a.path, "attachment %d %q has no content (ContentTransferEncoded)", a.Index, a.Name)
		}
		a.Detected, a.Zipped = sniff(a.head, a.Name, a.ContentType)
		f, err := fileName(a.Index, a.Name, a.Zipped)
		if err != nil {
			return errf(reason.EdXMLAttachment, a.path, "attachment %d: %v", a.Index, err)
		}
		// A zipped attachment's name is reserved with and without .zip: the
		// writer finds its file by either.
		plain, _ := fileName(a.Index, a.Name, false)
		for _, n := range []string{f, plain} {
			if j, ok := used[strings.ToLower(n)]; ok && j != a.Index {
				return errf(reason.EdXMLAttachment, a.path, "attachment %d %q: its file name %q is already attachment %d's", a.Index, a.Name, n, j)
			}
			used[strings.ToLower(n)] = a.Index
		}
		a.File = f
		if a.Name == "" {
			// Keep the attachment's place even with nothing else kept.
			x := document.EdXMLExtra{Path: a.path, XML: "<AttachmentName/>"}
			if err := h.p.add(x.Path, keyOf(packetSchema, x), x.XML); err != nil {
				return err
			}
		}
		switch {
		case a.Zipped:
			h.warnings = append(h.warnings, fmt.Sprintf("attachment %d %q is a ZIP archive (declared %s): kept as sent, as %s", a.Index, a.Name, orNone(a.ContentType), f))
		case a.ContentType != "" && !sameType(a.ContentType, a.Detected):
			h.warnings = append(h.warnings, fmt.Sprintf("attachment %d %q is declared %s but its content is %s", a.Index, a.Name, a.ContentType, a.Detected))
		}
		h.list = append(h.list, a.Attachment)
	}
	for _, r := range h.refs {
		if h.explained(r.n) {
			continue
		}
		cid, _ := r.n.textOf("ContentId")
		name, _ := r.n.textOf("AttachmentName")
		h.warnings = append(h.warnings, fmt.Sprintf("the manifest lists %s that is not an attachment: kept", orNone(strings.TrimSpace(cid+" "+name))))
		if err := h.p.keep(r.path, r.key, r.n); err != nil {
			return err
		}
	}
	d.EdXMLExtra = h.p.sorted()
	return nil
}

// explained reports whether a manifest Reference says no more than an
// attachment does (Write writes it again from the attachment).
func (h *docHandler) explained(n *node) bool {
	for _, k := range n.kids {
		if t, ok := k.(string); ok && strings.TrimSpace(t) == "" {
			continue
		}
		c, ok := k.(*node)
		if !ok || len(c.attr) > 0 {
			return false
		}
		switch c.name.Local {
		case "ContentId", "AttachmentName", "Description", "ContentType":
			for _, t := range c.kids {
				if _, ok := t.(string); !ok {
					return false
				}
			}
		default:
			return false
		}
	}
	cid, _ := n.textOf("ContentId")
	name, _ := n.textOf("AttachmentName")
	desc, _ := n.textOf("Description")
	typ, _ := n.textOf("ContentType")
	if cid == "" && name == "" && desc == "" && typ == "" {
		return true // says nothing
	}
	for _, a := range h.atts {
		if (cid == "" || normCID(cid) == normCID(a.ContentID)) &&
			(name == "" || name == a.Name) &&
			(desc == "" || desc == strings.TrimSpace(a.Description)) &&
			(typ == "" || typ == a.ContentType) {
			return true
		}
	}
	return false
}

func normCID(s string) string {
	s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "<"), ">")
	if len(s) >= 4 && strings.EqualFold(s[:4], "cid:") {
		s = s[4:]
	}
	return s
}

func sameType(declared, detected string) bool {
	declared = strings.ToLower(strings.TrimSpace(declared))
	if i := strings.IndexByte(declared, ';'); i >= 0 {
		declared = strings.TrimSpace(declared[:i])
	}
	switch {
	case declared == detected, declared == "application/octet-stream":
		return true
	case strings.HasPrefix(detected, "text/") && strings.HasPrefix(declared, "text/"):
		return true
	case detected == "application/xml" && strings.HasSuffix(declared, "xml"):
		return true
	}
	return false
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// fileName is the name edx keeps attachment i under: its AttachmentName
// without any directory, reserved or control characters replaced, with .zip
// added when the sender zipped it, or attachment-i when it has none.
func fileName(i int, name string, zipped bool) (string, error) {
	if j := strings.LastIndexAny(name, `/\`); j >= 0 {
		name = name[j+1:]
	}
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(`:*?"<>|`, r) {
			return '_'
		}
		return r
	}, name)
	name = strings.TrimRight(strings.TrimSpace(name), ". ")
	if name == "" {
		name = "attachment-" + strconv.Itoa(i)
	}
	if zipped && !strings.HasSuffix(strings.ToLower(name), ".zip") {
		name += ".zip"
	}
	if len(name) > 255 {
		return "", fmt.Errorf("name longer than 255 bytes")
	}
	return name, nil
}
