package edxml

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The packets of testdata are hand-written in the shapes peers produce; each
// holds the same document.
var shapes = []string{
	"national.edxml",   // the national SDK: edXML prefixes, the SDK's order
	"provincial.edxml", // a provincial hub: BOM, default namespace, its own order, dashed dates, CDATA, xlink manifest
	"zipped.edxml",     // another hub: another prefix, header parts reordered, day-first dates, &#13; line ends, zipped attachments
}

func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what was produced:\n%s", path, firstDiff(want, got))
	}
}

func firstDiff(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return fmt.Sprintf("line %d:\n want %q\n got  %q", i+1, a, b)
		}
	}
	return "(same lines)"
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// TestShapes: packets in the shapes of the national SDK and two provincial
// hubs (child orders, prefixes, dates, CDATA, zipped attachments, trace
// lists) read to one and the same document.json, and the same files (the
// zipped one kept as sent, as a .zip).
func TestShapes(t *testing.T) {
	pdf, txt := testdata(t, "files/van-ban.pdf"), testdata(t, "files/phu-luc.txt")
	for i, name := range shapes {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p, err := ParseToDir(bytes.NewReader(testdata(t, name)), dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			meta, err := os.ReadFile(filepath.Join(dir, "document.json"))
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				golden(t, "document.golden.json", meta)
			} else if want := testdata(t, "document.golden.json"); !bytes.Equal(meta, want) {
				t.Errorf("document.json differs from the national shape's:\n%s", firstDiff(want, meta))
			}
			if len(p.Attachments) != 2 {
				t.Fatalf("attachments: %+v", p.Attachments)
			}
			a, b := p.Attachments[0], p.Attachments[1]
			if a.File != "van-ban.pdf" || a.Detected != "application/pdf" || a.Zipped || a.SHA256 != sha(pdf) || a.Size != int64(len(pdf)) || a.Description != "Quyết định 1234/QĐ-UBND" {
				t.Errorf("attachment 1: %+v", a)
			}
			got, _ := os.ReadFile(filepath.Join(dir, "files", a.File))
			if !bytes.Equal(got, pdf) {
				t.Error("files/van-ban.pdf differs from what was sent")
			}
			got, _ = os.ReadFile(filepath.Join(dir, "files", b.File))
			if name == "zipped.edxml" {
				if b.File != "phu-luc.txt.zip" || !b.Zipped || b.Detected != "application/zip" || b.ContentType != "text/plain" || b.SHA256 != sha(got) {
					t.Errorf("zipped attachment: %+v", b)
				}
				if inner := unzipOne(t, got, "phu-luc.txt"); !bytes.Equal(inner, txt) {
					t.Errorf("the zipped attachment holds %q", inner)
				}
				if !strings.Contains(strings.Join(p.Warnings, "\n"), "ZIP archive") {
					t.Errorf("no warning on the zipped attachment: %q", p.Warnings)
				}
			} else {
				if b.File != "phu-luc.txt" || b.Zipped || b.Detected != "text/plain" || b.SHA256 != sha(txt) || !bytes.Equal(got, txt) {
					t.Errorf("attachment 2: %+v", b)
				}
				if len(p.Warnings) != 0 {
					t.Errorf("warnings: %q", p.Warnings)
				}
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "files"))
			if len(entries) != 2 {
				t.Errorf("files/ holds %d entries, want 2 (no temporary file left)", len(entries))
			}
		})
	}
}

func unzipOne(t *testing.T, b []byte, name string) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil || len(zr.File) != 1 || zr.File[0].Name != name {
		t.Fatalf("not a zip of %s: %v", name, err)
	}
	rc, err := zr.File[0].Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	return data
}

// TestGoldenDocument: the golden document.json maps every field, and keeps
// what has no field.
func TestGoldenDocument(t *testing.T) {
	d, err := document.Parse(testdata(t, "document.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := document.Document{
		EdXMLID:          "000.00.00.H29,2026/11/25,1234/QĐ-UBND",
		From:             "000.00.00.H29",
		FromName:         "Ủy ban nhân dân Thành phố Hồ Chí Minh",
		To:               []document.UnitID{"000.01.00.H29", "000.02.00.H29"},
		Number:           "1234",
		Notation:         "QĐ-UBND",
		PromulgatedAt:    "2026-11-25",
		PromulgatedPlace: "Thành phố Hồ Chí Minh",
		Type:             "QĐ", // from TypeName: the packet's Type is 1, kept
		TypeName:         "Quyết định",
		Subject:          "Về việc phê duyệt kế hoạch sử dụng đất năm 2027 & danh mục dự án",
		Content:          "Phê duyệt kế hoạch sử dụng đất năm 2027.\nGiao Sở Tư pháp và Sở Nội vụ tổ chức thực hiện.",
		Signer:           document.Signer{Competence: "KT.", Position: "Phó Chủ tịch", FullName: "Nguyễn Văn A"},
		DueDate:          "2026-12-10",
		Urgency:          document.UrgencyUrgent,
		Sphere:           "Toàn thành phố",
		PageCount:        3,
		Places:           []string{"Như trên", "Lưu: VT, KT"},
		Steering:         "1",
	}
	kept := d.EdXMLExtra
	d.EdXMLExtra = nil
	if !reflect.DeepEqual(*d, want) {
		t.Errorf("mapped fields:\n got %+v\nwant %+v", *d, want)
	}
	d.ID = document.NewID(time.Now())
	if err := d.Validate(); err != nil {
		t.Errorf("the imported document is not valid for edx: %v", err)
	}
	has := func(path, xml string) {
		t.Helper()
		for _, x := range kept {
			if x.Path == path && x.XML == xml {
				return
			}
		}
		t.Errorf("not kept: %s %s", path, xml)
	}
	has(messagePath+"/From", "<OrganAdd>86 Lê Thánh Tôn, Phường Sài Gòn</OrganAdd>")
	has(messagePath+"/To[2]", "<OrganName>Sở Nội vụ</OrganName>")
	has(docTypePath, "<Type>1</Type>")
	has(messagePath+"/ResponseFor[1]", "<PromulgationDate>2026/11/01</PromulgationDate>")
	has(messagePath, `<Tracking xmlns="urn:example:lgsp"><Ref>HCM-2026-000123</Ref></Tracking>`)
	has(tracePath+"/TraceHeader[2]", "<Timestamp>2026/11/25 09:15:07</Timestamp>")
	has(tracePath+"/Bussiness/StaffInfo", "<Staff>Trần Thị B</Staff>")
	has(headerPath, `<Signature><SignedInfo><SignatureMethod Algorithm="http://www.w3.org/2000/09/xmldsig#rsa-sha1"/></SignedInfo><SignatureValue>AAAA</SignatureValue></Signature>`)
	has(attachmentPath+"[2]", "<Description>Phụ lục I</Description>")
	for _, x := range kept {
		if strings.Contains(x.Path, "edXMLManifest") {
			t.Errorf("a manifest reference that only repeats an attachment is kept: %v", x)
		}
	}
}

func goldenFiles(t *testing.T) []File {
	t.Helper()
	var files []File
	for _, n := range []string{"phu-luc.txt", "van-ban.pdf"} { // name order, as from a directory
		b := testdata(t, "files/"+n)
		files = append(files, File{Name: n, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }})
	}
	return files
}

// TestWriteGolden: edx writes the golden document deterministically in the
// national SDK's shape, and what it writes reads back byte-identically:
// the same document.json, the same files.
func TestWriteGolden(t *testing.T) {
	meta := testdata(t, "document.golden.json")
	d, err := document.Parse(meta)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Write(&out, d, goldenFiles(t)); err != nil {
		t.Fatal(err)
	}
	golden(t, "edx.golden.edxml", out.Bytes())
	var again bytes.Buffer
	Write(&again, d, goldenFiles(t))
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("two writes differ")
	}
	dir := t.TempDir()
	p, err := ParseToDir(bytes.NewReader(out.Bytes()), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "document.json"))
	if !bytes.Equal(got, meta) {
		t.Errorf("edx's packet reads back differently:\n%s", firstDiff(meta, got))
	}
	for _, n := range []string{"van-ban.pdf", "phu-luc.txt"} {
		got, _ := os.ReadFile(filepath.Join(dir, "files", n))
		if !bytes.Equal(got, testdata(t, "files/"+n)) {
			t.Errorf("files/%s differs", n)
		}
	}
	if p.Attachments[0].File != "van-ban.pdf" {
		t.Errorf("attachment order not kept: %+v", p.Attachments)
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings: %q", p.Warnings)
	}
}

// TestZippedRoundTrip: a zipped attachment goes back as the sender zipped
// it, under its own name, and the packet reads back the same.
func TestZippedRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p, err := ParseToDir(bytes.NewReader(testdata(t, "zipped.edxml")), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := WriteDir(&out, dir); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out.Bytes(), []byte("<edXML:AttachmentName>phu-luc.txt</edXML:AttachmentName>")) {
		t.Error("the zipped attachment's name changed")
	}
	dir2 := t.TempDir()
	p2, err := ParseToDir(bytes.NewReader(out.Bytes()), dir2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "document.json"))
	b, _ := os.ReadFile(filepath.Join(dir2, "document.json"))
	if !bytes.Equal(a, b) {
		t.Errorf("document.json changed:\n%s", firstDiff(a, b))
	}
	if !reflect.DeepEqual(p.Attachments, p2.Attachments) {
		t.Errorf("attachments changed:\n%+v\n%+v", p.Attachments, p2.Attachments)
	}
}

// TestNativeRoundTrip: a document edx made (no edXML history) goes out and
// comes back with every mapped field as it was; edxml_id is the one the
// packet carried, in_reply_to an edx id.
func TestNativeRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	d := document.Template(now)
	d.Content = "Dòng một\nDòng hai\twith a tab & <angle> \"quotes\" \r and a carriage return"
	d.BusinessType = document.BusinessUpdate
	d.InReplyTo = document.NewID(now.Add(-time.Hour))
	d.Sphere, d.PageCount, d.Steering = "Toàn thành phố", 2, "2"
	files := []File{{Name: "quyết định.pdf", Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("%PDF-1.7 x")), nil }}}
	var out bytes.Buffer
	if err := Write(&out, d, files); err != nil {
		t.Fatal(err)
	}
	p, err := Parse(bytes.NewReader(out.Bytes()), Options{ID: d.ID})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.Bytes())
	}
	got := *p.Document
	if got.EdXMLID != "000.00.00.H29,"+now.Format("2006/01/02")+",1234/QĐ-UBND" {
		t.Errorf("edxml_id %q", got.EdXMLID)
	}
	for _, x := range got.EdXMLExtra {
		if !strings.HasPrefix(x.Path, attachmentPath) && !strings.HasPrefix(x.Path, responseForPath) {
			t.Errorf("kept from edx's own packet: %v", x)
		}
	}
	got.EdXMLID, got.EdXMLExtra = "", nil
	a, _ := d.Marshal()
	b, _ := got.Marshal()
	if !bytes.Equal(a, b) {
		t.Errorf("mapped fields changed:\n%s", firstDiff(a, b))
	}
	if p.Attachments[0].File != "quyết định.pdf" || p.Attachments[0].ContentType != "application/pdf" {
		t.Errorf("attachment: %+v", p.Attachments[0])
	}

	// Read again, written again: now nothing changes at all.
	var out2 bytes.Buffer
	if err := Write(&out2, p.Document, files); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), out2.Bytes()) {
		t.Errorf("second write differs:\n%s", firstDiff(out.Bytes(), out2.Bytes()))
	}
}

// TestStatusShapes: status packets in the MessageHeader form, a provincial
// hub's Status form and a SOAP-wrapped Status read to the same status;
// edx writes the MessageHeader form, and it reads back the same.
func TestStatusShapes(t *testing.T) {
	var first []byte
	for _, name := range []string{"status-national.edxml", "status-provincial.edxml", "status-soap.edxml"} {
		s, err := ParseStatus(bytes.NewReader(testdata(t, name)), Limits{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b := marshal(t, s)
		if first == nil {
			first = b
			golden(t, "status.golden.json", b)
		} else if !bytes.Equal(b, first) {
			t.Errorf("%s reads differently from the national form:\n%s", name, firstDiff(first, b))
		}
	}
	var s StatusPacket
	if err := json.Unmarshal(first, &s); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteStatus(&out, &s); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.golden.edxml", out.Bytes())
	s2, err := ParseStatus(bytes.NewReader(out.Bytes()), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b := marshal(t, s2); !bytes.Equal(b, first) {
		t.Errorf("edx's status reads back differently:\n%s", firstDiff(first, b))
	}

	// As edx records it.
	docID := document.NewID(time.Now())
	st := s.Status(func(v string) (document.ID, bool) {
		return docID, v == "000.00.00.H29,2026/11/25,1234/QĐ-UBND"
	})
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	want := document.Status{DocumentID: docID, Unit: "000.01.00.H29", Time: time.Date(2026, 11, 25, 7, 30, 0, 0, time.UTC), Code: document.StatusAccepted,
		Description: "Đã vào sổ văn bản đến, số 567",
		Officer:     &document.Officer{Department: "Phòng Hành chính", Name: "Lê Văn C", Contact: "lvc@stp.tphcm.gov.vn, 0912345678"}}
	if !st.Time.Equal(want.Time) {
		t.Errorf("time %v, want %v", st.Time, want.Time)
	}
	st.Time = want.Time
	if !reflect.DeepEqual(st, want) {
		t.Errorf("status:\n got %+v\nwant %+v", st, want)
	}
	// And back: edx's status as a packet.
	np := NewStatusPacket(want, s.ResponseFor)
	out.Reset()
	if err := WriteStatus(&out, np); err != nil {
		t.Fatal(err)
	}
	s3, err := ParseStatus(&out, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s3.Status(func(string) (document.ID, bool) { return docID, true }); got.Code != want.Code || !got.Time.Equal(want.Time) || got.Unit != want.Unit || got.Officer.Department != "Phòng Hành chính" {
		t.Errorf("status through a packet: %+v", got)
	}
}

// TestKinds: each parser says clearly when it is given the other kind.
func TestKinds(t *testing.T) {
	for _, name := range []string{"status-national.edxml", "status-provincial.edxml", "status-soap.edxml"} {
		_, err := Parse(bytes.NewReader(testdata(t, name)), Options{})
		if !errors.Is(err, ErrStatusPacket) {
			t.Errorf("Parse(%s) = %v, want ErrStatusPacket", name, err)
		}
	}
	for _, name := range shapes {
		_, err := ParseStatus(bytes.NewReader(testdata(t, name)), Limits{})
		if !errors.Is(err, ErrDocumentPacket) {
			t.Errorf("ParseStatus(%s) = %v, want ErrDocumentPacket", name, err)
		}
	}
}

// TestHelpers: a hop added to the trace list and the document answered, as
// an axis adds them, land where a read would put them.
func TestHelpers(t *testing.T) {
	d, err := document.Parse(testdata(t, "document.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	AddTrace(d, "000.00.00.H01", time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC))
	SetResponseFor(d, ResponseFor{OrganID: "000.00.00.G22", DocumentID: "000.00.00.G22,2026/11/02,57/BTNMT-ĐĐ", PromulgationDate: "2026-11-02"})
	var out bytes.Buffer
	if err := Write(&out, d, goldenFiles(t)); err != nil {
		t.Fatal(err)
	}
	p, err := Parse(&out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := d.Marshal()
	b, _ := p.Document.Marshal()
	if !bytes.Equal(a, b) {
		t.Errorf("helpers' elements not in canonical order:\n%s", firstDiff(a, b))
	}
	if !bytes.Contains(b, []byte(`"<Timestamp>2026/11/25 10:00:00</Timestamp>"`)) {
		t.Error("trace time not in Vietnam's time")
	}
	if r := ResponseFors(p.Document); len(r) != 1 || r[0].DocumentID != "000.00.00.G22,2026/11/02,57/BTNMT-ĐĐ" || r[0].PromulgationDate != "2026-11-02" {
		t.Errorf("ResponseFors: %+v", r)
	}
}

// TestWriteRefuses: Write refuses kept elements that would duplicate a
// field or that hang nowhere, and a missing file.
func TestWriteRefuses(t *testing.T) {
	base := func() *document.Document { return document.Template(time.Now()) }
	for name, x := range map[string]document.EdXMLExtra{
		"a mapped field":       {Path: messagePath, XML: "<Subject>x</Subject>"},
		"a group":              {Path: messagePath, XML: "<From><OrganId>x</OrganId></From>"},
		"unknown path":         {Path: "/edXML/Nowhere", XML: "<A/>"},
		"not xml":              {Path: messagePath, XML: "<A>"},
		"two elements":         {Path: messagePath, XML: "<A/><B/>"},
		"a recipient too many": {Path: messagePath + "/To[3]", XML: "<OrganName>x</OrganName>"},
		"index without repeat": {Path: messagePath + "/From[1]", XML: "<OrganName>x</OrganName>"},
		"a file missing":       {Path: attachmentPath + "[1]", XML: "<AttachmentName>missing.pdf</AttachmentName>"},
		"a directive":          {Path: messagePath, XML: "<A><!DOCTYPE x></A>"},
	} {
		d := base()
		d.EdXMLExtra = []document.EdXMLExtra{x}
		if err := Write(io.Discard, d, nil); err == nil {
			t.Errorf("%s: written", name)
		}
	}
	d := base()
	d.PromulgatedAt = "25/11/2026"
	if err := Write(io.Discard, d, nil); err == nil || !strings.Contains(err.Error(), "promulgated_at") {
		t.Errorf("bad date: %v", err)
	}
}

// TestBusinessDocumentID: the document an update names in its Bussiness
// element (the national SDK's edoc_update sample) is found after a read.
func TestBusinessDocumentID(t *testing.T) {
	in := strings.Replace(string(testdata(t, "national.edxml")), "<edXML:BussinessDocType>0</edXML:BussinessDocType>",
		"<edXML:DocumentId> 000.00.00.H29,2026/11/20,1200/QĐ-UBND </edXML:DocumentId><edXML:BussinessDocType>2</edXML:BussinessDocType>", 1)
	p, err := Parse(strings.NewReader(in), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Document.BusinessType != document.BusinessUpdate || BusinessDocumentID(p.Document) != "000.00.00.H29,2026/11/20,1200/QĐ-UBND" {
		t.Fatalf("type %d, id %q", p.Document.BusinessType, BusinessDocumentID(p.Document))
	}
	p, _ = Parse(bytes.NewReader(testdata(t, "national.edxml")), Options{})
	if got := BusinessDocumentID(p.Document); got != "" {
		t.Fatalf("a new document names %q", got)
	}
}

// TestUpstreamSender: a document the city's gateway brought in is written
// from its sender outside the city, as the national axis gave it.
func TestUpstreamSender(t *testing.T) {
	d, err := document.Parse(testdata(t, "document.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	d.EdXMLID = ""
	d.From, d.FromName = "000.99.00.H29", "Trục liên thông"
	d.Upstream = &document.Upstream{From: "000.00.00.G22", FromName: "Bộ Nội vụ", Axis: "vdxp", DocID: "vdxp-7"}
	var out bytes.Buffer
	if err := Write(&out, d, goldenFiles(t)); err != nil {
		t.Fatal(err)
	}
	p, err := Parse(&out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Document.From != "000.00.00.G22" || p.Document.FromName != "Bộ Nội vụ" || !strings.HasPrefix(p.Document.EdXMLID, "000.00.00.G22,") ||
		Sender(d) != "000.00.00.G22" || !strings.HasPrefix(DocumentID(d), "000.00.00.G22,") {
		t.Fatalf("written from %s %q, DocumentId %s", p.Document.From, p.Document.FromName, p.Document.EdXMLID)
	}
}
