package e2e

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// hubConnect connects to the hub's NATS as the hub does, with credentials
// from the keys in its data directory: what the test needs to look into
// the streams and stores, or to play an older hub.
func hubConnect(t *testing.T, h *hubProc) *broker.HubConn {
	t.Helper()
	keys, err := broker.LoadOrCreateKeys(filepath.Join(h.data, "nats", "keys"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := keys.IssueHubCreds()
	if err != nil {
		t.Fatal(err)
	}
	stageCreds, err := keys.IssueHubStageCreds()
	if err != nil {
		t.Fatal(err)
	}
	hc, err := broker.ConnectHub(t.Context(), h.info.NATSURL, creds, stageCreds, nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.Close)
	return hc
}

// waiting counts the deliveries to a unit not yet acknowledged by its
// agent: in EDX_DELIVER past its consumer's acknowledgement floor (the hub
// removes acknowledged ones only every few seconds).
func waiting(t *testing.T, hc *broker.HubConn, u document.UnitID) int {
	t.Helper()
	s, err := hc.JS.Stream(t.Context(), protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	c, err := hc.JS.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(u)))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for seq := c.CachedInfo().AckFloor.Stream + 1; ; n++ {
		m, err := s.GetMsg(t.Context(), seq, jetstream.WithGetMsgSubject(protocol.DeliverSubject(string(u))))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		seq = m.Sequence + 1
	}
}

// quarantined lists an agent's quarantine folder.
func (a *agentProc) quarantined() []string {
	ents, _ := os.ReadDir(filepath.Join(a.dir, "data", "quarantine"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func statuses(r *spool.Record, unit document.UnitID, code document.StatusCode) []document.Status {
	var out []document.Status
	for _, s := range r.History {
		if s.Unit == unit && s.Code == code {
			out = append(out, s.Status)
		}
	}
	return out
}

// TestAgentStagedDeliveryOutlivesItsObject: B is offline while the staged
// object of its large delivery goes (as under the seven-day TTL staged
// deliveries had). Back online, B does not acknowledge a delivery whose
// container it cannot fetch: it waits, nothing quarantined; the hub's sweep
// stages the container again from its archive, under the name and key B's
// delivery carries, and B receives the document once.
//
// Before: B quarantined the delivery ("staged object not found") and
// acknowledged it; the document was lost to B while the hub said "routed".
func TestAgentStagedDeliveryOutlivesItsObject(t *testing.T) {
	work := t.TempDir()
	data := filepath.Join(work, "edx-data")
	port := freePort(t)
	h := startHubOn(t, data, port)
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB)
	code, id, body := a.postSize(protocol.InlineLimit+(1<<20), uB)
	if code != 202 {
		t.Fatalf("post: %d %s", code, body)
	}
	eventually(t, "acceptance", 60*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)

	hc := hubConnect(t, h)
	str, err := hc.JS.Stream(t.Context(), protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	m, err := str.GetLastMsgForSubject(t.Context(), protocol.DeliverSubject(string(uB)))
	if err != nil {
		t.Fatal(err)
	}
	name := m.Header.Get(protocol.HeaderStaged)
	obs, err := hc.Stage(t.Context())
	if err != nil || name == "" {
		t.Fatalf("staged %q: %v", name, err)
	}
	if err := obs.Delete(t.Context(), name); err != nil {
		t.Fatal(err)
	}

	b.start()
	cons, err := hc.JS.Consumer(t.Context(), protocol.StreamDeliver, protocol.UnitConsumer(string(uB)))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "B trying its delivery twice", 30*time.Second, func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.Delivered.Consumer >= 2 || len(b.quarantined()) > 0
	}, b)
	if n := len(b.inbox()); n != 0 {
		t.Fatalf("B has %d documents", n)
	}
	if q := b.quarantined(); len(q) != 0 {
		t.Fatalf("B quarantined %v", q)
	}
	if n := waiting(t, hc, uB); n != 1 {
		t.Fatalf("%d deliveries to B waiting, want 1: B acknowledged what it could not fetch", n)
	}

	// The hub sweeps the stage store when it starts (then every 5 minutes).
	h.stop()
	h = startHubOn(t, data, port)
	eventually(t, "the document in B's inbox", 60*time.Second, func() bool { return len(b.inbox()) == 1 }, b)
	if it := b.inbox()[0]; it.ID != id || it.Size <= protocol.InlineLimit {
		t.Fatalf("B received %+v", it)
	}
	eventually(t, "01 from B at A", 30*time.Second, func() bool { return hasStatus(a.document(id), uB, "01") }, a, b)
	if q := b.quarantined(); len(q) != 0 {
		t.Fatalf("B quarantined %v", q)
	}
}

// handBuilt is a container built by hand, the way a careless or hostile
// sender (or an older hub that took it) could: any file names, validly
// signed.
func handBuilt(t *testing.T, s *pki.Signer, meta []byte, files map[string][]byte) []byte {
	t.Helper()
	names := []string{"document.json"}
	all := map[string][]byte{"document.json": meta}
	for n, b := range files {
		names = append(names, "files/"+n)
		all["files/"+n] = b
	}
	var man bytes.Buffer
	man.WriteString(`<?xml version="1.0" encoding="UTF-8"?><asic:ASiCManifest xmlns:asic="http://uri.etsi.org/02918/v1.2.1#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><asic:SigReference URI="META-INF/signature001.p7s" MimeType="application/pkcs7-signature"/>`)
	for _, n := range names {
		sum := sha256.Sum256(all[n])
		fmt.Fprintf(&man, `<asic:DataObjectReference URI="%s" MimeType="application/octet-stream"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>%s</ds:DigestValue></asic:DataObjectReference>`, n, base64.StdEncoding.EncodeToString(sum[:]))
	}
	man.WriteString(`</asic:ASiCManifest>`)
	sig, err := container.SignDetached(man.Bytes(), s)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	put := func(name string, data []byte, m uint16) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: m})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	put("mimetype", []byte(container.Mimetype), zip.Store)
	put(container.ManifestPath, man.Bytes(), zip.Deflate)
	put(container.SignaturePath, sig, zip.Store)
	for _, n := range names {
		put(n, all[n], zip.Deflate)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestAgentRefusesHostileDelivery: a delivery whose file names no folder
// holds on every system (files/a beside files/a/b.txt, CON, x.pdf., q:z.txt)
// reaches B, validly signed by A with the hub's receipt, as a hub that took
// such names would have routed it. B quarantines it once, refuses it with
// status 02 and acknowledges it; the hub shows B as "refused" in the
// document's history, and A sees the refusal.
//
// Before: B's inbox failed to write files/a/b.txt beside files/a and the
// agent retried forever (the hub said "routed" for ever); the other names
// were written, for a document system on Windows to choke on.
func TestAgentRefusesHostileDelivery(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB)
	code, id, body := a.post(uB)
	if code != 202 {
		t.Fatalf("post: %d %s", code, body)
	}
	eventually(t, "acceptance", 30*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)

	// B's delivery of the document becomes the hostile one.
	hc := hubConnect(t, h)
	str, err := hc.JS.Stream(t.Context(), protocol.StreamDeliver)
	if err != nil {
		t.Fatal(err)
	}
	if err := str.Purge(t.Context(), jetstream.WithPurgeSubject(protocol.DeliverSubject(string(uB)))); err != nil {
		t.Fatal(err)
	}
	d := document.Template(time.Now())
	d.ID, d.From, d.To = id, uA, []document.UnitID{uB}
	meta, _ := d.Marshal()
	signer, err := pki.LoadSigner(filepath.Join(work, "units", string(uA), "key.pem"), filepath.Join(work, "units", string(uA), "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	raw := handBuilt(t, signer, meta, map[string][]byte{
		"a": []byte("%PDF a"), "a/b.txt": []byte("b"), "CON": []byte("con"), "x.pdf.": []byte("%PDF x"), "q:z.txt": []byte("z"),
	})
	sum := sha256.Sum256(raw)
	ca, err := pki.OpenCA(filepath.Join(h.data, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	hubSigner, err := pki.LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	receipt, err := container.SignReceipt(&container.Receipt{DocumentID: id, From: uA, To: []document.UnitID{uB}, ContainerSHA256: hex.EncodeToString(sum[:]),
		ContainerSize: int64(len(raw)), ArchiveKey: projection.ContainerKey(id), AcceptedAt: time.Now().UTC()}, hubSigner)
	if err != nil {
		t.Fatal(err)
	}
	msg := protocol.DeliverMsg(&protocol.Delivery{Recipient: uB, Sender: uA, Receipt: receipt,
		Container: protocol.Container{DocumentID: id, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(raw)), Data: raw}})
	msg.Header.Set(protocol.HeaderMsgID, "hostile."+string(id))
	if _, err := hc.JS.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}

	b.start()
	eventually(t, "B's refusal at A", 30*time.Second, func() bool { return hasStatus(a.document(id), uB, document.StatusRefused) }, a, b)
	refusals := statuses(a.document(id), uB, document.StatusRefused)
	if len(refusals) != 1 || !strings.Contains(refusals[0].Description, "container.bad_path") {
		t.Fatalf("refusals at A: %+v", refusals)
	}
	if n := waiting(t, hc, uB); n != 0 {
		t.Fatalf("%d deliveries to B waiting, want 0 (acknowledged)", n)
	}
	if n := len(b.inbox()); n != 0 {
		t.Fatalf("B handed over %d documents", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(b.dir, "data", "inbox")); len(ents) != 0 {
		t.Fatalf("B's inbox folder holds %d entries", len(ents))
	}
	q := b.quarantined()
	if len(q) != 1 || !strings.HasPrefix(q[0], string(id)) {
		t.Fatalf("B's quarantine: %v", q)
	}
	reasons, err := os.ReadFile(filepath.Join(b.dir, "data", "quarantine", q[0], "reasons.json"))
	if err != nil || !bytes.Contains(reasons, []byte("container.bad_path")) {
		t.Fatalf("quarantine reasons: %s %v", reasons, err)
	}
	// The hub's record: B refused it, not "routed".
	det, err := apiGet(h, "/api/v1/documents/"+string(id))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Recipients []struct {
			Unit     document.UnitID     `json:"unit"`
			State    string              `json:"state"`
			LastCode document.StatusCode `json:"last_code"`
		} `json:"recipients"`
		History []struct {
			Unit    document.UnitID     `json:"unit"`
			Code    document.StatusCode `json:"code"`
			Flagged bool                `json:"flagged"`
		} `json:"history"`
	}
	if err := json.Unmarshal(det, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Recipients) != 1 || doc.Recipients[0].State != "refused" || doc.Recipients[0].LastCode != document.StatusRefused {
		t.Errorf("hub's recipients: %+v", doc.Recipients)
	}
	if len(doc.History) != 1 || doc.History[0].Code != document.StatusRefused || doc.History[0].Flagged {
		t.Errorf("hub's history: %+v", doc.History)
	}
	// Restarted, B neither quarantines nor refuses it again.
	b.stop()
	b.start()
	time.Sleep(2 * time.Second)
	if q := b.quarantined(); len(q) != 1 {
		t.Fatalf("B's quarantine after a restart: %v", q)
	}
	if n := len(statuses(a.document(id), uB, document.StatusRefused)); n != 1 {
		t.Fatalf("%d refusals at A", n)
	}
}

// TestAgentInboxDiskFull: B's inbox folder is on a full disk. B does not
// acknowledge what it cannot store: the deliveries wait, nothing is
// quarantined or refused; when space returns, each document arrives once
// and A gets 01.
func TestAgentInboxDiskFull(t *testing.T) {
	work := t.TempDir()
	h := startHub(t, filepath.Join(work, "edx-data"))
	for _, u := range []document.UnitID{uA, uB} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", string(u), "--name", "Đơn vị "+string(u))
	}
	a := newAgent(t, work, h.info.NATSURL, uA).start()
	b := newAgent(t, work, h.info.NATSURL, uB)
	inbox := filepath.Join(b.dir, "data", "inbox")
	smallDisk(t, inbox, "4m")
	free := fill(t, inbox)
	t.Cleanup(free)
	b.start()
	var ids []document.ID
	for range 2 {
		code, id, body := a.postSize(256<<10, uB)
		if code != 202 {
			t.Fatalf("post: %d %s", code, body)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		eventually(t, "acceptance", 30*time.Second, func() bool { return a.document(id).State == spool.Accepted }, a)
	}
	hc := hubConnect(t, h)
	eventually(t, "B retrying", 30*time.Second, func() bool { return strings.Contains(b.logText(), "no space left on device") }, b)
	time.Sleep(2 * time.Second) // more attempts
	if n := waiting(t, hc, uB); n != 2 {
		t.Fatalf("%d deliveries to B waiting, want 2", n)
	}
	if q := b.quarantined(); len(q) != 0 {
		t.Fatalf("B quarantined %v", q)
	}
	for _, id := range ids {
		if hasStatus(a.document(id), uB, document.StatusRefused) {
			t.Fatalf("B refused %s", id)
		}
	}
	free()
	eventually(t, "B's inbox", 60*time.Second, func() bool { return len(b.inbox()) == 2 }, b)
	for _, id := range ids {
		eventually(t, "01 from B", 30*time.Second, func() bool { return hasStatus(a.document(id), uB, "01") }, a, b)
	}
	if q := b.quarantined(); len(q) != 0 {
		t.Fatalf("B quarantined %v", q)
	}
	eventually(t, "deliveries acknowledged", 30*time.Second, func() bool { return waiting(t, hc, uB) == 0 })
}
