package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edxhub/edx/pkg/document"
)

func edxmlTestdata(name string) string {
	return filepath.Join("..", "..", "pkg", "edxml", "testdata", name)
}

// TestEdXMLInspect: edx edxml inspect shows a packet's mapped header, its
// attachments with type, size and SHA-256, and its problems; a refused
// packet exits 1 with its reason code and the element at fault.
func TestEdXMLInspect(t *testing.T) {
	out := must(t, "edxml", "inspect", edxmlTestdata("zipped.edxml"))
	for _, want := range []string{
		"kind         document",
		"edxml_id     000.00.00.H29,2026/11/25,1234/QĐ-UBND",
		"to           000.01.00.H29, 000.02.00.H29",
		"type         QĐ Quyết định",
		"attachment   1 van-ban.pdf: application/pdf, 115 bytes, sha256 5e3c307f70f66adb5bd13d831a515c53f960ac24cc423f1cfa933fec04a9dc6e",
		"attachment   2 phu-luc.txt.zip: application/zip, 223 bytes",
		"zipped by the sender",
		"result       OK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}
	code, js, _ := edx(t, "edxml", "inspect", "--json", edxmlTestdata("national.edxml"))
	var res inspectResult
	if code != 0 || json.Unmarshal([]byte(js), &res) != nil || res.Kind != "document" || res.Document.Subject == "" || len(res.Attachments) != 2 || res.SHA256 == "" {
		t.Errorf("json: exit %d\n%s", code, js)
	}

	out = must(t, "edxml", "inspect", edxmlTestdata("status-provincial.edxml"))
	for _, want := range []string{"kind         status", "code         03 Đã tiếp nhận (accepted)", "time         2026-11-25T14:30:00+07:00", "officer      Phòng Hành chính, Lê Văn C"} {
		if !strings.Contains(out, want) {
			t.Errorf("status inspect lacks %q:\n%s", want, out)
		}
	}

	dir := t.TempDir()
	// Refused: exit 1, the reason code, the path.
	laughs := filepath.Join(dir, "laughs.edxml")
	os.WriteFile(laughs, []byte(`<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;">]><edXML>&lol1;</edXML>`), 0o644)
	code, out, _ = edx(t, "edxml", "inspect", laughs)
	if code != 1 || !strings.Contains(out, "refused      edxml.dtd") || !strings.Contains(out, "REFUSED") {
		t.Errorf("entity expansion: exit %d\n%s", code, out)
	}
	bad := filepath.Join(dir, "bad.edxml")
	b, _ := os.ReadFile(edxmlTestdata("national.edxml"))
	os.WriteFile(bad, bytes.Replace(b, []byte("Cg==</edXML:ContentTransferEncoded>"), []byte("Cg=*</edXML:ContentTransferEncoded>"), 1), 0o644)
	code, out, _ = edx(t, "edxml", "inspect", bad)
	if code != 1 || !strings.Contains(out, "edxml.base64") || !strings.Contains(out, "/edXML/AttachmentEncoded/Attachment[1]/ContentTransferEncoded") || !strings.Contains(out, `"van-ban.pdf"`) {
		t.Errorf("bad base64: exit %d\n%s", code, out)
	}
	// Read, but not a document edx accepts: exit 1, each field.
	invalid := filepath.Join(dir, "invalid.edxml")
	os.WriteFile(invalid, bytes.Replace(b, []byte("<edXML:OrganId>000.01.00.H29</edXML:OrganId>"), []byte("<edXML:OrganId>H29</edXML:OrganId>"), 1), 0o644)
	code, out, _ = edx(t, "edxml", "inspect", invalid)
	if code != 1 || !strings.Contains(out, "problem      to[0]: unit id \"H29\"") {
		t.Errorf("invalid: exit %d\n%s", code, out)
	}

	for _, args := range [][]string{{"edxml", "inspect"}, {"edxml", "inspect", filepath.Join(dir, "missing.edxml")}} {
		if code, _, _ := edx(t, args...); code != 2 {
			t.Errorf("edx %v: exit %d, want 2", args, code)
		}
	}
	if code, _, errs := edx(t, "edxml", "inspect", "-h"); code != 0 || !strings.Contains(errs, "Usage: edx edxml inspect") || !strings.Contains(errs, "--json") && !strings.Contains(errs, "-json") {
		t.Errorf("inspect -h: exit %d\n%s", code, errs)
	}
}

// TestEdXMLConvert: a packet converts to document.json + files/, the
// directory converts back to a packet, and that packet converts to the same
// directory; the directory packs into a container as it is.
func TestEdXMLConvert(t *testing.T) {
	dir := t.TempDir()
	d1, d2, pkt := filepath.Join(dir, "d1"), filepath.Join(dir, "d2"), filepath.Join(dir, "out.edxml")
	out := must(t, "edxml", "convert", edxmlTestdata("provincial.edxml"), "-o", d1)
	if !strings.Contains(out, "2 attachments") {
		t.Errorf("convert:\n%s", out)
	}
	meta, err := os.ReadFile(filepath.Join(d1, "document.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := document.Parse(meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(); err != nil {
		t.Errorf("converted document: %v", err)
	}
	for _, f := range []string{"van-ban.pdf", "phu-luc.txt"} {
		want, _ := os.ReadFile(edxmlTestdata("files/" + f))
		if got, _ := os.ReadFile(filepath.Join(d1, "files", f)); !bytes.Equal(got, want) {
			t.Errorf("files/%s differs", f)
		}
	}

	out = must(t, "edxml", "convert", d1, "-o", pkt)
	if !strings.Contains(out, "sha256") {
		t.Errorf("convert back:\n%s", out)
	}
	must(t, "edxml", "convert", pkt, "-o", d2, "--id", string(doc.ID))
	meta2, _ := os.ReadFile(filepath.Join(d2, "document.json"))
	if !bytes.Equal(meta, meta2) {
		t.Errorf("document.json changed through the packet:\n%s\n%s", meta, meta2)
	}

	// The converted directory is what edx pack takes.
	pk := filepath.Join(dir, "pki")
	must(t, "pki", "init", "--dir", pk)
	must(t, "pki", "issue", "--dir", pk, "--unit", "000.00.00.H29", "--name", "UBND TP.HCM")
	must(t, "pack", "--meta", filepath.Join(d1, "document.json"), "--key", filepath.Join(pk, "units", "000.00.00.H29.key.pem"),
		"--cert", filepath.Join(pk, "units", "000.00.00.H29.cert.pem"), "-o", filepath.Join(dir, "out.asice"),
		filepath.Join(d1, "files", "van-ban.pdf"), filepath.Join(d1, "files", "phu-luc.txt"))
	if rep := must(t, "verify", "--trust", filepath.Join(pk, "roots.pem"), filepath.Join(dir, "out.asice")); !strings.Contains(rep, "result      VALID") {
		t.Errorf("verify:\n%s", rep)
	}

	// Usage and refusals.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"edxml", "convert", pkt, "-o", d2}, 2},                                    // not empty
		{[]string{"edxml", "convert", pkt}, 2},                                              // no -o
		{[]string{"edxml", "convert", pkt, "-o", filepath.Join(dir, "d3"), "--id", "x"}, 2}, // bad id
		{[]string{"edxml", "convert", edxmlTestdata("status-soap.edxml"), "-o", filepath.Join(dir, "d4")}, 2},
		{[]string{"edxml", "convert", filepath.Join(dir, "missing"), "-o", filepath.Join(dir, "d5")}, 2},
		{[]string{"edxml", "convert", dir, "-o", filepath.Join(dir, "x.edxml")}, 2}, // no document.json
	} {
		if code, _, errs := edx(t, tc.args...); code != tc.code {
			t.Errorf("edx %v: exit %d, want %d\n%s", tc.args, code, tc.code, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d4")); err == nil {
		t.Error("a directory was left for a status packet")
	}
	if code, _, errs := edx(t, "edxml", "convert", "--help"); code != 0 || !strings.Contains(errs, "edx edxml convert DIR -o FILE.edxml") {
		t.Errorf("convert --help: exit %d\n%s", code, errs)
	}
}
