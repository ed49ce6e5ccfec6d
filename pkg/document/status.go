package document

import (
	"fmt"
	"strings"
	"time"
)

// StatusCode is an edXML status code reported by a recipient.
type StatusCode string

const (
	StatusDelivered     StatusCode = "01" // Đã đến
	StatusRefused       StatusCode = "02" // Từ chối tiếp nhận
	StatusAccepted      StatusCode = "03" // Đã tiếp nhận
	StatusAssigned      StatusCode = "04" // Phân công
	StatusInProgress    StatusCode = "05" // Đang xử lý
	StatusFinished      StatusCode = "06" // Hoàn thành
	StatusCancelled     StatusCode = "13" // Thu hồi / hủy
	StatusChangeAccept  StatusCode = "15" // Đồng ý cập nhật
	StatusChangeRefused StatusCode = "16" // Từ chối cập nhật
)

var statusNames = map[StatusCode][2]string{
	StatusDelivered:     {"Đã đến", "delivered"},
	StatusRefused:       {"Từ chối tiếp nhận", "refused"},
	StatusAccepted:      {"Đã tiếp nhận", "accepted"},
	StatusAssigned:      {"Phân công", "assigned"},
	StatusInProgress:    {"Đang xử lý", "in progress"},
	StatusFinished:      {"Hoàn thành", "finished"},
	StatusCancelled:     {"Thu hồi / hủy", "cancelled"},
	StatusChangeAccept:  {"Đồng ý cập nhật", "change accepted"},
	StatusChangeRefused: {"Từ chối cập nhật", "change refused"},
}

// Validate reports whether c is a known status code.
func (c StatusCode) Validate() error {
	if _, ok := statusNames[c]; !ok {
		return fmt.Errorf("status code %q: unknown (want 01, 02, 03, 04, 05, 06, 13, 15 or 16)", string(c))
	}
	return nil
}

// Vietnamese returns the Vietnamese name of the code.
func (c StatusCode) Vietnamese() string { return statusNames[c][0] }

// English returns the English name of the code.
func (c StatusCode) English() string { return statusNames[c][1] }

// BySender reports whether the code is the sender's to send (13, taking a
// document back); every other code is a recipient's.
func (c StatusCode) BySender() bool { return c == StatusCancelled }

// Final reports whether no further progress status may follow.
func (c StatusCode) Final() bool {
	return c == StatusRefused || c == StatusFinished || c == StatusCancelled
}

// next lists the progress codes allowed after each code (edXML order). A
// refusal may come first: a recipient's agent refuses, on receipt, a
// delivery it cannot hand to its document system, which never arrived.
var next = map[StatusCode][]StatusCode{
	"":               {StatusDelivered, StatusRefused},
	StatusDelivered:  {StatusRefused, StatusAccepted},
	StatusAccepted:   {StatusAssigned, StatusInProgress, StatusFinished},
	StatusAssigned:   {StatusInProgress, StatusFinished},
	StatusInProgress: {StatusFinished},
}

// InOrder reports whether code may follow prev (the last progress code a
// recipient reported, "" for none). Cancellation (13) and change answers
// (15, 16) are allowed at any point before a final code. A status out of order
// is recorded but flagged, so this never decides acceptance alone.
func InOrder(prev, code StatusCode) bool {
	if prev.Final() {
		return false
	}
	switch code {
	case StatusCancelled, StatusChangeAccept, StatusChangeRefused:
		return true
	}
	for _, c := range next[prev] {
		if c == code {
			return true
		}
	}
	return false
}

// Officer is the handling officer of a status.
type Officer struct {
	Department string `json:"department,omitempty"`
	Name       string `json:"name,omitempty"`
	Contact    string `json:"contact,omitempty"`
}

// Bounds of a status's text fields, in bytes. A status that exceeds one is
// invalid: the hub refuses it, and it never reaches the index, the archive
// or a notice.
const (
	MaxStatusDescription = 4000
	MaxOfficerField      = 200 // each of department, name and contact
)

// StatusClockSkew is how far in the future a status's time may be (the
// reporting unit's clock against the hub's).
const StatusClockSkew = 5 * time.Minute

// Status is one progress report on a document by one unit.
type Status struct {
	DocumentID  ID         `json:"document_id"`
	Unit        UnitID     `json:"unit"`
	Time        time.Time  `json:"time"`
	Code        StatusCode `json:"code"`
	Description string     `json:"description,omitempty"`
	Officer     *Officer   `json:"officer,omitempty"`
}

// Validate returns every problem of s with its field path.
func (s *Status) Validate() error {
	var p Problems
	if err := s.DocumentID.Validate(); err != nil {
		p.Add("document_id", err.Error())
	}
	if err := s.Unit.Validate(); err != nil {
		p.Add("unit", err.Error())
	}
	if s.Time.IsZero() {
		p.Add("time", "required")
	}
	if err := s.Code.Validate(); err != nil {
		p.Add("code", err.Error())
	}
	if s.Code == StatusRefused && strings.TrimSpace(s.Description) == "" {
		p.Add("description", "a refusal (02) needs a reason")
	}
	text(&p, "description", s.Description, false, MaxStatusDescription)
	if o := s.Officer; o != nil {
		text(&p, "officer.department", o.Department, false, MaxOfficerField)
		text(&p, "officer.name", o.Name, false, MaxOfficerField)
		text(&p, "officer.contact", o.Contact, false, MaxOfficerField)
	}
	return p.Err()
}

// CheckTime reports whether the status's time is plausible: not later than
// now plus StatusClockSkew, and not earlier than the document's acceptance
// by the hub (less the same skew): no unit can report on a document before
// it exists.
func (s *Status) CheckTime(accepted, now time.Time) error {
	switch {
	case s.Time.After(now.Add(StatusClockSkew)):
		return fmt.Errorf("status time %s is in the future (hub time %s)", s.Time.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case !accepted.IsZero() && s.Time.Before(accepted.Add(-StatusClockSkew)):
		return fmt.Errorf("status time %s is before the document was accepted (%s)", s.Time.UTC().Format(time.RFC3339), accepted.UTC().Format(time.RFC3339))
	}
	return nil
}
