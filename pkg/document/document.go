// Package document holds the metadata of an official document as edx carries
// it (document.json inside the signed container), following the edXML header
// of QCVN 102:2016/BTTTT and Decree 30/2020/ND-CP, with English JSON names;
// unit identifiers, document ids and status codes.
package document

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Signer is the signing officer printed on the document (SignerInfo).
type Signer struct {
	Competence string `json:"competence,omitempty"` // TM., KT., TL., TUQ. or empty
	Position   string `json:"position"`
	FullName   string `json:"full_name"`
}

// Document is document.json: the metadata of one official document.
type Document struct {
	ID               ID              `json:"id"`
	EdXMLID          string          `json:"edxml_id,omitempty"`
	BusinessType     BusinessType    `json:"business_type"`
	From             UnitID          `json:"from"`
	FromName         string          `json:"from_name,omitempty"`
	To               []UnitID        `json:"to"`
	Number           string          `json:"number"`
	Notation         string          `json:"notation"`
	PromulgatedAt    string          `json:"promulgated_at"` // YYYY-MM-DD
	PromulgatedPlace string          `json:"promulgated_place,omitempty"`
	Type             string          `json:"type"`
	TypeName         string          `json:"type_name,omitempty"`
	Subject          string          `json:"subject"`
	Content          string          `json:"content,omitempty"`
	Signer           Signer          `json:"signer"`
	DueDate          string          `json:"due_date,omitempty"` // YYYY-MM-DD
	Urgency          Urgency         `json:"urgency"`
	Confidentiality  Confidentiality `json:"confidentiality"`
	Sphere           string          `json:"sphere,omitempty"`
	PageCount        int             `json:"page_count,omitempty"`
	Places           []string        `json:"places,omitempty"`
	InReplyTo        ID              `json:"in_reply_to,omitempty"`
	Steering         string          `json:"steering,omitempty"`
	// EdXMLExtra keeps, for a document imported from edXML, every element
	// that has no field above (unknown extensions, trace headers, attachment
	// descriptions ...), so that an export writes it back (package edxml).
	EdXMLExtra []EdXMLExtra `json:"edxml_extra,omitempty"`
	// Upstream is set on a document the city's gateway unit took from an
	// upstream axis (the national axis) and brought into the city: From is
	// then the gateway, which signed it, and Upstream says who sent it
	// there and under which id the upstream knows it.
	Upstream *Upstream `json:"upstream,omitempty"`
}

// Upstream is where a document brought in by the gateway comes from.
type Upstream struct {
	// From and FromName are the sender outside the city (the packet's
	// From/OrganId and OrganName).
	From     UnitID `json:"from"`
	FromName string `json:"from_name,omitempty"`
	// Axis names the upstream axis (its endpoint's host, or as configured).
	Axis string `json:"axis"`
	// DocID is the upstream's own id of the document (its
	// getReceivedEdocList docId), kept for reconciliation.
	DocID string `json:"doc_id"`
}

// EdXMLExtra is one edXML element kept without a document.json field: the
// element path of its parent (e.g. "/edXML/edXMLEnvelope/edXMLHeader/
// MessageHeader/From") and the element itself as XML, elements of the edXML
// namespace unprefixed.
type EdXMLExtra struct {
	Path string `json:"path"`
	XML  string `json:"xml"`
}

// Bounds of edxml_extra.
const (
	MaxEdXMLExtra      = 10000   // elements
	MaxEdXMLExtraBytes = 4 << 20 // bytes of XML in total
)

// MaxRecipients bounds the recipient list of one document.
const MaxRecipients = 2000

// Parse decodes document.json strictly: unknown fields, trailing data and
// malformed JSON are errors. It does not validate; call Validate.
func Parse(data []byte) (*Document, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("document: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var d Document
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("document: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("document: trailing data after the JSON object")
	}
	return &d, nil
}

// Marshal encodes d as indented JSON, the form edx writes into containers.
func (d *Document) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

const dateLayout = "2006-01-02"

// ParseDate parses a YYYY-MM-DD date.
func ParseDate(s string) (time.Time, error) { return time.Parse(dateLayout, s) }

// Validate returns every problem of d, each with its field path, as Problems.
func (d *Document) Validate() error {
	var p Problems
	if d.ID == "" {
		p.Add("id", "required")
	} else if err := d.ID.Validate(); err != nil {
		p.Add("id", err.Error())
	}
	if d.BusinessType < BusinessNew || d.BusinessType > BusinessReplace {
		p.Add("business_type", "want 0 (new), 1 (revoke), 2 (update) or 3 (replace)")
	}
	if d.BusinessType != BusinessNew && d.InReplyTo == "" {
		p.Add("in_reply_to", "required for business types 1, 2 and 3: the earlier document's id")
	}
	if d.InReplyTo != "" {
		if err := d.InReplyTo.Validate(); err != nil {
			p.Add("in_reply_to", err.Error())
		}
	}
	if d.From == "" {
		p.Add("from", "required")
	} else if err := d.From.Validate(); err != nil {
		p.Add("from", err.Error())
	}
	if len(d.To) == 0 {
		p.Add("to", "at least one recipient is required")
	}
	if len(d.To) > MaxRecipients {
		p.Add("to", fmt.Sprintf("more than %d recipients", MaxRecipients))
	}
	seen := make(map[UnitID]bool, len(d.To))
	for i, u := range d.To {
		f := fmt.Sprintf("to[%d]", i)
		if err := u.Validate(); err != nil {
			p.Add(f, err.Error())
			continue
		}
		if seen[u] {
			p.Add(f, fmt.Sprintf("recipient %s listed twice", u))
		}
		if u == d.From {
			p.Add(f, "a unit cannot send to itself")
		}
		seen[u] = true
	}
	text(&p, "number", d.Number, true, 50)
	text(&p, "notation", d.Notation, true, 100)
	if d.PromulgatedAt == "" {
		p.Add("promulgated_at", "required (YYYY-MM-DD)")
	} else if _, err := ParseDate(d.PromulgatedAt); err != nil {
		p.Add("promulgated_at", "want a date YYYY-MM-DD")
	}
	text(&p, "promulgated_place", d.PromulgatedPlace, false, 200)
	if d.Type == "" {
		p.Add("type", "required: a document type code such as QĐ or CV")
	} else if t, ok := LookupDocType(d.Type); !ok {
		p.Add("type", fmt.Sprintf("unknown document type code %q", d.Type))
	} else if d.TypeName != "" && d.TypeName != t.Name {
		p.Add("type_name", fmt.Sprintf("%q does not match type %s (%s)", d.TypeName, t.Code, t.Name))
	}
	text(&p, "subject", d.Subject, true, 2000)
	text(&p, "content", d.Content, false, 1<<20)
	text(&p, "from_name", d.FromName, false, 500)
	text(&p, "signer.position", d.Signer.Position, true, 200)
	text(&p, "signer.full_name", d.Signer.FullName, true, 200)
	if !validCompetence(d.Signer.Competence) {
		p.Add("signer.competence", "want TM., KT., TL., TUQ. or empty")
	}
	if d.DueDate != "" {
		if _, err := ParseDate(d.DueDate); err != nil {
			p.Add("due_date", "want a date YYYY-MM-DD")
		}
	}
	if d.Urgency < UrgencyNormal || d.Urgency > UrgencyFlashTimed {
		p.Add("urgency", "want 0 (normal), 1 (khẩn), 2 (thượng khẩn), 3 (hỏa tốc) or 4 (hỏa tốc hẹn giờ)")
	}
	if d.Confidentiality != ConfidentialityNone {
		p.Add("confidentiality", "classified documents (mật, tối mật, tuyệt mật) must not travel on this network")
	}
	if d.PageCount < 0 {
		p.Add("page_count", "must not be negative")
	}
	for i, pl := range d.Places {
		text(&p, fmt.Sprintf("places[%d]", i), pl, true, 500)
	}
	text(&p, "sphere", d.Sphere, false, 200)
	text(&p, "steering", d.Steering, false, 50)
	text(&p, "edxml_id", d.EdXMLID, false, 200)
	validateExtra(&p, d.EdXMLExtra)
	if u := d.Upstream; u != nil {
		if err := u.From.Validate(); err != nil {
			p.Add("upstream.from", err.Error())
		} else if u.From == d.From {
			p.Add("upstream.from", "the sender outside the city cannot be the gateway itself")
		}
		text(&p, "upstream.from_name", u.FromName, false, 500)
		text(&p, "upstream.axis", u.Axis, true, 200)
		text(&p, "upstream.doc_id", u.DocID, true, 200)
	}
	return p.Err()
}

func validateExtra(p *Problems, extra []EdXMLExtra) {
	if len(extra) > MaxEdXMLExtra {
		p.Add("edxml_extra", fmt.Sprintf("more than %d elements", MaxEdXMLExtra))
		return
	}
	total := 0
	for i, x := range extra {
		f := fmt.Sprintf("edxml_extra[%d]", i)
		total += len(x.XML)
		if !strings.HasPrefix(x.Path, "/edXML") || len(x.Path) > 1000 || strings.ContainsFunc(x.Path, func(r rune) bool { return r < 0x20 }) {
			p.Add(f+".path", "want an element path such as /edXML/edXMLEnvelope/edXMLHeader/MessageHeader")
		}
		if !strings.HasPrefix(x.XML, "<") {
			p.Add(f+".xml", "want an XML element")
		}
	}
	if total > MaxEdXMLExtraBytes {
		p.Add("edxml_extra", fmt.Sprintf("longer than %d bytes in total", MaxEdXMLExtraBytes))
	}
}

func text(p *Problems, field, v string, required bool, max int) {
	switch {
	case required && strings.TrimSpace(v) == "":
		p.Add(field, "required")
	case len(v) > max:
		p.Add(field, fmt.Sprintf("longer than %d bytes", max))
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' && r != '\r' }):
		p.Add(field, "contains control characters")
	}
}

func validCompetence(c string) bool {
	for _, v := range Competences {
		if v == c {
			return true
		}
	}
	return false
}

// Template returns an example document to start from.
func Template(now time.Time) *Document {
	return &Document{
		ID:               NewID(now),
		From:             "000.00.00.H29",
		FromName:         "Ủy ban nhân dân Thành phố Hồ Chí Minh",
		To:               []UnitID{"000.01.00.H29", "000.02.00.H29"},
		Number:           "1234",
		Notation:         "QĐ-UBND",
		PromulgatedAt:    now.Format(dateLayout),
		PromulgatedPlace: "Thành phố Hồ Chí Minh",
		Type:             "QĐ",
		TypeName:         "Quyết định",
		Subject:          "Về việc phê duyệt kế hoạch sử dụng đất đai năm 2027",
		Signer:           Signer{Competence: "KT.", Position: "Phó Chủ tịch", FullName: "Nguyễn Văn A"},
		DueDate:          now.AddDate(0, 0, 15).Format(dateLayout),
		Urgency:          UrgencyUrgent,
		Places:           []string{"Như trên", "Lưu: VT"},
	}
}
