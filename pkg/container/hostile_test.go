package container_test

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/container/containertest"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// allocated returns the bytes f allocates (runtime.MemStats.TotalAlloc).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func verify(data []byte, lim container.Limits) *container.Report {
	_, r := container.VerifyBytes(data, lim, container.Options{Trust: container.FixtureTrust()})
	return r
}

// TestFlatZipBomb: issue #9's bomb, ~1,000 entries of 1 MiB of zeros, each
// under the per-entry ratio check, validly signed: refused before anything
// is inflated, with little allocated.
func TestFlatZipBomb(t *testing.T) {
	s := container.NewSigner(t, container.UnitA)
	bomb, err := containertest.FlatBomb(container.Meta(t, container.UnitA), s, 990, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bomb: %d bytes, %d MiB uncompressed", len(bomb), 990)
	var r *container.Report
	n := allocated(func() { r = verify(bomb, container.DefaultLimits) })
	t.Logf("verifying the bomb allocated %.1f MiB", float64(n)/(1<<20))
	if r.Valid || !r.Reasons.Has(reason.ContainerZipBomb) {
		t.Fatalf("bomb: valid %v, reasons %v", r.Valid, r.Reasons)
	}
	if limit := uint64(4*len(bomb)) + 2<<20; n > limit {
		t.Errorf("verifying a bomb of %d bytes allocated %d bytes, more than %d", len(bomb), n, limit)
	}
}

// TestBombsStopWhileInflating: bombs that pass every check on the headers
// are stopped on the bytes inflated.
func TestBombsStopWhileInflating(t *testing.T) {
	s := container.NewSigner(t, container.UnitA)
	m := container.Meta(t, container.UnitA)
	for _, tc := range []struct {
		name    string
		entries []containertest.Entry
		lim     container.Limits
		want    reason.Code
	}{
		// Headers claiming 1 KiB for 64 MiB of zeros: the checks on the
		// headers pass, the reader stops at the claimed size.
		{"lying uncompressed size", []containertest.Entry{{Name: "files/a.txt", Zeros: 64 << 20, Declared: 1024}}, container.DefaultLimits, reason.ContainerZipBomb},
		{"lying manifest size", nil, container.DefaultLimits, reason.ContainerZipBomb},
		// The total, counted as the entries inflate.
		{"over the total", []containertest.Entry{{Name: "files/a.bin", Data: randomBytes(3 << 20), Stored: true},
			{Name: "files/b.bin", Data: randomBytes(3 << 20), Stored: true}},
			container.Limits{MaxSize: 64 << 20, MaxEntries: 10, MaxUncompressed: 5 << 20, MaxRatio: 200}, reason.ContainerZipBomb},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var data []byte
			var err error
			if tc.entries == nil {
				data, err = containertest.Craft(m, s, containertest.Entry{Name: "files/a.pdf", Data: []byte("%PDF")})
				data = lieAbout(t, data, container.ManifestPath, 100)
			} else {
				data, err = containertest.Craft(m, s, tc.entries...)
			}
			if err != nil {
				t.Fatal(err)
			}
			var r *container.Report
			n := allocated(func() { r = verify(data, tc.lim) })
			if r.Valid || !r.Reasons.Has(tc.want) {
				t.Fatalf("valid %v, reasons %v, want %s", r.Valid, r.Reasons, tc.want)
			}
			if limit := uint64(len(data)) + 2<<20; n > limit {
				t.Errorf("allocated %d bytes for a container of %d", n, len(data))
			}
		})
	}
}

// lieAbout rewrites the uncompressed size of one entry in the central
// directory and in its local header.
func lieAbout(t *testing.T, data []byte, name string, size uint32) []byte {
	t.Helper()
	out := bytes.Clone(data)
	eocd := bytes.LastIndex(out, []byte("PK\x05\x06"))
	p := int(binary.LittleEndian.Uint32(out[eocd+16:]))
	for range int(binary.LittleEndian.Uint16(out[eocd+10:])) {
		nl, xl, cl := int(binary.LittleEndian.Uint16(out[p+28:])), int(binary.LittleEndian.Uint16(out[p+30:])), int(binary.LittleEndian.Uint16(out[p+32:]))
		if string(out[p+46:p+46+nl]) == name {
			binary.LittleEndian.PutUint32(out[p+24:], size)
			local := int(binary.LittleEndian.Uint32(out[p+42:]))
			binary.LittleEndian.PutUint32(out[local+22:], size)
			return out
		}
		p += 46 + nl + xl + cl
	}
	t.Fatalf("no entry %s", name)
	return nil
}

// TestOverlappingEntries: central directory records sharing one entry's
// compressed bytes (a bomb that is small in the file and large inflated).
func TestOverlappingEntries(t *testing.T) {
	s := container.NewSigner(t, container.UnitA)
	var es []containertest.Entry
	for i := range 50 {
		es = append(es, containertest.Entry{Name: fmt.Sprintf("files/z%02d.txt", i), Zeros: 900 << 10})
	}
	data, err := containertest.Craft(container.Meta(t, container.UnitA), s, es...)
	if err != nil {
		t.Fatal(err)
	}
	// Point every payload record at the first payload's local header.
	zr, _ := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	first := int64(-1)
	out := bytes.Clone(data)
	cd := bytes.Index(out, []byte("PK\x01\x02"))
	for _, f := range zr.File {
		if !strings.HasPrefix(f.Name, "files/") {
			i := bytes.Index(out[cd:], []byte("PK\x01\x02"))
			cd += i + 46 + len(f.Name)
			continue
		}
		i := bytes.Index(out[cd:], []byte("PK\x01\x02"))
		rec := cd + i
		if first < 0 {
			first = int64(binary.LittleEndian.Uint32(out[rec+42:]))
		}
		binary.LittleEndian.PutUint32(out[rec+42:], uint32(first))
		cd = rec + 46 + len(f.Name)
	}
	r := verify(out, container.DefaultLimits)
	if r.Valid || !r.Reasons.Has(reason.ContainerZipBomb) {
		t.Fatalf("valid %v, reasons %v", r.Valid, r.Reasons)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7919 + i>>8*31 + i>>16*17)
	}
	// Not compressible: a simple generator defeats deflate poorly, so mix.
	x := uint64(88172645463325252)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// TestOpenStreams: Open holds no payload file in memory: a container with
// 16 MiB of compressible text opens and verifies with a few MiB allocated,
// and one file reads back on its own.
func TestOpenStreams(t *testing.T) {
	s := container.NewSigner(t, container.UnitA)
	line := []byte("Điều 1. Phê duyệt kế hoạch sử dụng đất năm 2026 của quận, phường, xã 0123456789.\n")
	text := bytes.Repeat(line, (4<<20)/len(line))
	for i := 0; i < len(text); i += 4096 {
		text[i] = byte('a' + i/4096%26) // a little variety
	}
	var files []container.File
	for i := range 4 {
		files = append(files, container.File{Name: fmt.Sprintf("phu-luc-%d.txt", i), Data: text})
	}
	data, err := container.Build(container.Meta(t, container.UnitA), files, s)
	if err != nil {
		t.Fatal(err)
	}
	var r *container.Report
	n := allocated(func() { r = verify(data, container.DefaultLimits) })
	t.Logf("container of %d bytes, %d MiB of text: verifying allocated %.2f MiB", len(data), 4*len(text)>>20, float64(n)/(1<<20))
	if !r.Valid {
		t.Fatal(r.Reasons)
	}
	if limit := uint64(len(data)) + 2<<20; n > limit {
		t.Errorf("verifying allocated %d bytes, more than %d: the payload is held in memory", n, limit)
	}
	// One file, streamed, without inflating the others.
	var got []byte
	n = allocated(func() {
		e, err := container.OpenFile(data, container.DefaultLimits, "files/phu-luc-2.txt")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := e.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		h := &prefix{}
		if _, err := io.Copy(h, rc); err != nil {
			t.Fatal(err)
		}
		got = h.b
	})
	if !bytes.Equal(got, text[:len(got)]) || len(got) != 64 {
		t.Fatalf("read back %q", got)
	}
	if limit := uint64(len(data)) + 1<<20; n > limit {
		t.Errorf("reading one file allocated %d bytes, more than %d", n, limit)
	}
	if _, err := container.OpenFile(data, container.DefaultLimits, "files/none.txt"); err == nil {
		t.Error("OpenFile found a file that is not there")
	}
}

// prefix keeps the first 64 bytes written, and counts the rest.
type prefix struct {
	b []byte
	n int
}

func (p *prefix) Write(b []byte) (int, error) {
	if k := min(64-len(p.b), len(b)); k > 0 {
		p.b = append(p.b, b[:k]...)
	}
	p.n += len(b)
	return len(b), nil
}

// hostileNames are payload names every builder refuses, by the rule that
// refuses them.
var hostileNames = map[string]string{
	"nested path":            "a/b.txt",
	"CON":                    "CON",
	"con.txt":                "con.txt",
	"Nul .pdf":               "Nul .pdf",
	"aux.tar.gz":             "aux.tar.gz",
	"COM1":                   "COM1",
	"lpt9.docx":              "lpt9.docx",
	"COM¹":                   "COM¹.txt",
	"prn":                    "prn",
	"conout$":                "CONOUT$",
	"trailing dot":           "x.pdf.",
	"trailing space":         "x.pdf ",
	"leading space":          " x.pdf",
	"colon":                  "q:z.txt",
	"asterisk":               "a*.pdf",
	"question mark":          "a?.pdf",
	"quote":                  `a".pdf`,
	"less than":              "a<b.pdf",
	"greater than":           "a>b.pdf",
	"pipe":                   "a|b.pdf",
	"backslash":              `a\b.pdf`,
	"newline":                "a\nb.pdf",
	"tab":                    "a\tb.pdf",
	"DEL":                    "a\x7fb.pdf",
	"C1 control":             "a\u0085b.pdf",
	"right-to-left override": "hop-dong\u202efdp.exe",
	"over-long":              strings.Repeat("đ", 128) + ".pdf",
	"dot dot":                "..",
	"dot":                    ".",
}

// TestHostileNames: each name Prepare refuses, Open refuses too, with
// container.bad_path, when a sender builds the container itself and signs
// it validly; and "files/a" beside "files/a/b.txt" (a file and a folder of
// the same name), and files outside the layout.
func TestHostileNames(t *testing.T) {
	s := container.NewSigner(t, container.UnitA)
	m := container.Meta(t, container.UnitA)
	for what, name := range hostileNames {
		t.Run(what, func(t *testing.T) {
			if _, err := container.Prepare(m, []container.File{{Name: name, Data: []byte("x")}}); err == nil {
				t.Errorf("Prepare accepted %q", name)
			}
			if err := container.CheckFileName(name); err == nil {
				t.Errorf("CheckFileName accepted %q", name)
			}
			data, err := containertest.Craft(m, s, containertest.Entry{Name: "files/" + name, Data: []byte("x")})
			if err != nil {
				t.Fatal(err)
			}
			if r := verify(data, container.DefaultLimits); r.Valid || !r.Reasons.Has(reason.ContainerBadPath) {
				t.Fatalf("%q: valid %v, reasons %v", name, r.Valid, r.Reasons)
			}
		})
	}
	for what, es := range map[string][]containertest.Entry{
		"a file and a folder of the same name": {{Name: "files/a", Data: []byte("x")}, {Name: "files/a/b.txt", Data: []byte("y")}},
		"a file outside files/":                {{Name: "files/a.pdf", Data: []byte("x")}, {Name: "khac.pdf", Data: []byte("y")}},
		"a file in another folder":             {{Name: "files/a.pdf", Data: []byte("x")}, {Name: "other/a.pdf", Data: []byte("y")}},
	} {
		t.Run(what, func(t *testing.T) {
			data, err := containertest.Craft(m, s, es...)
			if err != nil {
				t.Fatal(err)
			}
			if r := verify(data, container.DefaultLimits); r.Valid || !r.Reasons.Has(reason.ContainerBadPath) {
				t.Fatalf("valid %v, reasons %v", r.Valid, r.Reasons)
			}
		})
	}
	// Names at the edge that are fine.
	for _, name := range []string{"Quyết định số 12.pdf", "CONSOLE.txt", "com10.txt", "nul-list.txt", "a.b.c", strings.Repeat("a", 255), "LPT.txt", "昔.pdf"} {
		data, err := containertest.Craft(m, s, containertest.Entry{Name: "files/" + name, Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if r := verify(data, container.DefaultLimits); !r.Valid {
			t.Errorf("%q refused: %v", name, r.Reasons)
		}
		if _, err := container.Prepare(m, []container.File{{Name: name, Data: []byte("x")}}); err != nil {
			t.Errorf("Prepare refused %q: %v", name, err)
		}
	}
}

// FuzzFileName: the builder and the reader agree on every name: what
// CheckFileName accepts, Prepare packs and Open reads back under files/;
// what it refuses, Prepare refuses and Open refuses with
// container.bad_path.
func FuzzFileName(f *testing.F) {
	for _, n := range hostileNames {
		f.Add(n)
	}
	f.Add("Quyết định.pdf")
	f.Add("a.b")
	m := container.Meta(f, container.UnitA)
	f.Fuzz(func(t *testing.T, name string) {
		ok := container.CheckFileName(name) == nil
		u, err := container.Prepare(m, []container.File{{Name: name, Data: []byte("x")}})
		if (err == nil) != ok {
			t.Fatalf("%q: CheckFileName ok %v, Prepare: %v", name, ok, err)
		}
		if ok {
			data, err := u.Seal([]byte("junk signature"))
			if err != nil {
				t.Fatal(err)
			}
			c, err := container.Open(data, container.DefaultLimits)
			if err != nil {
				t.Fatalf("%q: sealed, then refused: %v", name, err)
			}
			if e := c.Entry("files/" + name); e == nil || e.Size != 1 {
				t.Fatalf("%q: not read back", name)
			}
			return
		}
		if len(name) > 60000 || name == "" || strings.HasSuffix(name, "/") {
			return // beyond what a ZIP name holds, or a directory entry
		}
		data, err := containertest.Craft(m, nil, containertest.Entry{Name: "files/" + name, Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = container.Open(data, container.DefaultLimits)
		var rs reason.List
		if err == nil || !asList(err, &rs) || !(rs.Has(reason.ContainerBadPath) || rs.Has(reason.ContainerMalformed)) {
			t.Fatalf("%q: refused by CheckFileName, Open: %v", name, err)
		}
	})
}

func asList(err error, rs *reason.List) bool {
	l, ok := err.(reason.List)
	*rs = l
	return ok
}

// zipRecords walks a ZIP's local headers through its central directory.
type zipRecord struct {
	name               string
	flags              uint16
	localExtra         int
	centralExtra       int
	localCRC, localC   uint32
	localU, centralCRC uint32
	centralC, centralU uint32
	dataOffset         int64
}

func records(t *testing.T, data []byte) []zipRecord {
	t.Helper()
	eocd := bytes.LastIndex(data, []byte("PK\x05\x06"))
	if eocd < 0 {
		t.Fatal("no end of central directory")
	}
	n := int(binary.LittleEndian.Uint16(data[eocd+10:]))
	p := int(binary.LittleEndian.Uint32(data[eocd+16:]))
	var out []zipRecord
	le16 := func(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
	le32 := func(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
	for range n {
		c := data[p:]
		if string(c[:4]) != "PK\x01\x02" {
			t.Fatalf("central directory record at %d", p)
		}
		nl, xl, cl := int(le16(c[28:])), int(le16(c[30:])), int(le16(c[32:]))
		off := int(le32(c[42:]))
		l := data[off:]
		if string(l[:4]) != "PK\x03\x04" {
			t.Fatalf("local header at %d", off)
		}
		r := zipRecord{name: string(c[46 : 46+nl]), flags: le16(l[6:]), localExtra: int(le16(l[28:])), centralExtra: xl,
			localCRC: le32(l[14:]), localC: le32(l[18:]), localU: le32(l[22:]),
			centralCRC: le32(c[16:]), centralC: le32(c[20:]), centralU: le32(c[24:]),
			dataOffset: int64(off + 30 + int(le16(l[26:])) + int(le16(l[28:])))}
		if le16(c[8:]) != r.flags {
			t.Errorf("%s: flags %#x locally, %#x in the central directory", r.name, r.flags, le16(c[8:]))
		}
		out = append(out, r)
		p += 46 + nl + xl + cl
	}
	return out
}

// TestASiCELayout checks the bytes Seal writes: mimetype first, stored,
// its content at byte 38; every entry with its CRC-32 and sizes in its
// local header, no data descriptor (flag bit 3) and no extra field; and
// file(1) names the format.
func TestASiCELayout(t *testing.T) {
	s := container.NewSigner(t, container.UnitA)
	data, err := container.Build(container.Meta(t, container.UnitA), []container.File{
		{Name: "Quyết định.pdf", Data: []byte("%PDF-1.7\n%%EOF\n")},
		{Name: "phụ lục.txt", Data: bytes.Repeat([]byte("phụ lục "), 1000)},
		{Name: "ngẫu nhiên.txt", Data: randomBytes(5000)}, // deflate would grow it: stored
	}, s)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(data[38 : 38+len(container.Mimetype)]); got != container.Mimetype || string(data[30:38]) != "mimetype" {
		t.Fatalf("bytes 30-69: %q", data[30:38+len(container.Mimetype)])
	}
	rs := records(t, data)
	if len(rs) != 7 || rs[0].name != "mimetype" {
		t.Fatalf("entries: %+v", rs)
	}
	methods := map[string]uint16{}
	zr, _ := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	for _, f := range zr.File {
		methods[f.Name] = f.Method
	}
	for _, r := range rs {
		if r.flags&0x8 != 0 {
			t.Errorf("%s: data descriptor (flags %#x)", r.name, r.flags)
		}
		if r.localExtra != 0 || r.centralExtra != 0 {
			t.Errorf("%s: extra fields of %d and %d bytes", r.name, r.localExtra, r.centralExtra)
		}
		if r.localCRC != r.centralCRC || r.localC != r.centralC || r.localU != r.centralU || r.localU == 0 {
			t.Errorf("%s: local header CRC %08x sizes %d/%d, central directory %08x %d/%d", r.name, r.localCRC, r.localC, r.localU, r.centralCRC, r.centralC, r.centralU)
		}
		if !isASCII(r.name) && r.flags&0x800 == 0 {
			t.Errorf("%s: UTF-8 name without the UTF-8 flag", r.name)
		}
	}
	if methods["files/phụ lục.txt"] != zip.Deflate || methods["files/ngẫu nhiên.txt"] != zip.Store || methods["files/Quyết định.pdf"] != zip.Store {
		t.Errorf("methods: %v", methods)
	}
	// A streaming reader, as Java's ZipInputStream reads: local headers
	// only, entry after entry.
	streamRead(t, data, rs)
	if r := verify(data, container.DefaultLimits); !r.Valid {
		t.Fatal(r.Reasons)
	}
	if p, err := exec.LookPath("file"); err == nil {
		tmp := t.TempDir() + "/c.asice"
		os.WriteFile(tmp, data, 0o644)
		out, err := exec.Command(p, "-b", tmp).CombinedOutput()
		if err != nil || !strings.Contains(string(out), container.Mimetype) {
			t.Errorf("file(1): %s %v", out, err)
		}
		t.Logf("file(1): %s", bytes.TrimSpace(out))
	} else {
		t.Log("file(1) is not installed: byte-level checks only")
	}
}

// streamRead walks the local headers from byte 0, each giving the size of
// the data that follows, as a streaming reader must.
func streamRead(t *testing.T, data []byte, rs []zipRecord) {
	t.Helper()
	p := 0
	for i := range rs {
		if string(data[p:p+4]) != "PK\x03\x04" {
			t.Fatalf("entry %d: no local header at %d", i, p)
		}
		nl := int(binary.LittleEndian.Uint16(data[p+26:]))
		xl := int(binary.LittleEndian.Uint16(data[p+28:]))
		size := int(binary.LittleEndian.Uint32(data[p+18:]))
		if name := string(data[p+30 : p+30+nl]); name != rs[i].name {
			t.Fatalf("entry %d: %q, central directory %q", i, name, rs[i].name)
		}
		p += 30 + nl + xl + size
	}
	if string(data[p:p+4]) != "PK\x01\x02" {
		t.Fatalf("after the last entry, at %d: %q", p, data[p:p+4])
	}
}

func isASCII(s string) bool {
	for _, r := range s {
		if r >= 0x80 {
			return false
		}
	}
	return true
}

// TestPre9ContainerVerifies: a container written before issue #9 (data
// descriptors and extended-timestamp extra fields on every entry; kept in
// testdata/ with its CA's roots) still opens and verifies.
func TestPre9ContainerVerifies(t *testing.T) {
	data, err := os.ReadFile("testdata/pre9.asice")
	if err != nil {
		t.Fatal(err)
	}
	descriptors := 0
	for _, r := range records(t, data) {
		if r.flags&0x8 != 0 && r.localExtra > 0 {
			descriptors++
		}
	}
	if descriptors != 6 {
		t.Fatalf("the golden container has %d entries with data descriptors and extra fields, want all 6", descriptors)
	}
	trust, err := pki.LoadTrust("testdata/pre9-roots.pem")
	if err != nil {
		t.Fatal(err)
	}
	c, r := container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: trust, At: time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)})
	if !r.Valid || len(c.Files()) != 2 {
		t.Fatalf("valid %v: %v", r.Valid, r.Reasons)
	}
	b, err := c.Entry("files/phụ lục.txt").Bytes()
	if err != nil || !strings.HasPrefix(string(b), "Phụ lục: lặp lại") {
		t.Fatalf("read back %q: %v", b, err)
	}
}

// TestCentralDirectoryBombs: a container of many tiny central directory
// records (zip.NewReader allocates for each before the entry limit can be
// checked) is refused without reading them: one written by Go's own ZIP
// writer (70,000 entries, zip64 end records), and one crafted with 200,000
// records behind prepended data and an entry count that matches only
// modulo 65,536.
func TestCentralDirectoryBombs(t *testing.T) {
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.CreateHeader(&zip.FileHeader{Name: container.MimetypePath, Method: zip.Store})
	w.Write([]byte(container.Mimetype))
	for i := range 70000 {
		zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("files/%05d", i), Method: zip.Store})
	}
	zw.Close()
	// Crafted: one local header, 200,000 central records pointing at it.
	const n = 200000
	var c bytes.Buffer
	c.WriteString("prepended, as a self-extracting archive has")
	base := c.Len()
	le := binary.LittleEndian
	var lh [30]byte
	copy(lh[:], "PK\x03\x04")
	le.PutUint16(lh[26:], 1)
	c.Write(lh[:])
	c.WriteString("a")
	dirOffset := c.Len() - base
	for range n {
		var ch [46]byte
		copy(ch[:], "PK\x01\x02")
		le.PutUint16(ch[28:], 1)
		c.Write(ch[:])
		c.WriteString("a")
	}
	var eocd [22]byte
	copy(eocd[:], "PK\x05\x06")
	le.PutUint16(eocd[8:], n%65536)
	le.PutUint16(eocd[10:], n%65536)
	le.PutUint32(eocd[12:], uint32(n*47))
	le.PutUint32(eocd[16:], uint32(dirOffset))
	c.Write(eocd[:])
	for name, data := range map[string][]byte{"Go's writer, zip64": zbuf.Bytes(), "crafted": c.Bytes()} {
		t.Run(name, func(t *testing.T) {
			zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
			if err != nil || len(zr.File) < 70000 {
				t.Fatalf("the bomb is not a ZIP archive/zip reads: %v", err)
			}
			var r *container.Report
			alloc := allocated(func() { r = verify(data, container.DefaultLimits) })
			t.Logf("%d bytes, %d records: %.2f MiB allocated", len(data), len(zr.File), float64(alloc)/(1<<20))
			if r.Valid || !r.Reasons.Has(reason.ContainerTooManyEntries) {
				t.Fatalf("reasons %v", r.Reasons)
			}
			if alloc > 1<<20 {
				t.Errorf("allocated %d bytes", alloc)
			}
		})
	}
	// A container behind prepended data still opens.
	s := container.NewSigner(t, container.UnitA)
	good, err := container.Build(container.Meta(t, container.UnitA), []container.File{{Name: "a.pdf", Data: []byte("%PDF")}}, s)
	if err != nil {
		t.Fatal(err)
	}
	if r := verify(append([]byte("#!/bin/sh prepended\n"), good...), container.DefaultLimits); !r.Valid {
		t.Fatalf("prepended: %v", r.Reasons)
	}
}
