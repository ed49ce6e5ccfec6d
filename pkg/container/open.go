package container

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Limits bound what Open accepts from untrusted bytes. Sizes are checked on
// the ZIP headers before anything is inflated, then again on the bytes
// inflated, which never exceed what the headers declared.
type Limits struct {
	MaxSize         int64 // container bytes
	MaxEntries      int   // ZIP entries
	MaxUncompressed int64 // sum of the entries' uncompressed sizes
	// MaxRatio bounds uncompressed/compressed for each entry over 1 MiB and
	// for the whole container (its content over its bytes) once its content
	// passes 1 MiB: a flat bomb of many small entries, each under the
	// per-entry check, fails the second.
	MaxRatio int64
}

// DefaultLimits suit official documents: a few hundred MiB at most.
var DefaultLimits = Limits{
	MaxSize:         256 << 20,
	MaxEntries:      1000,
	MaxUncompressed: 1 << 30,
	MaxRatio:        200,
}

// ratioFloor is the size below which compression ratios are not checked:
// small text compresses well and cannot hurt.
const ratioFloor = 1 << 20

// The entries Open keeps in memory are small: bounds on each.
const (
	maxManifest  = 2 << 20 // 1,000 references with the longest names fit
	maxSignature = 1 << 20 // a CMS signature with its chain
	maxMetadata  = 1 << 20 // document.json, with up to 2,000 recipients
)

// Entry is a file of an opened container. Open does not keep its content:
// Entry.Open inflates it again, bounded, from the container's bytes.
type Entry struct {
	Name      string   // path in the container
	MediaType string   // from the manifest
	Size      int64    // bytes inflated (the declared size for an entry of OpenFile)
	SHA256    [32]byte // computed while inflating (zero for an entry of OpenFile)
	f         *zip.File
}

// Open returns the entry's content, inflated anew from the container's
// bytes: never beyond Size, and an error at the end when the CRC-32 differs.
func (e *Entry) Open() (io.ReadCloser, error) {
	if e.f == nil {
		return nil, fmt.Errorf("container: %s: not an entry of an opened container", e.Name)
	}
	x, err := inflate(e.f)
	if err != nil {
		return nil, fmt.Errorf("container: %s: %w", e.Name, err)
	}
	x.declared = min(x.declared, e.Size)
	return x, nil
}

// Bytes returns the entry's content in memory: for one file at a time.
func (e *Entry) Bytes() ([]byte, error) {
	rc, err := e.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, e.Size)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("container: %s: %w", e.Name, err)
	}
	if _, err := rc.Read(nil); err != io.EOF {
		return nil, fmt.Errorf("container: %s: %w", e.Name, err)
	}
	return b, nil
}

// Container is an opened, not yet verified, container.
type Container struct {
	Raw       []byte // the container bytes, unchanged
	Manifest  []byte
	Signature []byte
	Refs      []Reference // the manifest's references
	MetaRaw   []byte      // document.json bytes
	Meta      *document.Document
	Entries   []*Entry // document.json and the payload files
}

// Files returns the payload entries (under files/).
func (c *Container) Files() []*Entry {
	var out []*Entry
	for _, e := range c.Entries {
		if strings.HasPrefix(e.Name, FilesDir) {
			out = append(out, e)
		}
	}
	return out
}

// Entry returns the entry with the given path.
func (c *Container) Entry(name string) *Entry {
	for _, e := range c.Entries {
		if e.Name == name {
			return e
		}
	}
	return nil
}

func fail(c reason.Code, format string, a ...any) error {
	return reason.List{{Code: c, Message: fmt.Sprintf(format, a...)}}
}

// Open reads a container from untrusted bytes within limits, holding in
// memory only the manifest, the signature and document.json: each payload
// file is inflated once, in a stream, to measure and hash it. Structural
// problems come back as a reason.List (errors.As) with stable codes; the
// signature is not checked (see Verify).
func Open(data []byte, lim Limits) (*Container, error) {
	c, err := open(data, lim)
	if err != nil {
		return nil, err
	}
	total := int64(len(c.MetaRaw))
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	for _, e := range c.Entries {
		if e.Name == MetadataPath {
			continue
		}
		if err := e.digest(*buf, &total, lim); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// OpenFile checks a container as Open does, short of inflating its payload
// files, and returns the entry at name (a path such as files/x.pdf), to read
// with Entry.Open: one file served without inflating the others. Its SHA256
// is not computed and its Size is the declared one, which reading enforces.
// A name the container does not hold is an error wrapping
// ErrNoSuchFile.
func OpenFile(data []byte, lim Limits, name string) (*Entry, error) {
	c, err := open(data, lim)
	if err != nil {
		return nil, err
	}
	e := c.Entry(name)
	if e == nil {
		return nil, fmt.Errorf("container: %q: %w", name, ErrNoSuchFile)
	}
	return e, nil
}

// ErrNoSuchFile: the container holds no entry of that name.
var ErrNoSuchFile = errors.New("no such file in the container")

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// digest inflates the entry in a stream, hashing it and counting the bytes:
// never beyond its declared size, nor beyond what remains of the limit on
// the container's uncompressed total.
func (e *Entry) digest(buf []byte, total *int64, lim Limits) error {
	if lim.MaxUncompressed > 0 && *total+e.Size > lim.MaxUncompressed {
		return fail(reason.ContainerZipBomb, "uncompressed size exceeds the limit of %d bytes", lim.MaxUncompressed)
	}
	x, err := inflate(e.f)
	if err != nil {
		return fail(reason.ContainerMalformed, "entry %q: %v", e.Name, err)
	}
	defer x.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, x, buf)
	switch {
	case errors.Is(err, errBeyond):
		return fail(reason.ContainerZipBomb, "entry %q: %v", e.Name, err)
	case err != nil:
		return fail(reason.ContainerMalformed, "entry %q: %v", e.Name, err)
	}
	*total += n
	e.Size = n
	h.Sum(e.SHA256[:0])
	return nil
}

// open checks everything the headers tell (names, layout, sizes, ratios)
// before inflating anything, then reads the small entries Open keeps.
func open(data []byte, lim Limits) (*Container, error) {
	if lim.MaxSize > 0 && int64(len(data)) > lim.MaxSize {
		return nil, fail(reason.ContainerTooLarge, "container of %d bytes exceeds the limit of %d", len(data), lim.MaxSize)
	}
	if lim.MaxEntries > 0 {
		if n, ok := centralRecords(data, lim.MaxEntries); ok && n > lim.MaxEntries {
			return nil, fail(reason.ContainerTooManyEntries, "more than %d entries", lim.MaxEntries)
		}
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, fail(reason.ContainerMalformed, "not a readable ZIP: %v", err)
	}
	if lim.MaxEntries > 0 && len(zr.File) > lim.MaxEntries {
		return nil, fail(reason.ContainerTooManyEntries, "%d entries exceed the limit of %d", len(zr.File), lim.MaxEntries)
	}
	// Names first: safety, layout and duplicates.
	seen := make(map[string]bool, len(zr.File))
	for _, f := range zr.File {
		if err := checkEntryName(f.Name); err != nil {
			return nil, fail(reason.ContainerBadPath, "entry %q: %v", f.Name, err)
		}
		key := strings.ToLower(f.Name)
		if seen[key] {
			return nil, fail(reason.ContainerDuplicateEntry, "entry %q appears twice", f.Name)
		}
		seen[key] = true
	}
	// Then sizes, as declared: no entry is inflated past a limit.
	var total, compressed uint64
	for _, f := range zr.File {
		total += f.UncompressedSize64
		compressed += f.CompressedSize64
		if lim.MaxUncompressed > 0 && total > uint64(lim.MaxUncompressed) {
			return nil, fail(reason.ContainerZipBomb, "uncompressed size exceeds the limit of %d bytes", lim.MaxUncompressed)
		}
		if lim.MaxRatio > 0 && f.UncompressedSize64 > ratioFloor &&
			f.UncompressedSize64/max(f.CompressedSize64, 1) > uint64(lim.MaxRatio) {
			return nil, fail(reason.ContainerZipBomb, "entry %q: compression ratio over %d", f.Name, lim.MaxRatio)
		}
		if limit, small := smallEntry(f.Name); small && f.UncompressedSize64 > limit {
			return nil, fail(reason.ContainerZipBomb, "entry %q of %d bytes exceeds the limit of %d", f.Name, f.UncompressedSize64, limit)
		}
		if strings.HasSuffix(f.Name, "/") && f.UncompressedSize64 != 0 {
			return nil, fail(reason.ContainerBadPath, "directory entry %q has content", f.Name)
		}
	}
	if compressed > uint64(len(data)) {
		return nil, fail(reason.ContainerZipBomb, "entries share compressed bytes (%d bytes of entries in a container of %d)", compressed, len(data))
	}
	if lim.MaxRatio > 0 && total > ratioFloor && total/uint64(max(len(data), 1)) > uint64(lim.MaxRatio) {
		return nil, fail(reason.ContainerZipBomb, "%d bytes uncompressed from a container of %d: compression ratio over %d", total, len(data), lim.MaxRatio)
	}
	if len(zr.File) == 0 || zr.File[0].Name != MimetypePath {
		return nil, fail(reason.ContainerMimetype, "the first entry must be %q", MimetypePath)
	}
	if zr.File[0].Method != zip.Store {
		return nil, fail(reason.ContainerMimetype, "%q must be stored uncompressed", MimetypePath)
	}
	c := &Container{Raw: data}
	for i, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		if _, small := smallEntry(f.Name); !small {
			if strings.HasPrefix(f.Name, "META-INF/") {
				return nil, fail(reason.ContainerUnlistedFile, "unexpected entry %q in META-INF", f.Name)
			}
			c.Entries = append(c.Entries, &Entry{Name: f.Name, Size: int64(f.UncompressedSize64), f: f})
			continue
		}
		b, err := readSmall(f)
		switch {
		case errors.Is(err, errBeyond):
			return nil, fail(reason.ContainerZipBomb, "entry %q: %v", f.Name, err)
		case err != nil:
			return nil, fail(reason.ContainerMalformed, "entry %q: %v", f.Name, err)
		}
		switch {
		case i == 0:
			if string(b) != Mimetype {
				return nil, fail(reason.ContainerMimetype, "mimetype is %q, want %q", truncate(b), Mimetype)
			}
		case f.Name == ManifestPath:
			c.Manifest = b
		case f.Name == SignaturePath:
			c.Signature = b
		case f.Name == MetadataPath:
			c.MetaRaw = b
			c.Entries = append(c.Entries, &Entry{Name: f.Name, Size: int64(len(b)), SHA256: sha256.Sum256(b), f: f})
		}
	}
	if c.Manifest == nil {
		return nil, fail(reason.ContainerNoManifest, "%s is missing", ManifestPath)
	}
	if c.Signature == nil {
		return nil, fail(reason.ContainerNoSignature, "%s is missing", SignaturePath)
	}
	if c.MetaRaw == nil {
		return nil, fail(reason.ContainerNoMetadata, "%s is missing", MetadataPath)
	}
	if c.Refs, err = parseManifest(c.Manifest); err != nil {
		return nil, fail(reason.ContainerNoManifest, "%v", err)
	}
	if lim.MaxEntries > 0 && len(c.Refs) > lim.MaxEntries {
		return nil, fail(reason.ContainerNoManifest, "the manifest lists %d files, more than the limit of %d entries", len(c.Refs), lim.MaxEntries)
	}
	for _, r := range c.Refs {
		if e := c.Entry(r.Name); e != nil {
			e.MediaType = r.MediaType
		}
	}
	if c.Meta, err = document.Parse(c.MetaRaw); err != nil {
		return nil, fail(reason.MetadataInvalid, "%v", err)
	}
	return c, nil
}

// smallEntry tells the entries Open keeps in memory, with their bounds.
func smallEntry(name string) (uint64, bool) {
	switch name {
	case MimetypePath:
		return uint64(len(Mimetype)), true
	case ManifestPath:
		return maxManifest, true
	case SignaturePath:
		return maxSignature, true
	case MetadataPath:
		return maxMetadata, true
	}
	return 0, false
}

// checkEntryName accepts the names of edx's layout: mimetype, the manifest
// and signature (and other files) under META-INF/, document.json and
// payload files under files/ whose names pass CheckFileName, and the
// directory entries META-INF/ and files/. Anything else, a safe path or
// not, is refused: a builder never writes it, and a recipient could not
// take it.
func checkEntryName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case !utf8.ValidString(name):
		return errors.New("name is not UTF-8")
	case strings.HasPrefix(name, "/"):
		return errors.New("absolute path")
	case strings.Contains(name, "\\"):
		return errors.New("backslash in path")
	case len(name) > 1 && name[1] == ':':
		return errors.New("drive letter in path")
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("control characters in path")
	}
	for _, seg := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("path segment %q", seg)
		}
	}
	switch name {
	case MimetypePath, MetadataPath, "META-INF/", FilesDir:
		return nil
	}
	if rest, ok := strings.CutPrefix(name, "META-INF/"); ok {
		return CheckFileName(rest)
	}
	if rest, ok := strings.CutPrefix(name, FilesDir); ok {
		return CheckFileName(rest)
	}
	return errors.New("outside the container's layout (mimetype, META-INF/, document.json, files/<name>)")
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
