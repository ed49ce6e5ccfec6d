package document

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestEdXMLExtra: the elements an edXML import keeps without a field travel
// in document.json (edxml_extra), survive a round trip, and are bounded.
func TestEdXMLExtra(t *testing.T) {
	d := Template(time.Now())
	d.EdXMLExtra = []EdXMLExtra{
		{Path: "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/From", XML: "<OrganAdd>86 Lê Thánh Tôn</OrganAdd>"},
		{Path: "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader", XML: `<Ext xmlns="urn:x">1</Ext>`},
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"edxml_extra"`)) || !bytes.Contains(b, []byte("<OrganAdd>86 Lê Thánh Tôn</OrganAdd>")) {
		t.Fatalf("edxml_extra not written as is:\n%s", b)
	}
	d2, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := d2.Marshal(); !bytes.Equal(b, b2) {
		t.Errorf("round trip changed bytes:\n%s\n%s", b, b2)
	}
	// Absent when empty: documents without edXML history are unchanged.
	d.EdXMLExtra = nil
	if b, _ := d.Marshal(); bytes.Contains(b, []byte("edxml_extra")) {
		t.Errorf("empty edxml_extra written:\n%s", b)
	}

	d.EdXMLExtra = []EdXMLExtra{
		{Path: "MessageHeader", XML: "<A/>"},
		{Path: "/edXML", XML: "text"},
		{Path: "/edXML", XML: "<B>" + strings.Repeat("x", MaxEdXMLExtraBytes) + "</B>"},
	}
	var p Problems
	if !errors.As(d.Validate(), &p) {
		t.Fatal("bad edxml_extra validated")
	}
	got := map[string]bool{}
	for _, q := range p {
		got[q.Field] = true
	}
	for _, f := range []string{"edxml_extra[0].path", "edxml_extra[1].xml", "edxml_extra"} {
		if !got[f] {
			t.Errorf("no problem at %s; got %v", f, p)
		}
	}
}
