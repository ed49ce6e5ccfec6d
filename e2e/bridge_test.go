package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

const (
	uGW  = document.UnitID("000.99.00.H29") // the city's gateway to the national axis
	uG22 = document.UnitID("000.00.00.G22") // a ministry, outside the city

	gwSystem, gwSecret   = "vxp.hcm.edx", "Zk3v9Q2m7WcR1xT8bN4pL6sY0hJ5dF2a"
	bnvSystem, bnvSecret = "vxp.bnv", "Qw8eR5tY2uI9oP3aS6dF1gH4jK7lZ0xC"
)

// startSmallHub runs edx-hub with the configuration config and streams
// sized for a test machine shared with others (the defaults reserve about
// 12 GiB).
func startSmallHub(t *testing.T, data string, config []byte) *hubProc {
	t.Helper()
	os.MkdirAll(data, 0o755)
	p := filepath.Join(filepath.Dir(data), "hub.yaml")
	os.WriteFile(p, append(append([]byte{}, config...), `
nats:
  streams:
    max_msg_size: 5242880
    submit_max_bytes: 134217728
    submit_unit_pending: 8
    deliver_max_bytes: 134217728
    notice_max_bytes: 33554432
    status_max_bytes: 33554432
    status_unit_pending: 100
    upload_max_bytes: 67108864
    upload_unit_quota: 16777216
    stage_max_bytes: 134217728
  buckets:
    max_bytes: 16777216
`...), 0o644)
	return startHubNATS(t, data, "127.0.0.1:-1", "--config", p)
}

// kill stops the agent dead (SIGKILL): no shutdown, nothing finished.
func (a *agentProc) kill() {
	if a.cmd == nil || a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	a.log.Close()
}

// gatewayAgent runs the gateway unit's agent from configs/agent-gateway.yaml,
// copied beside the files edx unit add wrote, with this test's addresses
// and short intervals.
func gatewayAgent(t *testing.T, work, natsURL, upstreamURL string) *agentProc {
	t.Helper()
	b, err := os.ReadFile("../configs/agent-gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "units", string(uGW))
	port := freePort(t)
	cfg := string(b)
	for _, r := range [][2]string{
		{"https://vdxp.example.gov.vn/api", upstreamURL},
		{"127.0.0.1:8099", fmt.Sprintf("127.0.0.1:%d", port)},
		{"nats://127.0.0.1:4222", natsURL},
		{"poll: 30s", "poll: 200ms"},
		{"timeout: 10m", "timeout: 10s"},
		{"max_backoff: 5m", "max_backoff: 500ms"},
		{"level: info", "level: debug"},
	} {
		if !strings.Contains(cfg, r[0]) {
			t.Fatalf("configs/agent-gateway.yaml has no %q", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(cfg), 0o644)
	os.WriteFile(filepath.Join(dir, "vdxp.secret"), []byte(gwSecret+"\n"), 0o600)
	tok, err := os.ReadFile(filepath.Join(dir, "api.token"))
	if err != nil {
		t.Fatal(err)
	}
	return &agentProc{t: t, unit: uGW, dir: dir, url: fmt.Sprintf("http://127.0.0.1:%d", port), token: strings.TrimSpace(string(tok))}
}

// awaitIdle waits until the gateway has nothing left to do: nothing
// queued either way, everything it took from the upstream acknowledged.
func (a *agentProc) awaitIdle(up *upstream) {
	a.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		why := ""
		d := a.readyDetail()
		for _, k := range []string{"bridge_carried_queued", "bridge_statuses_up_queued", "bridge_statuses_down_queued", "bridge_fetched_unacked"} {
			if d[k] != "0" {
				why += fmt.Sprintf(" %s=%q", k, d[k])
			}
		}
		if n := up.pending(gwSystem); n != 0 {
			why += fmt.Sprintf(" %d items not acknowledged at the upstream", n)
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("the gateway is not idle:%s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sendTo sends a packet through the upstream as a document system does,
// naming its recipients (to).
func (d *dms) sendTo(kind string, from document.UnitID, to []document.UnitID, packet []byte) string {
	d.t.Helper()
	tj, _ := json.Marshal(to)
	sum := sha256.Sum256(packet)
	code, a := d.call("sendEdoc", "application/octet-stream", append(append([]byte{}, packet...), "\r\n"...),
		"from", string(from), "to", string(tj), "servicetype", "eDoc", "messagetype", kind, "hash-file", hex.EncodeToString(sum[:]))
	if code != 200 || a.Status != "OK" || a.DocID == "" {
		d.t.Fatalf("sendEdoc (%s): %d %+v", kind, code, a)
	}
	return a.DocID
}

// TestBridge: the city's gateway unit bridges the hub to an upstream axis
// simulated here from the protocol's description, through real NATS, hub
// (configs/hub-gateway.yaml) and S3, and the gateway's agent
// (configs/agent-gateway.yaml). A's documents for a ministry go up, the
// ministry's documents for A come in, statuses both ways (03, and a 13
// answered 15), while the upstream loses answers mid-transfer (sendEdoc,
// getEdoc, updateStatus), goes down, and the gateway is killed and started
// again. Every document and every status arrives once, in both directions.
func TestBridge(t *testing.T) {
	work := t.TempDir()
	up := newUpstream(t)
	up.addSystem(gwSystem, gwSecret, func(c string) bool { return strings.HasSuffix(c, ".H29") })
	up.addSystem(bnvSystem, bnvSecret, func(c string) bool { return c == string(uG22) })
	bnv := &dms{t: t, url: up.srv.URL, system: bnvSystem, secret: []byte(bnvSecret)}

	example, err := os.ReadFile("../configs/hub-gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := startSmallHub(t, filepath.Join(work, "edx-data"), example)
	for _, u := range []document.UnitID{uA, uGW} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	aDir := filepath.Join(work, "agent-"+string(uA))
	os.MkdirAll(aDir, 0o750)
	os.WriteFile(filepath.Join(aDir, "axis.secret"), []byte("A7TKG/r2gOKTEpe1MhWx6zw8O4JfzN0KkCRS6HZY81Ve\n"), 0o600)
	a := newAgent(t, work, h.info.NATSURL, uA, fmt.Sprintf(`axis:
  enabled: true
  systems:
    - id: vxp.stp.01
      secret_file: %s
`, filepath.Join(aDir, "axis.secret"))).start()
	dmsA := &dms{t: t, url: a.url + "/axis", system: "vxp.stp.01", secret: []byte("A7TKG/r2gOKTEpe1MhWx6zw8O4JfzN0KkCRS6HZY81Ve")}
	gw := gatewayAgent(t, work, h.info.NATSURL, up.srv.URL).start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", gw.logText())
		}
	})
	everyone := []*agentProc{a, gw}

	// Up: three documents of A for the ministry. The upstream takes the
	// first and loses its answer; it goes down while the gateway is killed
	// and started again.
	up.cutNext("sendEdoc", 1)
	var outIDs, outX []string
	for i := range 3 {
		p := documentPacket(uA, uG22, fmt.Sprint(300+i), fmt.Sprintf("V/v báo cáo số liệu quý %d", i+1), 0, "")
		outX = append(outX, element(string(p), "DocumentId"))
		outIDs = append(outIDs, dmsA.send(uA, p))
	}
	eventually(t, "the upstream to take the first document", 60*time.Second, func() bool { return len(up.sentBy(gwSystem, "edoc")) >= 1 }, everyone...)
	gw.kill()
	up.setDown(true)
	gw.start()
	eventually(t, "the gateway to fail against the upstream", 30*time.Second, func() bool {
		return strings.Contains(gw.logText(), "will retry")
	}, everyone...)
	up.setDown(false)
	eventually(t, "the ministry to list three documents", 90*time.Second, func() bool { return len(bnv.list("edoc")) >= 3 }, everyone...)
	gw.awaitIdle(up)
	got := bnv.list("edoc")
	if sent := up.sentBy(gwSystem, "edoc"); len(got) != 3 || len(sent) != 3 {
		t.Fatalf("the ministry has %d documents, the gateway sent %d, want 3 each", len(got), len(sent))
	}
	subjects := map[string]int{}
	for _, it := range got {
		p := bnv.fetch(it.DocID)
		if it.From != string(uA) || element(p, "OrganId") != string(uA) {
			t.Fatalf("listed %+v, packet from %s", it, element(p, "OrganId"))
		}
		subjects[element(p, "Subject")]++
		bnv.ack(it.DocID, "done")
	}
	for i := range 3 {
		if s := fmt.Sprintf("V/v báo cáo số liệu quý %d", i+1); subjects[s] != 1 {
			t.Fatalf("subjects %v", subjects)
		}
	}
	if n := len(bnv.list("status")); n != 0 {
		t.Fatalf("the ministry has %d statuses, want none yet", n)
	}
	if !strings.Contains(gw.logText(), "document found sent at the upstream after a lost answer") {
		t.Errorf("the gateway never reconciled the lost answer with getSentEdocList")
	}

	// The ministry answers 03 on the first: the gateway's fetch of it is
	// cut mid-transfer and its acknowledgement lost; A's document system
	// reads it once, as the ministry's.
	up.cutNext("getEdoc", 1)
	up.cutNext("updateStatus", 1)
	bnv.sendTo("status", uG22, []document.UnitID{uA}, statusPacket(uG22, uA, outX[0], "03", "Bộ Nội vụ đã tiếp nhận"))
	st := dmsA.await("the ministry's 03 at A", "status", func(l listed) bool { return l.From == string(uG22) && strings.HasPrefix(l.StatusDesc, "03") }, everyone...)
	if sp := dmsA.fetch(st.DocID); element(sp, "StatusCode") != "03" || element(sp, "DocumentId") != outX[0] || element(sp, "Description") != "Bộ Nội vụ đã tiếp nhận" {
		t.Fatalf("A's status packet:\n%s", sp)
	}
	dmsA.ack(st.DocID, "done")

	// A takes the second back (13); the upstream takes it and loses its
	// answer, then refuses the gateway's second try as a duplicate; the
	// ministry gets it once and answers 15.
	up.cutNext("sendEdoc", 1)
	dmsA.sendStatus(uA, statusPacket(uA, uA, outX[1], "13", "Lấy lại để sửa số liệu"))
	var take listed
	eventually(t, "the ministry to list A's 13", 60*time.Second, func() bool {
		for _, l := range bnv.list("status") {
			if l.From == string(uA) {
				take = l
			}
		}
		return take.DocID != ""
	}, everyone...)
	if sp := bnv.fetch(take.DocID); element(sp, "StatusCode") != "13" || element(sp, "DocumentId") != outX[1] {
		t.Fatalf("the ministry's 13:\n%s", sp)
	}
	bnv.ack(take.DocID, "done")
	bnv.sendTo("status", uG22, []document.UnitID{uA}, statusPacket(uG22, uA, outX[1], "15", "Đồng ý cho lấy lại"))
	st = dmsA.await("the ministry's 15 at A", "status", func(l listed) bool { return l.From == string(uG22) && strings.HasPrefix(l.StatusDesc, "15") }, everyone...)
	dmsA.ack(st.DocID, "done")

	// Down: two documents of the ministry for A. The gateway is killed once
	// it has taken the first; its acknowledgement is lost once.
	up.cutNext("updateStatus", 1)
	fetches := up.callCount("getEdoc")
	var inX []string
	inUp := map[string]string{} // subject → the upstream's id
	for i := range 2 {
		p := documentPacket(uG22, uA, fmt.Sprint(40+i), fmt.Sprintf("V/v hướng dẫn nghiệp vụ số %d", i+1), 0, "")
		p = bytes.ReplaceAll(p, []byte("Sở Tư pháp"), []byte("Bộ Nội vụ"))
		inX = append(inX, element(string(p), "DocumentId"))
		inUp[fmt.Sprintf("V/v hướng dẫn nghiệp vụ số %d", i+1)] = bnv.sendTo("edoc", uG22, []document.UnitID{uA}, p)
	}
	eventually(t, "the gateway to take a document", 60*time.Second, func() bool { return up.callCount("getEdoc") > fetches }, everyone...)
	gw.kill()
	gw.start()
	eventually(t, "A's document system to list two documents", 90*time.Second, func() bool { return len(dmsA.list("edoc")) >= 2 }, everyone...)
	gw.awaitIdle(up)
	items := dmsA.list("edoc")
	if len(items) != 2 {
		t.Fatalf("A's document system lists %d documents, want 2", len(items))
	}
	var inIDs []string
	for _, it := range items {
		p := dmsA.fetch(it.DocID)
		subject := element(p, "Subject")
		if it.From != string(uGW) || element(p, "OrganId") != string(uG22) || element(p, "OrganName") != "Bộ Nội vụ" {
			t.Fatalf("listed %+v, packet from %s %s", it, element(p, "OrganId"), element(p, "OrganName"))
		}
		code, body := a.do("GET", "/v1/inbox/"+it.DocID, "", nil)
		var item struct {
			Document document.Document `json:"document"`
			Files    []struct{ Name string }
		}
		json.Unmarshal(body, &item)
		d := item.Document
		if code != 200 || d.From != uGW || d.Upstream == nil || d.Upstream.From != uG22 || d.Upstream.Axis != "vdxp" || d.Upstream.DocID == "" ||
			d.Upstream.DocID != inUp[subject]+".1" {
			t.Fatalf("A's inbox %s: %d %s", it.DocID, code, body)
		}
		original := false
		for _, f := range item.Files {
			original = original || f.Name == "original.edxml"
		}
		if !original {
			t.Fatalf("A's inbox %s keeps no original packet: %s", it.DocID, body)
		}
		delete(inUp, subject)
		inIDs = append(inIDs, it.DocID)
		dmsA.ack(it.DocID, "done")
	}
	if len(inUp) != 0 {
		t.Fatalf("not received: %v", inUp)
	}

	// A answers 03 on one; the ministry gets it once, from A (with the 01
	// A's agent sent on each when it arrived). The ministry takes the other
	// back; A's document system reads the 13 once.
	first := dmsA.fetch(inIDs[0])
	dmsA.sendStatus(uA, statusPacket(uA, uG22, element(first, "DocumentId"), "03", "Vào sổ văn bản đến số 77"))
	fromA := map[string]int{} // code and document
	eventually(t, "the ministry to list A's 01, 01 and 03", 60*time.Second, func() bool {
		for _, l := range bnv.list("status") {
			sp := bnv.fetch(l.DocID)
			if l.From != string(uA) || element(sp, "OrganId") != string(uA) {
				t.Fatalf("the ministry's status %+v:\n%s", l, sp)
			}
			fromA[element(sp, "StatusCode")+" "+element(sp, "DocumentId")]++
			bnv.ack(l.DocID, "done")
		}
		return len(fromA) == 3
	}, everyone...)
	want := map[string]int{"01 " + inX[0]: 1, "01 " + inX[1]: 1, "03 " + element(first, "DocumentId"): 1}
	if fmt.Sprint(fromA) != fmt.Sprint(want) {
		t.Fatalf("the ministry's statuses from A: %v, want %v", fromA, want)
	}
	second := dmsA.fetch(inIDs[1])
	bnv.sendTo("status", uG22, []document.UnitID{uA}, statusPacket(uG22, uG22, element(second, "DocumentId"), "13", "Thu hồi để ban hành lại"))
	back := dmsA.await("the ministry's 13 at A", "status", func(l listed) bool { return strings.HasPrefix(l.StatusDesc, "13") }, everyone...)
	if sp := dmsA.fetch(back.DocID); element(sp, "StatusCode") != "13" || element(sp, "DocumentId") != element(second, "DocumentId") {
		t.Fatalf("A's 13:\n%s", sp)
	}
	dmsA.ack(back.DocID, "done")

	// Once everything settled: each exactly once, both ways.
	gw.awaitIdle(up)
	if n := len(up.sentBy(gwSystem, "edoc")); n != 3 {
		t.Errorf("the gateway sent %d documents up, want 3", n)
	}
	var codes []string
	for _, m := range up.sentBy(gwSystem, "status") {
		codes = append(codes, m.subject)
	}
	slices.Sort(codes)
	if strings.Join(codes, " ") != "01 01 03 13" {
		t.Errorf("the gateway sent statuses %v up, want 01 01 03 13", codes)
	}
	for _, l := range append(dmsA.list("edoc"), dmsA.list("status")...) {
		t.Errorf("A's document system has more: %+v", l)
	}
	for _, l := range append(bnv.list("edoc"), bnv.list("status")...) {
		t.Errorf("the ministry has more: %+v", l)
	}
	if !strings.Contains(gw.logText(), "taken as the duplicate the upstream refuses") {
		t.Errorf("the gateway did not send the 13 again after its lost answer")
	}
	rec := a.document(document.ID(outIDs[0]))
	if n := len(statuses(rec, uG22, document.StatusAccepted)); n != 1 {
		t.Errorf("A's first document has %d 03 from the ministry, want 1: %+v", n, rec.History)
	}
}
