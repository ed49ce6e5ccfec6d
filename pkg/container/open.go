package container

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Limits bound what Open accepts from untrusted bytes.
type Limits struct {
	MaxSize         int64 // container bytes
	MaxEntries      int   // ZIP entries
	MaxUncompressed int64 // sum of the entries' uncompressed sizes
	MaxRatio        int64 // uncompressed/compressed, for entries over 1 MiB
}

// DefaultLimits suit official documents: a few hundred MiB at most.
var DefaultLimits = Limits{
	MaxSize:         256 << 20,
	MaxEntries:      1000,
	MaxUncompressed: 1 << 30,
	MaxRatio:        200,
}

// Entry is a file of an opened container.
type Entry struct {
	Name      string // path in the container
	MediaType string // from the manifest
	Data      []byte
	SHA256    [32]byte // computed from Data
}

// Container is an opened, not yet verified, container.
type Container struct {
	Raw       []byte // the container bytes, unchanged
	Manifest  []byte
	Signature []byte
	Refs      []Reference // the manifest's references
	MetaRaw   []byte      // document.json bytes
	Meta      *document.Document
	Entries   []*Entry // every file but mimetype, manifest and signature
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

// Open reads a container from untrusted bytes within limits. Structural
// problems come back as a reason.List (errors.As) with stable codes; the
// signature is not checked (see Verify).
func Open(data []byte, lim Limits) (*Container, error) {
	fail := func(c reason.Code, format string, a ...any) error {
		return reason.List{{Code: c, Message: fmt.Sprintf(format, a...)}}
	}
	if lim.MaxSize > 0 && int64(len(data)) > lim.MaxSize {
		return nil, fail(reason.ContainerTooLarge, "container of %d bytes exceeds the limit of %d", len(data), lim.MaxSize)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, fail(reason.ContainerMalformed, "not a readable ZIP: %v", err)
	}
	if lim.MaxEntries > 0 && len(zr.File) > lim.MaxEntries {
		return nil, fail(reason.ContainerTooManyEntries, "%d entries exceed the limit of %d", len(zr.File), lim.MaxEntries)
	}
	// Names first: safety and duplicates, before any byte is inflated.
	seen := map[string]bool{}
	var total uint64
	for _, f := range zr.File {
		if err := checkEntryName(f.Name); err != nil {
			return nil, fail(reason.ContainerBadPath, "entry %q: %v", f.Name, err)
		}
		key := strings.ToLower(f.Name)
		if seen[key] {
			return nil, fail(reason.ContainerDuplicateEntry, "entry %q appears twice", f.Name)
		}
		seen[key] = true
		total += f.UncompressedSize64
		if lim.MaxUncompressed > 0 && total > uint64(lim.MaxUncompressed) {
			return nil, fail(reason.ContainerZipBomb, "uncompressed size exceeds the limit of %d bytes", lim.MaxUncompressed)
		}
		if lim.MaxRatio > 0 && f.UncompressedSize64 > 1<<20 &&
			f.UncompressedSize64/max(f.CompressedSize64, 1) > uint64(lim.MaxRatio) {
			return nil, fail(reason.ContainerZipBomb, "entry %q: compression ratio over %d", f.Name, lim.MaxRatio)
		}
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
			if f.UncompressedSize64 != 0 {
				return nil, fail(reason.ContainerBadPath, "directory entry %q has content", f.Name)
			}
			continue
		}
		b, err := readEntry(f)
		if err != nil {
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
		case strings.HasPrefix(f.Name, "META-INF/"):
			return nil, fail(reason.ContainerUnlistedFile, "unexpected entry %q in META-INF", f.Name)
		default:
			e := &Entry{Name: f.Name, Data: b, SHA256: sha256.Sum256(b)}
			c.Entries = append(c.Entries, e)
			if f.Name == MetadataPath {
				c.MetaRaw = b
			}
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

// readEntry inflates one entry, never beyond its declared size.
func readEntry(f *zip.File) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(f.UncompressedSize64)+1))
	if err != nil {
		return nil, err
	}
	if uint64(len(b)) != f.UncompressedSize64 {
		return nil, fmt.Errorf("inflates to %d bytes, declared %d", len(b), f.UncompressedSize64)
	}
	return b, nil
}

// checkEntryName rejects absolute, parent-relative and otherwise unsafe names.
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
	return nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
