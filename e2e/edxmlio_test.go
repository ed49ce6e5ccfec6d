package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
)

// TestEdxmlImportExport: an archive of .edxml packets migrates into the
// city through the sending unit's agent, through real NATS, hub and S3:
// each packet once, however often the import runs and even when its state
// lost the last answer (the agent has it under its idempotency key);
// packets that are not the unit's documents are refused and listed. Then
// the hub's documents are exported as packets, resumably, the same packets
// the recipient's agent gives its document system.
func TestEdxmlImportExport(t *testing.T) {
	work := t.TempDir()
	h := startSmallHub(t, filepath.Join(work, "edx-data"), nil)
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB).start()
	token := filepath.Join(a.dir, "api.token")

	arch := filepath.Join(work, "archive", "2026")
	os.MkdirAll(arch, 0o755)
	put := func(name string, p []byte) {
		if err := os.WriteFile(filepath.Join(arch, name), p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	subject := func(i int) string { return fmt.Sprintf("V/v lưu trữ hồ sơ năm 2025, phần %d", i) }
	for i := 1; i <= 3; i++ {
		put(fmt.Sprintf("cv-%02d.edxml", i), documentPacket(uA, uB, fmt.Sprint(500+i), subject(i), 0, ""))
	}
	put("cv-90-tu-don-vi-khac.edxml", documentPacket(uB, uA, "990", "Văn bản của đơn vị khác", 0, ""))
	put("tt-91.edxml", statusPacket(uA, uB, "000.02.00.H29,2025/01/02,1/X", "03", "Đã nhận"))
	os.WriteFile(filepath.Join(arch, "ghi-chu.txt"), []byte("not a packet"), 0o644)

	state := filepath.Join(work, "import.state")
	imp := func(want int) string {
		return edx(t, work, want, "edxml", "import", "--agent", a.url, "--token-file", token, "--state", state, filepath.Join(work, "archive"))
	}
	out := imp(1)
	if !strings.Contains(out, "5 packets: 3 imported, 0 imported before (skipped), 0 the agent already had, 2 refused") ||
		!strings.Contains(out, "cv-90-tu-don-vi-khac.edxml: 422") || !strings.Contains(out, "tt-91.edxml: 400") {
		t.Fatalf("first import:\n%s", out)
	}

	// The import was killed after the agent took cv-03 and before the state
	// recorded it; the archive has grown by two packets.
	b1, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(strings.TrimSpace(string(b1)), "\n") {
		if !strings.Contains(line, "cv-03") {
			kept = append(kept, line)
		}
	}
	os.WriteFile(state, []byte(strings.Join(kept, "\n")+"\n{\"key\":\"cut sh"), 0o644) // and its last line cut short
	for i := 4; i <= 5; i++ {
		put(fmt.Sprintf("cv-%02d.edxml", i), documentPacket(uA, uB, fmt.Sprint(500+i), subject(i), 0, ""))
	}
	out = imp(1)
	if !strings.Contains(out, "7 packets: 2 imported, 2 imported before (skipped), 1 the agent already had, 2 refused") {
		t.Fatalf("resumed import:\n%s", out)
	}
	if out = imp(1); !strings.Contains(out, "7 packets: 0 imported, 5 imported before (skipped), 0 the agent already had, 2 refused") {
		t.Fatalf("third import:\n%s", out)
	}

	// B receives each document once, from A, each keeping its packet.
	eventually(t, "B to receive five documents", 60*time.Second, func() bool { return len(b.inbox()) >= 5 }, a, b)
	got := map[string]document.ID{}
	for _, it := range b.inbox() {
		if it.From != uA {
			t.Fatalf("B received %+v", it)
		}
		if _, dup := got[it.Subject]; dup {
			t.Fatalf("B received %q twice", it.Subject)
		}
		got[it.Subject] = it.ID
		original := false
		for _, f := range it.Files {
			original = original || f.Name == edxml.OriginalFile
		}
		if !original {
			t.Fatalf("%s keeps no original packet: %+v", it.ID, it.Files)
		}
	}
	for i := 1; i <= 5; i++ {
		if got[subject(i)] == "" {
			t.Fatalf("B lacks %q: %v", subject(i), got)
		}
	}
	if n := len(b.inbox()); n != 5 {
		t.Fatalf("B has %d documents, want 5", n)
	}

	// Export A's documents from the hub's archive; then again after losing
	// one packet and its record.
	dir := filepath.Join(work, "export")
	eventually(t, "the hub to index five documents from A", 60*time.Second, func() bool {
		return strings.Contains(edx(t, work, 0, "search", "--data", h.data, "--from", string(uA)), "5 of 5 documents")
	}, a, b)
	exp := func() string {
		return edx(t, work, 0, "edxml", "export", "--data", h.data, "--from", string(uA), "-o", dir)
	}
	if out = exp(); !strings.Contains(out, "5 documents: 5 written to "+dir+", 0 written before (skipped), 0 could not be written") {
		t.Fatalf("export:\n%s", out)
	}
	for s, id := range got {
		p, err := os.ReadFile(filepath.Join(dir, string(id)+".edxml"))
		if err != nil {
			t.Fatal(err)
		}
		if element(string(p), "Subject") != s || element(string(p), "OrganId") != string(uA) {
			t.Fatalf("%s.edxml:\n%s", id, p)
		}
		// The packet B's document system reads, byte for byte.
		if code, bp := b.do("GET", "/v1/inbox/"+string(id)+"/edxml", "", nil); code != 200 || !bytes.Equal(bp, p) {
			t.Fatalf("%s: the exported packet differs from B's (%d)", id, code)
		}
	}
	lost := got[subject(2)]
	os.Remove(filepath.Join(dir, string(lost)+".edxml"))
	sb, _ := os.ReadFile(filepath.Join(dir, ".edx-export.state"))
	var rest []string
	for _, line := range strings.Split(strings.TrimSpace(string(sb)), "\n") {
		if !strings.Contains(line, string(lost)) {
			rest = append(rest, line)
		}
	}
	os.WriteFile(filepath.Join(dir, ".edx-export.state"), []byte(strings.Join(rest, "\n")+"\n"), 0o644)
	if out = exp(); !strings.Contains(out, "5 documents: 1 written to "+dir+", 4 written before (skipped), 0 could not be written") {
		t.Fatalf("resumed export:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, string(lost)+".edxml")); err != nil {
		t.Fatal(err)
	}
	if h := edx(t, work, 0, "edxml", "import", "-h"); !strings.Contains(h, "Idempotency-Key") || !strings.Contains(h, "state file") {
		t.Fatalf("import -h:\n%s", h)
	}
}
