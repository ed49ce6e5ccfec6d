// Package durable writes files and folders so that a crash at any point
// leaves either the old state or the new one, never a torn file: write a
// temporary file (or folder) beside the target, fsync it, rename it into
// place, fsync the parent directory.
//
// Temporary names begin with TempPrefix; readers skip them and Sweep
// removes the ones a crash left behind.
package durable

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TempPrefix begins the name of every temporary file and folder.
const TempPrefix = ".tmp-"

// IsTemp reports whether a base name is a temporary one.
func IsTemp(name string) bool { return strings.HasPrefix(name, TempPrefix) }

func tempName(dir, base string) string {
	var b [6]byte
	rand.Read(b[:])
	return filepath.Join(dir, TempPrefix+hex.EncodeToString(b[:])+"-"+base)
}

// WriteFile writes data to path atomically and durably.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp := tempName(dir, filepath.Base(path))
	if err := writeSynced(tmp, data, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}

// writeSynced creates path with data and fsyncs it.
func writeSynced(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("durable: sync %s: %w", dir, err)
	}
	return nil
}

// Folder is a folder being written under a temporary name; Commit renames
// it into place.
type Folder struct {
	Dir    string // the temporary folder, where files are written
	target string
	dirs   map[string]bool
}

// NewFolder starts writing the folder that will become target.
func NewFolder(target string, perm os.FileMode) (*Folder, error) {
	parent := filepath.Dir(target)
	if err := os.MkdirAll(parent, perm); err != nil {
		return nil, err
	}
	tmp := tempName(parent, filepath.Base(target))
	if err := os.Mkdir(tmp, perm); err != nil {
		return nil, err
	}
	return &Folder{Dir: tmp, target: target, dirs: map[string]bool{tmp: true}}, nil
}

// Write creates the file rel (a slash-separated relative path, checked by
// the caller) inside the folder and fsyncs it.
func (f *Folder) Write(rel string, data []byte, perm os.FileMode) error {
	p, err := f.path(rel)
	if err != nil {
		return err
	}
	return writeSynced(p, data, perm)
}

// WriteFrom is Write with the content read from r, in a stream.
func (f *Folder) WriteFrom(rel string, r io.Reader, perm os.FileMode) error {
	p, err := f.path(rel)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// path makes the folders of rel and returns its path.
func (f *Folder) path(rel string) (string, error) {
	p := filepath.Join(f.Dir, filepath.FromSlash(rel))
	if !strings.HasPrefix(p, f.Dir+string(filepath.Separator)) {
		return "", fmt.Errorf("durable: %q escapes the folder", rel)
	}
	dir := filepath.Dir(p)
	if !f.dirs[dir] {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", err
		}
		for d := dir; d != f.Dir && !f.dirs[d]; d = filepath.Dir(d) {
			f.dirs[d] = true
		}
	}
	return p, nil
}

// Commit fsyncs the folder's directories, renames it to its target and
// fsyncs the parent. The target must not exist.
func (f *Folder) Commit() error {
	for d := range f.dirs {
		if err := SyncDir(d); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(f.target); err == nil {
		return fmt.Errorf("durable: %s: %w", f.target, fs.ErrExist)
	}
	if err := os.Rename(f.Dir, f.target); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(f.target))
}

// Abort removes the temporary folder.
func (f *Folder) Abort() { os.RemoveAll(f.Dir) }

// Move renames src to dst durably (both parents are fsynced).
func Move(src, dst string) error {
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	if filepath.Dir(src) != filepath.Dir(dst) {
		return SyncDir(filepath.Dir(src))
	}
	return nil
}

// Sweep removes the temporary files and folders left in dir by a crash.
func Sweep(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	for _, e := range ents {
		if IsTemp(e.Name()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
