package document

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUnitID(t *testing.T) {
	for _, tc := range []struct {
		in     string
		ok     bool
		parent string
	}{
		{"000.00.00.H29", true, ""},
		{"000.00.00.G12", true, ""},
		{"000.01.00.H29", true, "000.00.00.H29"},
		{"000.01.05.H29", true, "000.00.05.H29"},
		{"123.01.05.H29", true, "000.01.05.H29"},
		{"000.00.00.h29", false, ""},
		{"00.00.00.H29", false, ""},
		{"000.00.00.H29 ", false, ""},
		{"000.00.00.H2", false, ""},
		{"", false, ""},
		{"000.00.00.H29\n", false, ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := ParseUnitID(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseUnitID(%q) err=%v, want ok=%v", tc.in, err, tc.ok)
			}
			if !tc.ok {
				return
			}
			p, ok := u.Parent()
			if string(p) != tc.parent || ok != (tc.parent != "") {
				t.Errorf("Parent(%s) = %q,%v, want %q", u, p, ok, tc.parent)
			}
		})
	}
}

func TestID(t *testing.T) {
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	id := NewID(now)
	if err := id.Validate(); err != nil {
		t.Fatal(err)
	}
	if !id.Time().Equal(now) {
		t.Errorf("Time = %v, want %v", id.Time(), now)
	}
	for _, bad := range []string{"", "x", "01ARZ3NDEKTSV4RRFFQ69G5FAVX", "01arz3ndektsv4rrffq69g5fav"} {
		if err := ID(bad).Validate(); err == nil {
			t.Errorf("ID %q validated", bad)
		}
	}
}

func TestTemplateValidAndRoundTrip(t *testing.T) {
	d := Template(time.Now())
	if err := d.Validate(); err != nil {
		t.Fatalf("template invalid: %v", err)
	}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("đất đai")) {
		t.Fatalf("Vietnamese text escaped or lost:\n%s", b)
	}
	d2, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := d2.Marshal()
	if !bytes.Equal(b, b2) {
		t.Errorf("round trip changed bytes:\n%s\n%s", b, b2)
	}
}

func TestValidateFieldPaths(t *testing.T) {
	d := Template(time.Now())
	d.To = []UnitID{"000.01.00.H29", "bad", "000.01.00.H29", d.From}
	d.Subject = ""
	d.Signer.FullName = ""
	d.Confidentiality = ConfidentialitySecret
	d.Type = "XX"
	d.PromulgatedAt = "25/11/2026"
	d.BusinessType = BusinessUpdate
	err := d.Validate()
	var p Problems
	if !errors.As(err, &p) {
		t.Fatalf("err = %v, want Problems", err)
	}
	want := []string{"to[1]", "to[2]", "to[3]", "subject", "signer.full_name", "confidentiality", "type", "promulgated_at", "in_reply_to"}
	got := map[string]bool{}
	for _, q := range p {
		got[q.Field] = true
	}
	for _, f := range want {
		if !got[f] {
			t.Errorf("no problem reported at %s; got %v", f, p)
		}
	}
}

func TestParseStrict(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field": `{"id":"x","subjct":"y"}`,
		"trailing":      `{"id":"x"} {}`,
		"not json":      `<xml/>`,
		"bad utf8":      "{\"subject\":\"\xff\"}",
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: Parse accepted %q", name, in)
		}
	}
}

func TestStatusOrder(t *testing.T) {
	for _, tc := range []struct {
		prev, code StatusCode
		ok         bool
	}{
		{"", StatusDelivered, true},
		{"", StatusAccepted, false},
		{"", StatusRefused, true}, // an agent refuses, on receipt, what it cannot take
		{StatusDelivered, StatusAccepted, true},
		{StatusDelivered, StatusRefused, true},
		{StatusAccepted, StatusAssigned, true},
		{StatusAccepted, StatusFinished, true},
		{StatusAssigned, StatusInProgress, true},
		{StatusInProgress, StatusFinished, true},
		{StatusInProgress, StatusAssigned, false},
		{StatusFinished, StatusInProgress, false},
		{StatusInProgress, StatusCancelled, true},
		{StatusFinished, StatusCancelled, false},
		{StatusAssigned, StatusChangeAccept, true},
	} {
		if got := InOrder(tc.prev, tc.code); got != tc.ok {
			t.Errorf("InOrder(%q,%q) = %v, want %v", tc.prev, tc.code, got, tc.ok)
		}
	}
}

func TestStatusValidate(t *testing.T) {
	s := Status{DocumentID: NewID(time.Now()), Unit: "000.01.00.H29", Time: time.Now(), Code: StatusRefused}
	if err := s.Validate(); err == nil {
		t.Error("refusal without reason validated")
	}
	s.Description = "Sai thẩm quyền"
	if err := s.Validate(); err != nil {
		t.Error(err)
	}
	s.Code = "99"
	if err := s.Validate(); err == nil {
		t.Error("unknown code validated")
	}
}

func TestDocTypesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, dt := range DocTypes {
		if seen[dt.Code] || seen[dt.Name] {
			t.Errorf("duplicate %v", dt)
		}
		seen[dt.Code], seen[dt.Name] = true, true
	}
}

func FuzzParse(f *testing.F) {
	b, _ := Template(time.Unix(1700000000, 0)).Marshal()
	f.Add(b)
	f.Add([]byte(`{"to":["000.00.00.H29",""],"places":[""]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(data)
		if err != nil {
			return
		}
		_ = d.Validate()
		if _, err := d.Marshal(); err != nil {
			t.Fatal(err)
		}
	})
}

// Urgency 4 (hỏa tốc hẹn giờ) is an edXML Priority; 5 is not.
func TestUrgencyRange(t *testing.T) {
	for u, ok := range map[Urgency]bool{UrgencyNormal: true, UrgencyFlash: true, UrgencyFlashTimed: true, 5: false, -1: false} {
		d := Template(time.Now())
		d.Urgency = u
		if err := d.Validate(); (err == nil) != ok {
			t.Errorf("urgency %d: err = %v, want ok=%v", u, err, ok)
		}
	}
}

func TestStatusBounds(t *testing.T) {
	now := time.Now()
	ok := Status{DocumentID: NewID(now), Unit: "000.01.00.H29", Time: now, Code: StatusAssigned,
		Description: strings.Repeat("đ", MaxStatusDescription/2), Officer: &Officer{Department: "Văn phòng", Name: "Nguyễn Văn A", Contact: "028 3829 6052"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(s *Status){
		"description":        func(s *Status) { s.Description = strings.Repeat("x", MaxStatusDescription+1) },
		"officer.department": func(s *Status) { s.Officer.Department = strings.Repeat("x", MaxOfficerField+1) },
		"officer.name":       func(s *Status) { s.Officer.Name = strings.Repeat("x", MaxOfficerField+1) },
		"officer.contact":    func(s *Status) { s.Officer.Contact = strings.Repeat("x", MaxOfficerField+1) },
		"control characters": func(s *Status) { s.Officer.Name = "a\x00b" },
	} {
		s := ok
		o := *ok.Officer
		s.Officer = &o
		edit(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: validated", name)
		}
	}
	accepted := now.Add(-time.Hour)
	for _, tc := range []struct {
		at time.Time
		ok bool
	}{
		{now, true}, {accepted, true}, {now.Add(StatusClockSkew - time.Second), true}, {accepted.Add(-StatusClockSkew + time.Second), true},
		{now.Add(StatusClockSkew + time.Second), false}, {accepted.Add(-StatusClockSkew - time.Second), false}, {now.AddDate(10, 0, 0), false},
	} {
		s := ok
		s.Time = tc.at
		if err := s.CheckTime(accepted, now); (err == nil) != tc.ok {
			t.Errorf("time %v: %v", tc.at.Sub(now), err)
		}
	}
	if !StatusCancelled.BySender() || StatusChangeAccept.BySender() || StatusDelivered.BySender() {
		t.Error("BySender")
	}
}

// TestUpstream: a document brought in from the national axis names its
// sender outside the city and the axis's id, all checked.
func TestUpstream(t *testing.T) {
	d := Template(time.Now())
	d.Upstream = &Upstream{From: "000.00.00.G22", FromName: "Bộ Nội vụ", Axis: "vdxp", DocID: "vdxp-1"}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	b, _ := d.Marshal()
	back, err := Parse(b)
	if err != nil || *back.Upstream != *d.Upstream {
		t.Fatalf("%v %+v", err, back.Upstream)
	}
	d.Upstream = &Upstream{From: d.From, Axis: "", DocID: strings.Repeat("x", 201)}
	var p Problems
	if !errors.As(d.Validate(), &p) {
		t.Fatal("invalid upstream accepted")
	}
	got := map[string]bool{}
	for _, q := range p {
		got[q.Field] = true
	}
	for _, f := range []string{"upstream.from", "upstream.axis", "upstream.doc_id"} {
		if !got[f] {
			t.Errorf("no problem at %s: %v", f, p)
		}
	}
}
