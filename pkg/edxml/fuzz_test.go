package edxml

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func seeds(f *testing.F, names ...string) {
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

var fuzzLimits = Limits{MaxPacket: 1 << 20, MaxText: 64 << 10, MaxExtra: 256 << 10, MaxElements: 5000}

// FuzzParsePacket: any input reads to a document or to an *Error; what
// reads, edx writes, and what edx writes reads back to the same
// document.json and the same files.
func FuzzParsePacket(f *testing.F) {
	seeds(f, append(shapes, "edx.golden.edxml", "status-national.edxml")...)
	f.Add([]byte(packet(`<ResponseFor><DocumentId>01ARZ3NDEKTSV4RRFFQ69G5FAV</DocumentId></ResponseFor><Ext a="1" xml:lang="vi"><b>x</b> y</Ext>`,
		attachment("", "YWJj")+attachment("x/y:z.txt", "UEsDBAo=")+`<Attachment><Description> d </Description><ContentTransferEncoded/></Attachment>`)))
	f.Add([]byte(packet(`<x:Ext xmlns:x="urn:x" x:attr="1" xml:lang="vi" plain="a&#10;b&#9;c"><y>t&#13;</y><![CDATA[c]]><!-- c --><edXML:z xmlns:edXML="`+Namespace+`"/></x:Ext>`+
		`<DocumentType><Type>99</Type></DocumentType><To/><To><OrganName>x</OrganName></To><OtherInfo><Priority>+4</Priority><PageAmount>-0</PageAmount></OtherInfo>`, "") +
		`<!-- trailing -->`))
	f.Add([]byte(`<edXML><edXMLEnvelope><edXMLHeader><TraceHeaderList><TraceHeader/><TraceHeader><Timestamp>not a time</Timestamp></TraceHeader>` +
		`<TraceHeader><Timestamp>2026-11-25T10:00:00Z</Timestamp></TraceHeader></TraceHeaderList></edXMLHeader><edXMLBody><edXMLManifest>` +
		`<Reference><ContentId>cid:zz</ContentId></Reference><Reference/><Reference a="b"><Description>x</Description></Reference></edXMLManifest></edXMLBody></edXMLEnvelope></edXML>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var bufs []*bytes.Buffer
		sink := func(bufs *[]*bytes.Buffer) func(int) (io.WriteCloser, error) {
			return func(i int) (io.WriteCloser, error) {
				for len(*bufs) <= i {
					*bufs = append(*bufs, new(bytes.Buffer))
				}
				return nopWriteCloser{(*bufs)[i]}, nil
			}
		}
		p, err := Parse(bytes.NewReader(data), Options{Limits: fuzzLimits, Open: sink(&bufs)})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("not an *Error: %v", err)
			}
			return
		}
		files := make([]File, len(p.Attachments))
		for i, a := range p.Attachments {
			b := bufs[i].Bytes()
			files[i] = File{Name: a.File, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
		}
		var out bytes.Buffer
		if err := Write(&out, p.Document, files); err != nil {
			t.Fatalf("write: %v", err)
		}
		var bufs2 []*bytes.Buffer
		p2, err := Parse(bytes.NewReader(out.Bytes()), Options{Open: sink(&bufs2)})
		if err != nil {
			t.Fatalf("edx's own packet does not read: %v\n%s", err, out.Bytes())
		}
		d := *p.Document
		if d.EdXMLID == "" {
			d.EdXMLID = DocumentID(&d)
		}
		a, _ := d.Marshal()
		b, _ := p2.Document.Marshal()
		if !bytes.Equal(a, b) {
			t.Fatalf("document.json changed through edx's packet:\n%s\n%s\npacket:\n%s", a, b, out.Bytes())
		}
		if !reflect.DeepEqual(p.Attachments, p2.Attachments) {
			t.Fatalf("attachments changed:\n%+v\n%+v", p.Attachments, p2.Attachments)
		}
		for i := range bufs2 {
			if !bytes.Equal(bufs[i].Bytes(), bufs2[i].Bytes()) {
				t.Fatalf("attachment %d's bytes changed", i+1)
			}
		}
	})
}

// FuzzParseStatus: any input reads to a status or to an *Error; what reads,
// edx writes, and it reads back the same.
func FuzzParseStatus(f *testing.F) {
	seeds(f, "status-national.edxml", "status-provincial.edxml", "status-soap.edxml", "status.golden.edxml", "national.edxml")
	f.Add([]byte(`<Envelope><Header><MessageHeader><Status><StatusCode>5</StatusCode><Timestamp>2026-11-25T10:00:00.5Z</Timestamp></Status>` +
		`<Ext a="1">x</Ext><From><OrganId>000.01.00.H29</OrganId><Extra/></From></MessageHeader></Header><Body><x/></Body></Envelope>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStatus(bytes.NewReader(data), fuzzLimits)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("not an *Error: %v", err)
			}
			return
		}
		var out bytes.Buffer
		if err := WriteStatus(&out, s); err != nil {
			t.Fatalf("write: %v", err)
		}
		s2, err := ParseStatus(bytes.NewReader(out.Bytes()), Limits{})
		if err != nil {
			t.Fatalf("edx's own status does not read: %v\n%s", err, out.Bytes())
		}
		a, _ := json.Marshal(s)
		b, _ := json.Marshal(s2)
		if !bytes.Equal(a, b) {
			t.Fatalf("status changed through edx's packet:\n%s\n%s\npacket:\n%s", a, b, out.Bytes())
		}
	})
}
