package edxml

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Organ is an agency as edXML names it.
type Organ struct {
	ID        string `json:"organ_id"`
	InCharge  string `json:"organization_in_charge,omitempty"`
	Name      string `json:"organ_name,omitempty"`
	Address   string `json:"organ_add,omitempty"`
	Email     string `json:"email,omitempty"`
	Telephone string `json:"telephone,omitempty"`
	Fax       string `json:"fax,omitempty"`
	Website   string `json:"website,omitempty"`
}

// ResponseFor names the document a status is about, as edXML does.
type ResponseFor struct {
	OrganID          string `json:"organ_id,omitempty"`          // the document's sender
	Code             string `json:"code,omitempty"`              // its number/notation
	PromulgationDate string `json:"promulgation_date,omitempty"` // YYYY-MM-DD
	DocumentID       string `json:"document_id"`                 // its edXML DocumentId
}

// Staff is the officer handling the document (StaffInfo).
type Staff struct {
	Department string `json:"department,omitempty"`
	Name       string `json:"staff,omitempty"`
	Email      string `json:"email,omitempty"`
	Mobile     string `json:"mobile,omitempty"`
}

// StatusPacket is an edXML status packet: a recipient's progress on a
// document (codes 01–16, see document.StatusCode).
type StatusPacket struct {
	From        Organ               `json:"from"`
	ResponseFor ResponseFor         `json:"response_for"`
	Staff       Staff               `json:"staff_info"`
	Code        document.StatusCode `json:"status_code"`
	Description string              `json:"description,omitempty"`
	Time        time.Time           `json:"timestamp"`
	// Extra keeps unknown elements, with the path of their parent in the
	// MessageHeader form, so that WriteStatus writes them back.
	Extra []document.EdXMLExtra `json:"extra,omitempty"`
}

// ParseStatus reads a status packet, in the national SDK's form (fields in
// MessageHeader) or a provincial hub's (fields in a Status element, bare or
// in a SOAP envelope). A document packet is an error wrapping
// ErrDocumentPacket.
func ParseStatus(r io.Reader, lim Limits) (*StatusPacket, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	h := &statusHandler{seen: map[field]bool{}}
	p := newParser(r, lim, h)
	root, err := p.root()
	if err != nil {
		return nil, err
	}
	if root.Name.Local != "edXML" && root.Name.Local != "Envelope" {
		return nil, errf(reason.EdXMLMalformed, "/"+root.Name.Local, "the root element is %s, not edXML", root.Name.Local)
	}
	if err := p.walk(statusSchema, rootPath, nil, 0); err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	if !h.seen[sCode] {
		return nil, &Error{Code: reason.EdXMLMalformed, Path: messagePath, Msg: "no StatusCode", Err: ErrDocumentPacket}
	}
	if h.s.Code == "" {
		return nil, errf(reason.EdXMLField, messagePath+"/StatusCode", "empty")
	}
	h.s.Extra = p.sorted()
	return &h.s, nil
}

type statusHandler struct {
	s    StatusPacket
	seen map[field]bool
}

func (h *statusHandler) begin(e *elem, rep int, path string) error { return nil }

func (h *statusHandler) raw(e *elem, path string, key []int, n *node) bool { return true }

func (h *statusHandler) content(rep int, path string) error {
	return fmt.Errorf("edxml: internal: content in a status packet")
}

func (h *statusHandler) set(f field, rep int, path, v string) (bool, error) {
	if h.seen[f] {
		return false, errf(reason.EdXMLField, path, "appears twice")
	}
	h.seen[f] = true
	s := &h.s
	switch f {
	case sFromID:
		s.From.ID = v
	case sFromInCharge:
		s.From.InCharge = v
	case sFromName:
		s.From.Name = v
	case sFromAdd:
		s.From.Address = v
	case sFromEmail:
		s.From.Email = v
	case sFromTel:
		s.From.Telephone = v
	case sFromFax:
		s.From.Fax = v
	case sFromWeb:
		s.From.Website = v
	case sRespOrgan:
		s.ResponseFor.OrganID = v
	case sRespCode:
		s.ResponseFor.Code = v
	case sRespDate:
		return false, dateField(&s.ResponseFor.PromulgationDate, path, v)
	case sRespDocID:
		s.ResponseFor.DocumentID = v
	case sDept:
		s.Staff.Department = v
	case sStaff:
		s.Staff.Name = v
	case sEmail:
		s.Staff.Email = v
	case sMobile:
		s.Staff.Mobile = v
	case sCode:
		if len(v) == 1 && v[0] >= '0' && v[0] <= '9' {
			v = "0" + v // 1 for 01
		}
		s.Code = document.StatusCode(v)
	case sDesc:
		s.Description = v
	case sTime:
		if v == "" {
			return false, nil
		}
		t, ok := parseTime(v)
		if !ok {
			return false, errf(reason.EdXMLField, path, "%q is not a time (want yyyy/MM/dd HH:mm:ss)", clip(v, 40))
		}
		s.Time = t.In(vietnam).Truncate(time.Second) // what edXML can write
	default:
		return false, fmt.Errorf("edxml: internal: field %d in a status packet", f)
	}
	return false, nil
}

// WriteStatus writes s as a status packet in the national SDK's form.
func WriteStatus(w io.Writer, s *StatusPacket) error {
	ix, err := indexKept(statusSchema, s.Extra)
	if err != nil {
		return err
	}
	if _, ok := toWireDate(s.ResponseFor.PromulgationDate); s.ResponseFor.PromulgationDate != "" && !ok {
		return fmt.Errorf("edxml: response_for.promulgation_date %q: want a date YYYY-MM-DD", s.ResponseFor.PromulgationDate)
	}
	return write(w, statusSchema, ix, statusSource{s})
}

type statusSource struct{ s *StatusPacket }

func (src statusSource) value(f field, rep int) (string, bool) {
	s := src.s
	v := ""
	switch f {
	case sFromID:
		v = s.From.ID
	case sFromInCharge:
		v = s.From.InCharge
	case sFromName:
		v = s.From.Name
	case sFromAdd:
		v = s.From.Address
	case sFromEmail:
		v = s.From.Email
	case sFromTel:
		v = s.From.Telephone
	case sFromFax:
		v = s.From.Fax
	case sFromWeb:
		v = s.From.Website
	case sRespOrgan:
		v = s.ResponseFor.OrganID
	case sRespCode:
		v = s.ResponseFor.Code
	case sRespDate:
		v, _ = toWireDate(s.ResponseFor.PromulgationDate)
	case sRespDocID:
		v = s.ResponseFor.DocumentID
	case sDept:
		v = s.Staff.Department
	case sStaff:
		v = s.Staff.Name
	case sEmail:
		v = s.Staff.Email
	case sMobile:
		v = s.Staff.Mobile
	case sCode:
		v = string(s.Code)
	case sDesc:
		v = s.Description
	case sTime:
		if !s.Time.IsZero() {
			v = s.Time.In(vietnam).Format(wireTime)
		}
	}
	return v, v != ""
}

func (statusSource) values(field) []string                                    { return nil }
func (statusSource) count(e *elem, path string, kept int) int                 { return kept }
func (statusSource) special(w *writer, e *elem, path string, rep, d int) bool { return false }

// Status returns the status as edx records it. resolve maps the edXML
// DocumentId of the document to its edx id; nil takes an edx id (a ULID)
// as is. An unresolved document leaves DocumentID empty (Validate says so).
func (s *StatusPacket) Status(resolve func(edxmlID string) (document.ID, bool)) document.Status {
	st := document.Status{
		Unit:        document.UnitID(s.From.ID),
		Time:        s.Time,
		Code:        s.Code,
		Description: s.Description,
	}
	if resolve == nil {
		resolve = func(v string) (document.ID, bool) {
			id, err := document.ParseID(v)
			return id, err == nil
		}
	}
	if id, ok := resolve(s.ResponseFor.DocumentID); ok {
		st.DocumentID = id
	}
	if s.Staff != (Staff{}) {
		var contact []string
		for _, c := range []string{s.Staff.Email, s.Staff.Mobile} {
			if c != "" {
				contact = append(contact, c)
			}
		}
		st.Officer = &document.Officer{Department: s.Staff.Department, Name: s.Staff.Name, Contact: strings.Join(contact, ", ")}
	}
	return st
}

// NewStatusPacket returns the status packet for st. about names the
// document as its sender knows it (its edXML DocumentId at least); an empty
// one names it by its edx id. The officer's contact goes in Email when it
// holds an @, else in Mobile.
func NewStatusPacket(st document.Status, about ResponseFor) *StatusPacket {
	if about.DocumentID == "" {
		about.DocumentID = string(st.DocumentID)
	}
	s := &StatusPacket{
		From:        Organ{ID: string(st.Unit)},
		ResponseFor: about,
		Code:        st.Code,
		Description: st.Description,
		Time:        st.Time,
	}
	if o := st.Officer; o != nil {
		s.Staff = Staff{Department: o.Department, Name: o.Name}
		if strings.Contains(o.Contact, "@") {
			s.Staff.Email = o.Contact
		} else {
			s.Staff.Mobile = o.Contact
		}
	}
	return s
}
