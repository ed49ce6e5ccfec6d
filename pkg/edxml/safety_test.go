package edxml

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edxhub/edx/pkg/reason"
)

// packet returns a document packet whose MessageHeader holds header and
// whose AttachmentEncoded holds attachments.
func packet(header, attachments string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><edXMLEnvelope><edXMLHeader><MessageHeader>
<From><OrganId>000.00.00.H29</OrganId></From><To><OrganId>000.01.00.H29</OrganId></To>
<Subject>Thử</Subject>` + header + `</MessageHeader></edXMLHeader></edXMLEnvelope>
<AttachmentEncoded>` + attachments + `</AttachmentEncoded></edXML>`
}

func attachment(name, content string) string {
	return `<Attachment><AttachmentName>` + name + `</AttachmentName><ContentTransferEncoded>` + content + `</ContentTransferEncoded></Attachment>`
}

const billionLaughs = `<?xml version="1.0"?>
<!DOCTYPE edXML [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><edXMLEnvelope><edXMLHeader><MessageHeader><Subject>&lol9;</Subject></MessageHeader></edXMLHeader></edXMLEnvelope></edXML>`

// TestHostile: packets built to hurt get a clear error with a stable code
// and the path of the element at fault.
func TestHostile(t *testing.T) {
	small := Limits{MaxText: 1024, MaxElements: 200, MaxAttachments: 2, MaxDepth: 16}
	deep := strings.Repeat("<x>", 40) + strings.Repeat("</x>", 40)
	for _, tc := range []struct {
		name string
		in   string
		lim  Limits
		code reason.Code
		path string // the error's path
		msg  string // in the message
	}{
		{"entity expansion (billion laughs)", billionLaughs, Limits{}, reason.EdXMLDTD, "", "DOCTYPE"},
		{"external entity", `<?xml version="1.0"?><!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><edXML>&xxe;</edXML>`, Limits{}, reason.EdXMLDTD, "", "not allowed"},
		{"external DTD", `<!DOCTYPE edXML SYSTEM "http://evil.example/x.dtd"><edXML/>`, Limits{}, reason.EdXMLDTD, "", ""},
		{"DTD inside the packet", packet(`<!DOCTYPE x>`, ""), Limits{}, reason.EdXMLDTD, messagePath, ""},
		{"undeclared entity", packet(`<Content>&xxe;</Content>`, ""), Limits{}, reason.EdXMLMalformed, messagePath + "/Content", "entity"},
		{"not XML", "PK\x03\x04 not a packet", Limits{}, reason.EdXMLMalformed, "", ""},
		{"empty", "", Limits{}, reason.EdXMLMalformed, "", "no root element"},
		{"wrong root", `<html><body/></html>`, Limits{}, reason.EdXMLMalformed, "/html", "not edXML"},
		{"second root", packet("", "") + "<edXML/>", Limits{}, reason.EdXMLMalformed, "/edXML", "second root"},
		{"truncated", packet("", "")[:200], Limits{}, reason.EdXMLMalformed, messagePath + "/To[1]/OrganId", "well-formed"},
		{"truncated at the top", packet("", "")[:300], Limits{}, reason.EdXMLMalformed, rootPath, "unexpected EOF"},
		{"deep nesting", packet(deep, ""), small, reason.EdXMLLimit, messagePath + strings.Repeat("/x", 12), "deeper than 16"},
		{"too many elements", packet(strings.Repeat("<e/>", 300), ""), small, reason.EdXMLLimit, messagePath, "more than 200 elements"},
		{"too many attributes", packet(`<e`+attrs(100)+`/>`, ""), Limits{}, reason.EdXMLLimit, messagePath + "/e", "more than 64 attributes"},
		{"another encoding", `<?xml version="1.0" encoding="windows-1258"?><edXML/>`, Limits{}, reason.EdXMLMalformed, "", "edXML is UTF-8"},
		{"long field", packet("<Content>"+strings.Repeat("a", 2000)+"</Content>", ""), small, reason.EdXMLLimit, messagePath + "/Content", "longer than 1024"},
		{"long field in pieces", packet("<Content>"+strings.Repeat("<![CDATA[aaaaaaaaa]]>", 200)+"</Content>", ""), small, reason.EdXMLLimit, messagePath + "/Content", "longer than 1024"},
		{"long comment", packet("<!--"+strings.Repeat("a", 10000)+"-->", ""), small, reason.EdXMLLimit, messagePath, "longer than 1024"},
		{"long unknown element", packet("<Ext>"+strings.Repeat("<a>bbbbbbbb</a>", 100)+"</Ext>", ""), Limits{MaxExtra: 1000}, reason.EdXMLLimit, messagePath, "without a document.json field"},
		{"too many attachments", packet("", attachment("a", "YQ==")+attachment("b", "Yg==")+attachment("c", "Yw==")), small, reason.EdXMLLimit, attachmentPath + "[3]", "more than 2 attachments"},
		{"packet too large", packet("<Content>"+strings.Repeat("a", 4000)+"</Content>", ""), Limits{MaxPacket: 2048}, reason.EdXMLTooLarge, messagePath + "/Content", "larger than 2048"},
		{"packet too large in content", packet("", attachment("a.pdf", strings.Repeat("QUFB", 2000))), Limits{MaxPacket: 4096}, reason.EdXMLTooLarge, attachmentPath + "[1]/ContentTransferEncoded", "larger than 4096"},
		{"malformed base64", packet("", attachment("a.pdf", "JVBERi0x")+attachment("b.pdf", "JVBER*i0x")), Limits{}, reason.EdXMLBase64, attachmentPath + "[2]/ContentTransferEncoded", `attachment 2 "b.pdf": content is not valid base64`},
		{"base64 with an entity", packet("", attachment("a.pdf", "JVBE&amp;Ri0x")), Limits{}, reason.EdXMLBase64, attachmentPath + "[1]/ContentTransferEncoded", "reference"},
		{"base64 with data after padding", packet("", attachment("a.pdf", "YQ==YQ==")), Limits{}, reason.EdXMLBase64, attachmentPath + "[1]/ContentTransferEncoded", "base64"},
		{"element in content", packet("", attachment("a.pdf", "YQ==<b/>")), Limits{}, reason.EdXMLMalformed, attachmentPath + "[1]/ContentTransferEncoded/b", "inside attachment content"},
		{"packet ends in content", strings.Split(packet("", attachment("a.pdf", "YWFh@")), "@")[0], Limits{}, reason.EdXMLMalformed, attachmentPath + "[1]/ContentTransferEncoded", `the packet ends inside attachment 1 "a.pdf"`},
		{"attachment without content", packet("", `<Attachment><AttachmentName>a.pdf</AttachmentName></Attachment>`), Limits{}, reason.EdXMLAttachment, attachmentPath + "[1]", "no content"},
		{"two attachments, one name", packet("", attachment("a.pdf", "YQ==")+attachment("A.PDF", "Yg==")), Limits{}, reason.EdXMLAttachment, attachmentPath + "[2]", "already attachment 1's"},
		{"bad date", packet(`<PromulgationInfo><PromulgationDate>25.11.2026</PromulgationDate></PromulgationInfo>`, ""), Limits{}, reason.EdXMLField, messagePath + "/PromulgationInfo/PromulgationDate", "not a date"},
		{"impossible date", packet(`<DueDate>2026/02/30</DueDate>`, ""), Limits{}, reason.EdXMLField, messagePath + "/DueDate", "not a date"},
		{"bad priority", packet(`<OtherInfo><Priority>khẩn</Priority></OtherInfo>`, ""), Limits{}, reason.EdXMLField, messagePath + "/OtherInfo/Priority", "whole number"},
		{"bad business type", `<edXML><edXMLEnvelope><edXMLHeader><TraceHeaderList><Bussiness><BussinessDocType>x</BussinessDocType></Bussiness></TraceHeaderList></edXMLHeader></edXMLEnvelope></edXML>`, Limits{}, reason.EdXMLField, tracePath + "/Bussiness/BussinessDocType", "whole number"},
		{"subject twice", packet(`<Subject>Khác</Subject>`, ""), Limits{}, reason.EdXMLField, messagePath + "/Subject", "twice"},
		{"element in a field", packet(`<Content>a<b>c</b></Content>`, ""), Limits{}, reason.EdXMLMalformed, messagePath + "/Content/b", "where text is expected"},
		{"colon for a name", packet(`<Ext><:/></Ext>`, ""), Limits{}, reason.EdXMLMalformed, messagePath + "/Ext", "not a namespace-well-formed XML name"},
		{"name ending in a colon", packet(`<a:/>`, ""), Limits{}, reason.EdXMLMalformed, messagePath, "not a namespace-well-formed XML name"},
		{"attribute named by a colon", packet(`<Ext :="1"/>`, ""), Limits{}, reason.EdXMLMalformed, messagePath + "/Ext", "attribute name"},
		{"text in a group", packet(`<Code>1234</Code>`, ""), Limits{}, reason.EdXMLMalformed, messagePath + "/Code", "unexpected text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.in), Options{Limits: tc.lim})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want an *Error", err)
			}
			if e.Code != tc.code || e.Path != tc.path || !strings.Contains(e.Error(), tc.msg) {
				t.Errorf("got %s (code %s, path %q), want code %s, path %q, message with %q", e, e.Code, e.Path, tc.code, tc.path, tc.msg)
			}
		})
	}
}

func attrs(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, ` a%d="1"`, i)
	}
	return b.String()
}

// TestTolerant: what real peers do that is not wrong.
func TestTolerant(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		content  string
	}{
		{"no namespace at all", `<edXML><edXMLEnvelope/><AttachmentEncoded><Attachment><ContentTransferEncoded>YWJj</ContentTransferEncoded></Attachment></AttachmentEncoded></edXML>`, "abc"},
		{"undeclared edXML prefix", `<edXML:edXML><edXML:AttachmentEncoded><edXML:Attachment><edXML:ContentTransferEncoded>YWJj</edXML:ContentTransferEncoded></edXML:Attachment></edXML:AttachmentEncoded></edXML:edXML>`, "abc"},
		{"base64 without padding", packet("", attachment("a", "YWI")), "ab"},
		{"base64 with spaces, tabs and references", packet("", attachment("a", " YW\tJj&#xD;&#10;ZGVm ")), "abcdef"},
		{"base64 with a comment", packet("", attachment("a", "YWJj<!-- line 2 -->ZGVm")), "abcdef"},
		{"base64 in CDATA pieces", packet("", attachment("a", "<![CDATA[YWJj]]>\n<![CDATA[ZGVm]]>")), "abcdef"},
		{"empty content", packet("", attachment("a", "")), ""},
		{"self-closed content", packet("", `<Attachment><AttachmentName>a</AttachmentName><ContentTransferEncoded/></Attachment>`), ""},
		{"encoding written utf8", strings.Replace(packet("", attachment("a", "YWJj")), `encoding="UTF-8"`, `encoding="utf8"`, 1), "abc"},
		{"comments and processing instructions", "<?xml version='1.0'?><!-- x --><?pi x?>" + packet("<!-- c -->", attachment("a", "YWJj")) + "<!-- after -->\n", "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got bytes.Buffer
			p, err := Parse(strings.NewReader(tc.in), Options{Open: func(int) (io.WriteCloser, error) { return nopWriteCloser{&got}, nil }})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Attachments) != 1 || got.String() != tc.content || p.Attachments[0].Size != int64(len(tc.content)) {
				t.Errorf("content %q, attachments %+v", got.String(), p.Attachments)
			}
		})
	}
	// Dates as peers write them.
	for _, v := range []string{"2026/11/25", "2026-11-25", "25/11/2026", "2026/11/25 00:00:00", "2026-11-25T10:00:00+07:00", "2026/1/5"} {
		p, err := Parse(strings.NewReader(packet("<PromulgationInfo><PromulgationDate>"+v+"</PromulgationDate></PromulgationInfo>", "")), Options{})
		if err != nil {
			t.Errorf("%s: %v", v, err)
			continue
		}
		if want := "2026-11-25"; v == "2026/1/5" {
			if p.Document.PromulgatedAt != "2026-01-05" {
				t.Errorf("%s read as %s", v, p.Document.PromulgatedAt)
			}
		} else if p.Document.PromulgatedAt != want {
			t.Errorf("%s read as %s", v, p.Document.PromulgatedAt)
		}
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// TestParseToDirCleansUp: a packet that fails leaves no file behind.
func TestParseToDirCleansUp(t *testing.T) {
	dir := t.TempDir()
	in := packet("", attachment("a.pdf", "JVBERi0x")+attachment("b.pdf", "!!!!"))
	if _, err := ParseToDir(strings.NewReader(in), dir, Options{}); err == nil {
		t.Fatal("bad packet read")
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "files")); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(dir, "document.json")); err == nil {
		t.Error("document.json written for a bad packet")
	}
	// A directory made for a bad packet does not stay.
	made := filepath.Join(dir, "new")
	if _, err := ParseToDir(strings.NewReader(in), made, Options{}); err == nil {
		t.Fatal("bad packet read")
	}
	if _, err := os.Stat(made); err == nil {
		t.Error("the directory made for a bad packet stayed")
	}
	// A directory that holds a document already is not overwritten.
	os.WriteFile(filepath.Join(dir, "document.json"), []byte("{}"), 0o644)
	if _, err := ParseToDir(strings.NewReader(packet("", "")), dir, Options{}); err == nil {
		t.Error("document.json overwritten")
	}
}

// xorshift is a fast, allocation-free source of attachment bytes.
type xorshift uint64

func (x *xorshift) Read(p []byte) (int, error) {
	for i := 0; i < len(p); i += 8 {
		*x ^= *x << 13
		*x ^= *x >> 7
		*x ^= *x << 17
		v := uint64(*x)
		for j := i; j < i+8 && j < len(p); j++ {
			p[j] = byte(v)
			v >>= 8
		}
	}
	return len(p), nil
}

// bigPacket streams a packet with one attachment of n bytes through a
// pipe (it is never held whole), its base64 in lines of 76 like a MIME
// encoder's; bad, when not empty, is put in the middle of the base64. It
// returns the reader and a channel that yields the attachment's SHA-256.
func bigPacket(n int64, bad string) (io.Reader, <-chan [32]byte) {
	pr, pipe := io.Pipe()
	pw := pipe
	x := xorshift(88172645463325252)
	sum := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		pw := bufio.NewWriterSize(pw, 256<<10)
		head, tail, _ := strings.Cut(packet("", `<Attachment><ContentId>big</ContentId><AttachmentName>lớn.pdf</AttachmentName><ContentType>application/pdf</ContentType><ContentTransferEncoded>@</ContentTransferEncoded></Attachment>`), "@")
		io.WriteString(pw, head)
		enc := base64.NewEncoder(base64.StdEncoding, &lines{w: pw})
		var src io.Reader = io.LimitReader(io.MultiReader(strings.NewReader("%PDF-1.7\n"), &x), n)
		if bad != "" {
			half := n / 2 / 3 * 3
			io.Copy(io.MultiWriter(enc, h), io.LimitReader(src, half))
			io.WriteString(pw, bad)
		}
		_, err := io.Copy(io.MultiWriter(enc, h), src)
		enc.Close()
		io.WriteString(pw, tail)
		if err == nil {
			err = pw.Flush()
		}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sum <- s
		pipe.CloseWithError(err)
	}()
	return pr, sum
}

// lines breaks its output every 76 bytes with CRLF.
type lines struct {
	w   io.Writer
	col int
}

func (l *lines) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(76-l.col, len(p))
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
		p, l.col = p[k:], l.col+k
		if l.col == 76 {
			if _, err := io.WriteString(l.w, "\r\n"); err != nil {
				return 0, err
			}
			l.col = 0
		}
	}
	return n, nil
}

// heapWatch samples the heap as an attachment streams in.
type heapWatch struct {
	n, next int64
	peak    uint64
	h       io.Writer
}

func (w *heapWatch) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	if w.n >= w.next {
		w.next += 8 << 20
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		w.peak = max(w.peak, m.HeapAlloc)
	}
	return w.h.Write(p)
}

func (w *heapWatch) Close() error { return nil }

func baseline() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestLargePacketBoundedMemory: a 200 MiB packet (150 MiB of attachment)
// reads with a heap that grows by a few MiB at most, and the attachment's
// SHA-256 and size are right.
func TestLargePacketBoundedMemory(t *testing.T) {
	const n = 150 << 20 // base64 makes it 200 MiB, 203 MiB with line breaks
	base := baseline()
	r, sum := bigPacket(n, "")
	counted := &countingReader{r: r}
	w := &heapWatch{h: io.Discard}
	p, err := Parse(counted, Options{Open: func(int) (io.WriteCloser, error) { return w, nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := <-sum
	if counted.n < 200<<20 {
		t.Fatalf("the packet was %d bytes, want at least 200 MiB", counted.n)
	}
	a := p.Attachments[0]
	if a.Size != n || w.n != n || a.SHA256 != fmt.Sprintf("%x", want) || a.Detected != "application/pdf" {
		t.Errorf("attachment %+v, want %d bytes, sha256 %x", a, n, want)
	}
	growth := int64(w.peak) - int64(base)
	t.Logf("packet %d MiB, heap %d MiB before, %d MiB at most while reading (growth %d KiB)", counted.n>>20, base>>20, w.peak>>20, growth>>10)
	if growth > 16<<20 {
		t.Errorf("the heap grew by %d MiB reading a %d MiB packet", growth>>20, counted.n>>20)
	}
}

// TestLargePacketOverLimit: the same 200 MiB packet, over a lower packet
// limit, stops at the limit, in bounded memory.
func TestLargePacketOverLimit(t *testing.T) {
	base := baseline()
	r, _ := bigPacket(150<<20, "")
	w := &heapWatch{h: io.Discard}
	_, err := Parse(r, Options{Limits: Limits{MaxPacket: 64 << 20}, Open: func(int) (io.WriteCloser, error) { return w, nil }})
	io.Copy(io.Discard, r)
	var e *Error
	if !errors.As(err, &e) || e.Code != reason.EdXMLTooLarge || e.Path != attachmentPath+"[1]/ContentTransferEncoded" {
		t.Fatalf("err = %v", err)
	}
	if w.n > 64<<20 {
		t.Errorf("%d bytes decoded past the limit", w.n)
	}
	if growth := int64(w.peak) - int64(base); growth > 16<<20 {
		t.Errorf("the heap grew by %d MiB", growth>>20)
	}
}

// TestLargeMalformedBoundedMemory: a large packet whose base64 breaks in
// the middle fails with the attachment's path, in bounded memory.
func TestLargeMalformedBoundedMemory(t *testing.T) {
	base := baseline()
	r, _ := bigPacket(48<<20, "#")
	w := &heapWatch{h: io.Discard}
	_, err := Parse(r, Options{Open: func(int) (io.WriteCloser, error) { return w, nil }})
	io.Copy(io.Discard, r)
	var e *Error
	if !errors.As(err, &e) || e.Code != reason.EdXMLBase64 || e.Path != attachmentPath+"[1]/ContentTransferEncoded" || !strings.Contains(e.Msg, `"lớn.pdf"`) {
		t.Fatalf("err = %v", err)
	}
	if growth := int64(w.peak) - int64(base); growth > 16<<20 {
		t.Errorf("the heap grew by %d MiB", growth>>20)
	}
}

// TestEntityExpansionBoundedMemory: the billion laughs cost nothing.
func TestEntityExpansionBoundedMemory(t *testing.T) {
	base := baseline()
	_, err := Parse(strings.NewReader(billionLaughs), Options{})
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if !errors.Is(err, err) || !strings.Contains(fmt.Sprint(err), "DOCTYPE") {
		t.Fatal(err)
	}
	if growth := int64(m.HeapAlloc) - int64(base); growth > 4<<20 {
		t.Errorf("the heap grew by %d MiB", growth>>20)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestLimitsValidate: limits that cannot read a packet are refused up
// front; zero fields take the defaults.
func TestLimitsValidate(t *testing.T) {
	if err := (Limits{}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, l := range []Limits{{MaxPacket: 10}, {MaxDepth: 2}, {MaxText: 10}, {MaxExtra: 1 << 30}} {
		if err := l.Validate(); err == nil {
			t.Errorf("%+v validated", l)
		}
		if _, err := Parse(strings.NewReader(packet("", "")), Options{Limits: l}); err == nil {
			t.Errorf("Parse with %+v", l)
		}
	}
}
