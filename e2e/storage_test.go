package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/document"
)

// smallDisk mounts a tmpfs of the given size (e.g. "32m") on dir, a disk
// the test can fill. It needs root (CAP_SYS_ADMIN), and fails without it.
func smallDisk(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("a full disk is simulated with a small tmpfs, which needs root: mount: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

// fill fills the file system of dir and returns what frees it again.
func fill(t *testing.T, dir string) (free func()) {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-")
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	f.Close()
	var once sync.Once
	return func() {
		once.Do(func() {
			if err := os.Remove(f.Name()); err != nil {
				t.Error(err)
			}
		})
	}
}

// readyz returns the hub's readiness and what it says of each dependency.
func readyz(h *hubProc) (int, map[string]string) {
	resp, err := http.Get(h.info.HTTP + "/readyz")
	if err != nil {
		return 0, map[string]string{"http": err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]string
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// TestHubDiskFull: each disk the hub writes to (JetStream's, the archive's,
// the index's) fills up while documents are sent. Meanwhile /readyz says
// 503 and names the dependency, nothing is rejected, nothing is lost; when
// space returns, the hub recovers by itself, without a restart, and every
// document is accepted exactly once and delivered once. (With the index's
// disk full documents are accepted meanwhile: the index is a projection of
// the archive and the decision events, and catches up.)
//
// Before: a JetStream stream that failed a write kept failing every write
// after space returned (a "critical write error" nats-server keeps until it
// restarts), so no submission got through until the hub was restarted, and
// /readyz said ok throughout (it only asked for account information).
func TestHubDiskFull(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	disks := map[string]string{
		"nats":    filepath.Join(data, "nats"),
		"archive": filepath.Join(data, "s3"),
		"index":   filepath.Join(data, "index"),
	}
	smallDisk(t, disks["nats"], "64m")
	smallDisk(t, disks["archive"], "48m")
	smallDisk(t, disks["index"], "16m")
	// JetStream reserves every stream's max_bytes, and its store is 75% of
	// the free disk: streams and buckets sized for this 64 MiB disk, as an
	// operator sizes them for theirs; the defaults would not let the hub
	// start.
	cfg := filepath.Join(work, "hub.yaml")
	if err := os.WriteFile(cfg, []byte(`nats:
  streams:
    max_msg_size: 5242880
    submit_max_bytes: 10485760
    submit_unit_pending: 1
    deliver_max_bytes: 5242880
    notice_max_bytes: 5242880
    status_max_bytes: 2097152
    status_unit_pending: 8
    upload_max_bytes: 1048576
    upload_unit_quota: 524288
    stage_max_bytes: 1048576
    events_max_bytes: 5242880
  buckets:
    max_bytes: 1048576
`), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHubNATS(t, data, "127.0.0.1:-1", "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(data, "hub.log"))
			lines := strings.Split(string(b), "\n")
			t.Logf("hub log (end):\n%s", strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	})
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB).start()
	if code, m := readyz(h); code != 200 {
		t.Fatalf("readyz before: %d %v", code, m)
	}
	var all []document.ID
	for _, dep := range []string{"archive", "index", "nats"} {
		t.Run(dep, func(t *testing.T) {
			free := fill(t, disks[dep])
			t.Cleanup(free)
			var ids []document.ID
			for range 3 {
				code, id, body := a.postSize(64<<10, uB)
				if code != 202 {
					t.Fatalf("post: %d %s", code, body)
				}
				ids = append(ids, id)
			}
			eventually(t, "readyz 503 naming "+dep, 60*time.Second, func() bool {
				code, m := readyz(h)
				return code == http.StatusServiceUnavailable && m[dep] != "ok" && m[dep] != ""
			})
			_, m := readyz(h)
			t.Logf("readyz with %s's disk full: %v", dep, m)
			time.Sleep(3 * time.Second) // several attempts
			for _, id := range ids {
				// The index is each hub's projection of the archive and
				// the decision events: a full index disk holds up no
				// decision (the hub is not ready; its index applies the
				// events once the disk has room).
				if st := a.document(id).State; st == spool.Rejected || st == spool.Accepted && dep != "index" {
					t.Fatalf("%s %s with %s's disk full", id, st, dep)
				}
			}
			free()
			eventually(t, "readyz 200 after "+dep+"'s disk has room", 60*time.Second, func() bool {
				code, _ := readyz(h)
				return code == 200
			})
			for _, id := range ids {
				eventually(t, "acceptance of "+string(id), 90*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)
			}
			all = append(all, ids...)
		})
	}
	eventually(t, "B's inbox", 60*time.Second, func() bool { return len(b.inbox()) == len(all) }, b)
	seen := map[document.ID]int{}
	for _, it := range b.inbox() {
		seen[it.ID]++
	}
	for _, id := range all {
		if seen[id] != 1 {
			t.Errorf("%s delivered %d times", id, seen[id])
		}
	}
	body, err := apiGet(h, "/api/v1/documents?from="+string(uA)+"&limit=100")
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Total int `json:"total"`
	}
	json.Unmarshal(body, &page)
	if page.Total != len(all) {
		t.Errorf("the hub's index holds %d documents from A, want %d", page.Total, len(all))
	}
	if log, _ := os.ReadFile(filepath.Join(data, "hub.log")); strings.Contains(string(log), `msg=rejected`) {
		t.Errorf("the hub rejected something:\n%s", log)
	}
}
