package edxml

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/edxhub/edx/pkg/document"
)

// The layout of a document directory, as edx's agent keeps its inbox.
const (
	MetadataFile = "document.json"
	FilesDir     = "files"
	// OriginalFile is the payload file (files/original.edxml) under which
	// an agent keeps, in the signed container, the packet a document came
	// from, byte for byte; it is not one of the packet's attachments.
	OriginalFile = "original.edxml"
)

// ParseToDir reads a document packet into dir: document.json and
// files/<name> for each attachment. Attachments stream to temporary files
// that take their names when the packet has been read whole; on an error
// nothing is left behind. dir must not hold a document.json already.
// opt.Open is not used.
func ParseToDir(r io.Reader, dir string, opt Options) (*Packet, error) {
	meta := filepath.Join(dir, MetadataFile)
	if _, err := os.Lstat(meta); err == nil {
		return nil, fmt.Errorf("edxml: %s exists already", meta)
	}
	files := filepath.Join(dir, FilesDir)
	var made []string // directories made here, removed again on failure when empty
	for _, d := range []string{dir, files} {
		if _, err := os.Stat(d); err != nil {
			if err := os.Mkdir(d, 0o755); err != nil {
				return nil, fmt.Errorf("edxml: %w", err)
			}
			made = append(made, d)
		}
	}
	var temps []string
	ok := false
	defer func() {
		for _, t := range temps {
			if t != "" {
				os.Remove(t)
			}
		}
		for i := len(made) - 1; i >= 0 && !ok; i-- {
			os.Remove(made[i])
		}
	}()
	opt.Open = func(i int) (io.WriteCloser, error) {
		f, err := os.CreateTemp(files, ".edxml-*.part")
		if err != nil {
			return nil, err
		}
		for len(temps) <= i {
			temps = append(temps, "")
		}
		temps[i] = f.Name()
		return f, nil
	}
	p, err := Parse(r, opt)
	if err != nil {
		return nil, err
	}
	for i, a := range p.Attachments {
		dst := filepath.Join(files, a.File)
		if _, err := os.Lstat(dst); err == nil {
			return nil, fmt.Errorf("edxml: attachment %d: %s exists already", a.Index, dst)
		}
		if err := os.Chmod(temps[i], 0o644); err != nil {
			return nil, fmt.Errorf("edxml: attachment %d: %w", a.Index, err)
		}
		if err := os.Rename(temps[i], dst); err != nil {
			return nil, fmt.Errorf("edxml: attachment %d: %w", a.Index, err)
		}
		temps[i] = ""
	}
	b, err := p.Document.Marshal()
	if err != nil {
		return nil, fmt.Errorf("edxml: %w", err)
	}
	if err := os.WriteFile(meta, b, 0o644); err != nil {
		return nil, fmt.Errorf("edxml: %w", err)
	}
	ok = true
	return p, nil
}

// WriteDir writes the document packet of dir: its document.json and the
// files in files/, in name order (see Write for how attachments are
// ordered).
func WriteDir(w io.Writer, dir string) (*document.Document, error) {
	b, err := os.ReadFile(filepath.Join(dir, MetadataFile))
	if err != nil {
		return nil, fmt.Errorf("edxml: %w", err)
	}
	d, err := document.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("edxml: %s: %w", filepath.Join(dir, MetadataFile), err)
	}
	files, err := dirFiles(filepath.Join(dir, FilesDir))
	if err != nil {
		return nil, err
	}
	return d, Write(w, d, files)
}

func dirFiles(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("edxml: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var files []File
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("edxml: %s is not a regular file", p)
		}
		files = append(files, File{Name: e.Name(), Open: func() (io.ReadCloser, error) { return os.Open(p) }})
	}
	return files, nil
}
