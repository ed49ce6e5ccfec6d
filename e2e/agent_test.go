package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
)

// agentProc is a running edx-agent.
type agentProc struct {
	t     *testing.T
	unit  document.UnitID
	dir   string // its configuration and data
	url   string
	token string
	cmd   *exec.Cmd
	log   *os.File
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startHubOn runs edx-hub with its NATS on a fixed port, so that agents
// find it again after a restart.
func startHubOn(t *testing.T, data string, natsPort int) *hubProc {
	t.Helper()
	return startHubNATS(t, data, fmt.Sprintf("127.0.0.1:%d", natsPort))
}

// newAgent writes an agent's configuration from the files edx unit add
// left in work/units/<unit>; extra is YAML appended to it.
func newAgent(t *testing.T, work, natsURL string, unit document.UnitID, extra ...string) *agentProc {
	t.Helper()
	ud := filepath.Join(work, "units", string(unit))
	a := &agentProc{t: t, unit: unit, dir: filepath.Join(work, "agent-"+string(unit)), token: "token-" + strings.ReplaceAll(string(unit), ".", "-")}
	os.MkdirAll(a.dir, 0o750)
	os.WriteFile(filepath.Join(a.dir, "api.token"), []byte(a.token+"\n"), 0o600)
	port := freePort(t)
	a.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`unit: %s
data: %s
api:
  listen: 127.0.0.1:%d
  token_file: %s
signing:
  key_file: %s
  cert_file: %s
trust:
  roots: %s
nats:
  url: %s
  creds_file: %s
send:
  max_backoff: 1s
folders:
  enabled: true
  interval: 200ms
log:
  level: debug
witness:
  key_file: %s
  log_key_file: %s
`, unit, filepath.Join(a.dir, "data"), port, filepath.Join(a.dir, "api.token"), filepath.Join(ud, "key.pem"), filepath.Join(ud, "cert.pem"),
		filepath.Join(ud, "roots.pem"), natsURL, filepath.Join(ud, "nats.creds"), filepath.Join(ud, "witness.key"), filepath.Join(ud, "log.vkey")) +
		strings.Join(extra, "\n")
	os.WriteFile(filepath.Join(a.dir, "agent.yaml"), []byte(cfg), 0o644)
	out, err := exec.Command(filepath.Join(bin, "edx-agent"), "-check", "-config", filepath.Join(a.dir, "agent.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("edx-agent -check: %v\n%s", err, out)
	}
	return a
}

func (a *agentProc) start() *agentProc {
	t := a.t
	t.Helper()
	var err error
	if a.log, err = os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(filepath.Join(bin, "edx-agent"), "-config", filepath.Join(a.dir, "agent.yaml"))
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(a.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edx-agent %s did not become ready:\n%s", a.unit, a.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *agentProc) logText() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	return string(b)
}

// stop shuts the agent down gracefully (SIGTERM).
func (a *agentProc) stop() {
	if a.cmd == nil || a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-done
		a.t.Errorf("edx-agent %s did not stop within 30s", a.unit)
	}
	a.log.Close()
}

func (a *agentProc) do(method, path, ctype string, body []byte) (int, []byte) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.url+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+a.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// post sends a document from the agent's unit with the API; it returns the
// status code and the id.
func (a *agentProc) post(to ...document.UnitID) (int, document.ID, []byte) {
	a.t.Helper()
	return a.postSize(100, to...)
}

// postSize sends a document with a payload of about size bytes.
func (a *agentProc) postSize(size int, to ...document.UnitID) (int, document.ID, []byte) {
	a.t.Helper()
	d := document.Template(time.Now())
	d.ID, d.From, d.To = "", "", to
	meta, _ := json.Marshal(d)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	w, _ := mw.CreateFormField("metadata")
	w.Write(meta)
	fw, _ := mw.CreateFormFile("file", "Quyết định số 1234.pdf")
	fw.Write([]byte("%PDF-1.7 quyết định " + time.Now().String()))
	if size > 100 {
		junk := make([]byte, size)
		rand.Read(junk) // incompressible: the container stays above the inline limit
		fw.Write(junk)
	}
	mw.Close()
	code, b := a.do("POST", "/v1/documents", mw.FormDataContentType(), buf.Bytes())
	var r struct{ ID document.ID }
	json.Unmarshal(b, &r)
	return code, r.ID, b
}

func (a *agentProc) document(id document.ID) *spool.Record {
	a.t.Helper()
	code, b := a.do("GET", "/v1/documents/"+string(id), "", nil)
	if code != 200 {
		a.t.Fatalf("GET /v1/documents/%s: %d %s", id, code, b)
	}
	var r spool.Record
	json.Unmarshal(b, &r)
	return &r
}

func (a *agentProc) inbox() []inbox.Item {
	a.t.Helper()
	var all []inbox.Item
	since := "0"
	for {
		code, b := a.do("GET", "/v1/inbox?limit=2&since="+since, "", nil)
		if code != 200 {
			a.t.Fatalf("GET /v1/inbox: %d %s", code, b)
		}
		var page struct {
			Items      []inbox.Item `json:"items"`
			NextCursor string       `json:"next_cursor"`
		}
		json.Unmarshal(b, &page)
		if len(page.Items) == 0 {
			return all
		}
		all = append(all, page.Items...)
		since = page.NextCursor
	}
}

// eventually retries cond until it holds or the time is up.
func eventually(t *testing.T, what string, d time.Duration, cond func() bool, dump ...*agentProc) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			for _, a := range dump {
				t.Logf("%s log:\n%s", a.unit, a.logText())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const (
	uA = document.UnitID("000.01.00.H29")
	uB = document.UnitID("000.02.00.H29")
	uC = document.UnitID("000.03.00.H29")
)

func hasStatus(r *spool.Record, unit document.UnitID, code document.StatusCode) bool {
	for _, s := range r.History {
		if s.Unit == unit && s.Code == code {
			return true
		}
	}
	return false
}

// TestAgentsExchange: three agents on a real hub. A sends to B and C over the
// API and through its outbox folder; both receive the documents, verified,
// in their inbox (API and folder); B's statuses reach A; a document the hub
// rejects shows its reason codes and lands in A's failed/ folder.
func TestAgentsExchange(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	for _, u := range []document.UnitID{uA, uB, uC} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB).start()
	c := newAgent(t, work, h.info.NATSURL, uC).start()

	code, id, body := a.post(uB, uC)
	if code != 202 {
		t.Fatalf("post: %d %s", code, body)
	}
	eventually(t, "acceptance", 30*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)
	rec := a.document(id)
	if len(rec.Receipt) == 0 || rec.ArchiveKey == "" || len(rec.ReceiptProblems) > 0 {
		t.Fatalf("accepted record %+v", rec)
	}
	for _, r := range []*agentProc{b, c} {
		eventually(t, string(r.unit)+" inbox", 30*time.Second, func() bool { return len(r.inbox()) == 1 }, r)
		it := r.inbox()[0]
		if it.ID != id || it.From != uA || len(it.Files) != 1 {
			t.Fatalf("%s inbox item %+v", r.unit, it)
		}
		// The folder the document system reads.
		for _, f := range []string{"document.json", "container.asice", "receipt.p7s", "files/" + it.Files[0].Name} {
			if _, err := os.Stat(filepath.Join(r.dir, "data", "inbox", string(id), f)); err != nil {
				t.Errorf("%s inbox folder: %v", r.unit, err)
			}
		}
		code, got := r.do("GET", "/v1/inbox/"+string(id)+"/files/"+it.Files[0].Name, "", nil)
		if code != 200 || !bytes.HasPrefix(got, []byte("%PDF-1.7")) {
			t.Fatalf("file: %d", code)
		}
	}
	// 01 from both recipients, then B's 03 and 04.
	eventually(t, "status 01 from B and C at A", 30*time.Second, func() bool {
		r := a.document(id)
		return hasStatus(r, uB, "01") && hasStatus(r, uC, "01")
	}, a, b, c)
	for _, st := range []string{`{"code":"03","officer":{"department":"Văn thư","name":"Lê Văn C"}}`, `{"code":"04","description":"Giao phòng Kế hoạch"}`} {
		if code, body := b.do("POST", "/v1/inbox/"+string(id)+"/status", "application/json", []byte(st)); code != 202 {
			t.Fatalf("status: %d %s", code, body)
		}
	}
	eventually(t, "B's statuses at A", 30*time.Second, func() bool {
		r := a.document(id)
		return hasStatus(r, uB, "03") && hasStatus(r, uB, "04")
	}, a, b)
	rec = a.document(id)
	for _, d := range rec.Recipients {
		if d.DeliveredAt == nil {
			t.Errorf("recipient %s not marked delivered", d.Unit)
		}
	}

	// A container above the inline limit travels staged.
	code, big, body := a.postSize(protocol.InlineLimit+(1<<20), uB)
	if code != 202 {
		t.Fatalf("post large: %d %s", code, body)
	}
	eventually(t, "the large document in B's inbox", 60*time.Second, func() bool { return len(b.inbox()) == 2 }, a, b)
	if it := b.inbox()[1]; it.ID != big || it.Size <= protocol.InlineLimit {
		t.Fatalf("large document %+v", it)
	}

	// Through A's outbox folder, to C.
	dm := document.Template(time.Now())
	dm.From, dm.To = uA, []document.UnitID{uC}
	mb, _ := dm.Marshal()
	tmp := filepath.Join(a.dir, "data", "outbox", ".tmp-cv-99")
	os.MkdirAll(tmp, 0o750)
	os.WriteFile(filepath.Join(tmp, "document.json"), mb, 0o644)
	os.WriteFile(filepath.Join(tmp, "cong-van.pdf"), []byte("%PDF-1.7 công văn"), 0o644)
	os.Rename(tmp, filepath.Join(a.dir, "data", "outbox", "cv-99"))
	eventually(t, "the folder document in C's inbox", 30*time.Second, func() bool { return len(c.inbox()) == 2 }, a, c)
	eventually(t, "sent/cv-99.json accepted", 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(a.dir, "data", "sent", "cv-99.json"))
		return bytes.Contains(b, []byte(`"accepted"`))
	}, a)

	// Rejected by the hub: an unregistered recipient.
	code, bad, body := a.post("000.09.00.H29")
	if code != 202 {
		t.Fatalf("post: %d %s", code, body)
	}
	eventually(t, "rejection", 30*time.Second, func() bool { return a.document(bad).State == spool.Rejected }, a)
	if r := a.document(bad); !r.Reasons.Has("recipient.unknown") {
		t.Fatalf("reasons %v", r.Reasons)
	}
	dm = document.Template(time.Now())
	dm.From, dm.To = uA, []document.UnitID{"000.09.00.H29"}
	mb, _ = dm.Marshal()
	tmp = filepath.Join(a.dir, "data", "outbox", ".tmp-bad")
	os.MkdirAll(tmp, 0o750)
	os.WriteFile(filepath.Join(tmp, "document.json"), mb, 0o644)
	os.WriteFile(filepath.Join(tmp, "x.pdf"), []byte("%PDF"), 0o644)
	os.Rename(tmp, filepath.Join(a.dir, "data", "outbox", "bad"))
	eventually(t, "failed/bad with the hub's reasons", 30*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(a.dir, "data", "failed", "bad.reason.json"))
		return bytes.Contains(b, []byte("recipient.unknown"))
	}, a)

	// Bad input at the API: 4xx with field-level reasons, nothing spooled.
	if code, body := a.do("POST", "/v1/documents", "application/json", []byte(`{}`)); code != 415 {
		t.Fatalf("wrong content type: %d %s", code, body)
	}
	if code, _, body := a.post("H29"); code != 400 || !bytes.Contains(body, []byte(`"to[0]"`)) {
		t.Fatalf("malformed recipient: %d %s", code, body)
	}
}

// TestAgentOutages: NATS unreachable for a while (the hub stopped), the
// sending agent restarted with a non-empty spool, the recipient's agent
// offline: every document arrives once, in order of spooling at the hub.
func TestAgentOutages(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	port := freePort(t)
	h := startHubOn(t, data, port)
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB)

	// B is offline; the hub goes down; A keeps answering 202.
	h.stop()
	var ids []document.ID
	for range 5 {
		code, id, body := a.post(uB)
		if code != 202 {
			t.Fatalf("post while NATS is down: %d %s", code, body)
		}
		ids = append(ids, id)
	}
	// A restarts with a non-empty spool, still without NATS, takes more.
	a.stop()
	a.start()
	for range 3 {
		code, id, body := a.post(uB)
		if code != 202 {
			t.Fatalf("post after restart: %d %s", code, body)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		if s := a.document(id).State; s != spool.Spooled {
			t.Fatalf("%s is %s while NATS is down", id, s)
		}
	}
	// NATS returns: everything is accepted.
	h = startHubOn(t, data, port)
	for _, id := range ids {
		eventually(t, "acceptance of "+string(id), 60*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)
	}
	// B starts late: each document is handed over once.
	b.start()
	eventually(t, "B's inbox", 60*time.Second, func() bool { return len(b.inbox()) == len(ids) }, b)
	// Restarted, B is not handed anything twice.
	b.stop()
	b.start()
	time.Sleep(2 * time.Second)
	got := b.inbox()
	seen := map[document.ID]bool{}
	for _, it := range got {
		if seen[it.ID] {
			t.Fatalf("%s handed over twice", it.ID)
		}
		seen[it.ID] = true
	}
	if len(got) != len(ids) {
		t.Fatalf("B has %d documents, want %d", len(got), len(ids))
	}
	for _, id := range ids {
		if !seen[id] {
			t.Fatalf("%s never arrived", id)
		}
	}
	eventually(t, "01 from B on every document", 60*time.Second, func() bool {
		for _, id := range ids {
			if !hasStatus(a.document(id), uB, "01") {
				return false
			}
		}
		return true
	}, a, b)
}

// TestAgentsAcrossHubRestart: each unit reads its deliveries and notices
// with one consumer whose state the embedded NATS server keeps in memory.
// The hub restarts under running agents: the server forgets the consumers,
// the hub gives them back, and each agent, which keeps pulling, gets again
// what it had not acknowledged before the hub removed it, and then what
// comes next: every document handed over once, every decision applied.
func TestAgentsAcrossHubRestart(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	port := freePort(t)
	h := startHubOn(t, data, port)
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB).start()
	var ids []document.ID
	send := func(n int) {
		for range n {
			code, id, body := a.post(uB)
			if code != 202 {
				t.Fatalf("post: %d %s", code, body)
			}
			ids = append(ids, id)
		}
		for _, id := range ids {
			eventually(t, "acceptance of "+string(id), 60*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)
		}
		eventually(t, "B's inbox", 60*time.Second, func() bool { return len(b.inbox()) == len(ids) }, a, b)
	}
	send(3)
	h.stop()
	h = startHubOn(t, data, port)
	send(2)
	handedOverOnce(t, a, b, ids)
}

// handedOverOnce checks that b's inbox holds each of ids once, a moment
// after the last arrived (anything handed over twice shows by then), and
// waits for b's 01 on every one at a, the sender.
func handedOverOnce(t *testing.T, a, b *agentProc, ids []document.ID) {
	t.Helper()
	time.Sleep(2 * time.Second)
	seen := map[document.ID]bool{}
	for _, it := range b.inbox() {
		if seen[it.ID] {
			t.Fatalf("%s handed over twice", it.ID)
		}
		seen[it.ID] = true
	}
	if len(seen) != len(ids) {
		t.Fatalf("%s has %d documents, want %d", b.unit, len(seen), len(ids))
	}
	eventually(t, "01 from "+string(b.unit)+" on every document", 60*time.Second, func() bool {
		for _, id := range ids {
			if !hasStatus(a.document(id), b.unit, "01") {
				return false
			}
		}
		return true
	}, a, b)
}
