package tlog

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/storage/posix"
)

// Backend is where a log lives: a tessera driver for the tree (entry
// bundles, tiles, the checkpoint) and a store for the files the hub keeps
// beside it: every checkpoint it time-stamped or collected cosignatures for,
// by tree size, the time-stamp tokens and the cosignatures.
//
// POSIX is the embedded default. Another deployment supplies another driver
// and Files (tessera's drivers: POSIX, GCP, AWS with MySQL, MySQL); nothing
// else in this package depends on the storage.
type Backend struct {
	Driver tessera.Driver
	Files  Files
	// stopped, if set, waits until the driver's log, its context ended,
	// has let go of its storage (Log.Close waits for it).
	stopped func(context.Context) error
	// check, if set, says why the driver cannot append (Log.Check).
	check func() error
}

// Files is a write-once store of small named files; names are slash
// separated (checkpoints/1000, timestamps/1000, cosignatures/1000/name).
type Files interface {
	// Get returns a file, or an error wrapping fs.ErrNotExist.
	Get(ctx context.Context, name string) ([]byte, error)
	// Create writes a new file durably; it fails with an error wrapping
	// fs.ErrExist when the name is taken.
	Create(ctx context.Context, name string, data []byte) error
	// List returns the names under prefix (a directory, ending in /),
	// sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// POSIX is the embedded backend: tessera's POSIX driver in dir (which then
// holds checkpoint, tile/ and .state/ as C2SP tlog-tiles lays them out) and
// the hub's files under dir/evidence/.
func POSIX(ctx context.Context, dir string) (Backend, error) {
	abs, files, err := logDir(dir)
	if err != nil {
		return Backend{}, err
	}
	d, err := posix.New(ctx, posix.Config{Path: abs})
	if err != nil {
		return Backend{}, fmt.Errorf("tlog: posix: %w", err)
	}
	return Backend{Driver: d, Files: files}, nil
}

// logDir is a log directory's absolute path and the hub's files in it
// (dir/evidence/, made if missing).
func logDir(dir string) (string, DirFiles, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", "", fmt.Errorf("tlog: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(abs, "evidence"), 0o755); err != nil {
		return "", "", fmt.Errorf("tlog: %w", err)
	}
	return abs, DirFiles(filepath.Join(abs, "evidence")), nil
}

// DirFiles is Files in a directory: each file written to a temporary name,
// synced, then linked into place (so a name is never half written and never
// replaced), and the directory synced.
type DirFiles string

func (d DirFiles) path(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return "", fmt.Errorf("tlog: bad file name %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, ".") {
			return "", fmt.Errorf("tlog: bad file name %q", name)
		}
	}
	return filepath.Join(string(d), filepath.FromSlash(name)), nil
}

// Get implements Files.
func (d DirFiles) Get(_ context.Context, name string) ([]byte, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("tlog: %w", err)
	}
	return b, nil
}

// Create implements Files.
func (d DirFiles) Create(_ context.Context, name string, data []byte) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tlog: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("tlog: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("tlog: write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("tlog: sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tlog: %w", err)
	}
	if err := os.Link(tmp.Name(), p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("tlog: %s: %w", name, fs.ErrExist)
		}
		return fmt.Errorf("tlog: %w", err)
	}
	df, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("tlog: %w", err)
	}
	defer df.Close()
	if err := df.Sync(); err != nil {
		return fmt.Errorf("tlog: sync %s: %w", dir, err)
	}
	return nil
}

// List implements Files.
func (d DirFiles) List(_ context.Context, prefix string) ([]string, error) {
	p, err := d.path(strings.TrimSuffix(prefix, "/"))
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tlog: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, prefix+e.Name())
	}
	sort.Strings(out)
	return out, nil
}
