package inbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/edxhub/edx/agent/internal/agenttest"
	"github.com/edxhub/edx/pkg/container"
)

// TestPutStreamsFiles: a received container with 32 MiB of text is
// verified and written to the inbox folder in a stream: what is allocated
// is about the container's compressed bytes, not its content, and the
// files on disk are the sender's.
func TestPutStreamsFiles(t *testing.T) {
	p := agenttest.NewPKI(t)
	s := openStore(t, t.TempDir())
	_, meta := agenttest.Meta(sender, me)
	line := []byte("Điều 3. Chánh Văn phòng, Giám đốc các Sở và Chủ tịch UBND các quận chịu trách nhiệm thi hành.\n")
	text := bytes.Repeat(line, (8<<20)/len(line))
	for i := 0; i < len(text); i += 4096 {
		text[i] = byte('a' + i/4096%26)
	}
	var files []container.File
	for i := range 4 {
		files = append(files, container.File{Name: fmt.Sprintf("phu-luc-%d.txt", i), Data: text})
	}
	raw, err := container.Build(meta, files, p.Unit(t, sender))
	if err != nil {
		t.Fatal(err)
	}
	rc := p.Receipt(t, raw)
	files = nil
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, rep := container.VerifyBytes(raw, container.DefaultLimits, container.Options{Trust: p.Trust})
	if !rep.Valid {
		t.Fatal(rep.Reasons)
	}
	rr := container.VerifyReceipt(rc, rep.ContainerSHA256, container.Options{Trust: p.Trust})
	it, _, err := s.Put(t.Context(), me, Received{Container: c, SHA256: rep.ContainerSHA256, Receipt: rc, Body: rr.Receipt})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	n := after.TotalAlloc - before.TotalAlloc
	t.Logf("container of %d bytes, %d MiB of files: verifying and storing allocated %.2f MiB", len(raw), 4*len(text)>>20, float64(n)/(1<<20))
	if limit := uint64(len(raw)) + 4<<20; n > limit {
		t.Errorf("allocated %d bytes, more than %d: the files were held in memory", n, limit)
	}
	if len(it.Files) != 4 || it.Files[2].Size != int64(len(text)) {
		t.Fatalf("files %+v", it.Files)
	}
	for i := range 4 {
		b, err := os.ReadFile(filepath.Join(s.Dir(it.ID), FilesDir, fmt.Sprintf("phu-luc-%d.txt", i)))
		if err != nil || !bytes.Equal(b, text) {
			t.Fatalf("file %d on disk: %d bytes, %v", i, len(b), err)
		}
	}
}
