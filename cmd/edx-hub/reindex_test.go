package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/hub"
	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/pkg/document"
)

// TestReindexLoudOnSkip: edx-hub reindex on an archive (real S3) holding a
// document it cannot index names it, with its reason, on its output, says
// how many, and fails (edx-hub exits 1).
func TestReindexLoudOnSkip(t *testing.T) {
	endpoint, ak, sk := s3embed.ForTest(t)
	cfg := hub.Config{Data: t.TempDir()}
	cfg.S3.Archive = archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: fmt.Sprintf("reindex-%d", os.Getpid())}
	arch, err := archive.New(t.Context(), cfg.S3.Archive, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	id := document.NewID(time.Now())
	key := projection.ContainerKey(id)
	if _, err := arch.Put(t.Context(), key, []byte("PK not a container"), "application/vnd.etsi.asic-e+zip", nil); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = reindex(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), &out)
	if err == nil || !strings.Contains(err.Error(), "1 archived objects were not indexed") {
		t.Fatalf("reindex: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "(1 skipped)") || !strings.Contains(out.String(), "NOT INDEXED") || !strings.Contains(out.String(), key+": ") {
		t.Fatalf("reindex output:\n%s", out.String())
	}
}
