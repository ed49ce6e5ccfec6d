package api_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/container/containertest"
	"github.com/edxhub/edx/pkg/document"
)

// memWatch samples the live heap while it runs and reads the process's
// peak resident set (VmHWM, reset at the start through
// /proc/self/clear_refs).
type memWatch struct {
	heap0, rss0 uint64
	peakHeap    atomic.Uint64
	stop        chan struct{}
	done        chan struct{}
}

func heapLive() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(t *testing.T, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

func watchMemory(t *testing.T) *memWatch {
	runtime.GC()
	// Writing 5 resets the peak resident set to the current one.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatal("resetting the peak RSS: ", err)
	}
	w := &memWatch{heap0: heapLive(), rss0: procStatus(t, "VmRSS"), stop: make(chan struct{}), done: make(chan struct{})}
	w.peakHeap.Store(w.heap0)
	go func() {
		defer close(w.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
				if h := heapLive(); h > w.peakHeap.Load() {
					w.peakHeap.Store(h)
				}
			}
		}
	}()
	return w
}

// growth stops the watch and returns the peak growth of the live heap and
// of the resident set.
func (w *memWatch) growth(t *testing.T) (heap, rss uint64) {
	close(w.stop)
	<-w.done
	if h := heapLive(); h > w.peakHeap.Load() {
		w.peakHeap.Store(h)
	}
	// The peak resident set may read below the start's resident set (the
	// kernel does not count pages the runtime returned as a new peak):
	// read it once, and count no growth then.
	hwm := procStatus(t, "VmHWM")
	return w.peakHeap.Load() - min(w.heap0, w.peakHeap.Load()), hwm - min(w.rss0, hwm)
}

func bombMeta(t *testing.T) []byte {
	d := document.Template(time.Now())
	d.From, d.To, d.Subject = unitA, []document.UnitID{unitB}, "Quyết định (bom nén)"
	m, err := d.Marshal()
	must(t, err)
	return m
}

// TestConcurrentHostileVerification: issue #9's flat zip bomb (990 entries
// of 1 MiB of zeros, 1.1 MB, signed by a registered unit) uploaded by
// auditors to /api/v1/verify, several at once: every answer says
// container.zip_bomb, and the hub's memory stays bounded (the peak growth
// of the live heap and of the resident set are logged).
func TestConcurrentHostileVerification(t *testing.T) {
	f := newFixture(t)
	const n = 4
	f.Records.MaxVerifications = n // every upload verifies: what bounds memory is the reader
	tok := f.user("kiem-toan", auth.RoleAuditor, "")
	bomb, err := containertest.FlatBomb(bombMeta(t), f.signers[unitA], 990, 1<<20)
	must(t, err)
	w := watchMemory(t)
	var wg sync.WaitGroup
	codes := make([]int, n)
	reports := make([]verification, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(t.Context(), "POST", f.srv.URL+"/api/v1/verify", bytes.NewReader(bomb))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", api.MediaContainer)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			codes[i] = resp.StatusCode
			json.NewDecoder(resp.Body).Decode(&reports[i])
		}()
	}
	wg.Wait()
	heap, rss := w.growth(t)
	t.Logf("%d concurrent verifications of a %d-byte flat bomb (990 MiB inflated): peak live heap growth %.1f MiB, peak RSS growth %.1f MiB",
		n, len(bomb), float64(heap)/(1<<20), float64(rss)/(1<<20))
	for i := range n {
		if c := reports[i].Container; codes[i] != 200 || reports[i].Valid || c == nil || !c.Reasons.Has("container.zip_bomb") {
			var got []string
			if c != nil {
				for _, r := range c.Reasons {
					got = append(got, string(r.Code))
				}
			}
			t.Errorf("upload %d: %d, valid %v, reasons %v, want container.zip_bomb", i, codes[i], reports[i].Valid, got)
		}
	}
	const bound = 64 << 20
	if heap > bound || rss > 2*bound {
		t.Errorf("memory grew by %d bytes of heap and %d of RSS, bounds %d and %d", heap, rss, bound, 2*bound)
	}
}

// TestVerifyBusy: with every verification slot taken, /api/v1/verify and
// the re-verification of an archived document answer 503 with
// Retry-After, without reading the upload; once a slot frees, they verify.
func TestVerifyBusy(t *testing.T) {
	f := newFixture(t)
	f.Records.MaxVerifications = 1
	tok := f.user("kiem-toan", auth.RoleAuditor, "")
	id := string(f.docs["qd-bc"])
	auditor := &auth.Identity{User: auth.User{Name: "kiem-toan", Role: auth.RoleAuditor}}
	holding, release := make(chan struct{}), make(chan struct{})
	go f.Records.VerifyUpload(auditor, func() ([]byte, []byte, string, error) {
		close(holding)
		<-release
		return nil, nil, "", api.ErrInvalid
	})
	<-holding
	resp, data := f.get(f.user("luu-tru", auth.RoleArchivist, ""), "/api/v1/documents/"+id+"/container")
	if resp.StatusCode != 200 {
		t.Fatalf("container: %d %s", resp.StatusCode, data)
	}
	for _, path := range []string{"/api/v1/verify", "/api/v1/documents/" + id + "/verify"} {
		resp, b := f.do(tok, "POST", path, api.MediaContainer, data)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "try again") {
			t.Errorf("%s while busy: %d, Retry-After %q: %s", path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	}
	close(release)
	// The slot frees when the holder returns.
	for i := 0; ; i++ {
		resp, b := f.do(tok, "POST", "/api/v1/verify", api.MediaContainer, data)
		if resp.StatusCode == 200 && strings.Contains(string(b), `"valid": true`) {
			break
		}
		if resp.StatusCode != http.StatusServiceUnavailable || i > 1000 {
			t.Fatalf("after release: %d %s", resp.StatusCode, b)
		}
		time.Sleep(time.Millisecond)
	}
}

// allocated returns the bytes f allocates in this process (the server and
// its client).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestFileDownloadStreams: one file of a document is served without
// inflating the others, and a large one in a stream: the allocation is
// about the container's compressed bytes, not its content.
func TestFileDownloadStreams(t *testing.T) {
	f := newFixture(t)
	tok := f.user("luu-tru", auth.RoleArchivist, "")
	line := []byte("Điều 2. Giao Sở Tài nguyên và Môi trường chủ trì, phối hợp các quận, huyện thực hiện.\n")
	text := bytes.Repeat(line, (8<<20)/len(line))
	for i := 0; i < len(text); i += 4096 {
		text[i] = byte('a' + i/4096%26)
	}
	files := []container.File{{Name: "van-ban.pdf", Data: []byte("%PDF-1.7\nvăn bản\n%%EOF\n")}}
	for i := range 4 {
		files = append(files, container.File{Name: fmt.Sprintf("phu-luc-%d.txt", i), Data: text})
	}
	id := string(f.accept(docSpec{Subject: "Kế hoạch có phụ lục lớn", Type: "KH", Number: "7", Signer: "Ngô Văn Giang",
		From: unitA, To: []document.UnitID{unitB}, Accepted: time.Now().Add(-time.Minute), Files: files}))
	_, raw := f.get(tok, "/api/v1/documents/"+id+"/container")
	t.Logf("container: %d bytes, %d MiB of content", len(raw), 4*len(text)>>20)
	get := func(name string) (int, int64, [32]byte) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", f.srv.URL+"/api/v1/documents/"+id+"/files/"+name, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		must(t, err)
		var sum [32]byte
		h.Sum(sum[:0])
		return resp.StatusCode, n, sum
	}
	for _, tc := range []struct {
		name string
		want []byte
	}{{"van-ban.pdf", files[0].Data}, {"phu-luc-2.txt", text}} {
		var code int
		var size int64
		var sum [32]byte
		n := allocated(func() { code, size, sum = get(tc.name) })
		t.Logf("%s (%d bytes): %.2f MiB allocated", tc.name, size, float64(n)/(1<<20))
		if code != 200 || size != int64(len(tc.want)) || sum != sha256.Sum256(tc.want) {
			t.Fatalf("%s: %d, %d bytes", tc.name, code, size)
		}
		if limit := uint64(2*len(raw)) + 4<<20; n > limit {
			t.Errorf("%s: %d bytes allocated to serve it, more than %d", tc.name, n, limit)
		}
	}
}
