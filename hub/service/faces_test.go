package service_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFacesAreThin holds the shape of the hub's HTTP side: the REST API
// (hub/api) and the web UI (hub/web) are faces of this service. Their code
// (tests aside) reaches the hub only through it, hub/auth (who is asking:
// tokens, sessions, CSRF) and hub/index's result types; never the archive,
// the registry, NATS, the pipeline, nor each other.
func TestFacesAreThin(t *testing.T) {
	allowed := map[string]bool{"hub/service": true, "hub/auth": true, "hub/index": true}
	for _, face := range []string{"api", "web"} {
		dir := filepath.Join("..", face)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			n++
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				rel, ok := strings.CutPrefix(path, "github.com/edxhub/edx/")
				if ok && strings.HasPrefix(rel, "hub") && !allowed[rel] {
					t.Errorf("hub/%s/%s imports %s", face, e.Name(), path)
				}
			}
		}
		if n == 0 {
			t.Fatalf("no source file in %s", dir)
		}
	}
}
