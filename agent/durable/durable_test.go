package durable

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAndFolder(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.json")
	for _, v := range []string{"one", "two"} {
		if err := WriteFile(p, []byte(v), 0o640); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != v {
			t.Fatalf("got %q", b)
		}
	}
	target := filepath.Join(dir, "inbox", "X")
	f, err := NewFolder(target, 0o750)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"document.json", "files/a.pdf", "files/sub/b.pdf"} {
		if err := f.Write(rel, []byte(rel), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Write("../escape", nil, 0o640); err == nil {
		t.Fatal("a path outside the folder was written")
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatal("the target exists before Commit")
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "files", "sub", "b.pdf")); string(b) != "files/sub/b.pdf" {
		t.Fatalf("got %q", b)
	}
	g, _ := NewFolder(target, 0o750)
	if err := g.Commit(); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("commit over an existing folder: %v", err)
	}
	g.Abort()
}

func TestSweep(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, TempPrefix+"x"), nil, 0o640)
	os.Mkdir(filepath.Join(dir, TempPrefix+"d"), 0o750)
	os.WriteFile(filepath.Join(dir, "keep"), nil, 0o640)
	if err := Sweep(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "keep" {
		t.Fatalf("left %v", ents)
	}
	if err := Sweep(filepath.Join(dir, "missing")); err != nil {
		t.Fatal(err)
	}
}
