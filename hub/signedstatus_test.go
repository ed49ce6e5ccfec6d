package hub

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"github.com/edxhub/edx/pkg/audit"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/pipeline"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// report publishes a status as unit a's agent would, signed by signer
// over the container digest sha (nil signer: unsigned).
func (a *agent) report(st document.Status, signer *pki.Signer, sha string) {
	a.t.Helper()
	rep := &protocol.StatusReport{Status: st}
	if signer != nil {
		var err error
		if rep.Signature, err = container.SignStatus(st, sha, signer); err != nil {
			a.t.Fatal(err)
		}
	}
	m, err := protocol.StatusReportMsg(rep)
	if err != nil {
		a.t.Fatal(err)
	}
	if _, err := a.js.PublishMsg(a.t.Context(), m); err != nil {
		a.t.Fatal(err)
	}
}

// history reads a document's status history from the API.
func (r *running) history(id document.ID) []index.StatusEntry {
	r.t.Helper()
	var d service.Document
	if code := r.api("GET", "/api/v1/documents/"+string(id), nil, &d); code != http.StatusOK {
		r.t.Fatalf("document %s: %d", id, code)
	}
	return d.History
}

func (r *running) fetch(path string) (int, []byte) {
	r.t.Helper()
	req, _ := http.NewRequestWithContext(r.t.Context(), "GET", r.Info().HTTP+path, nil)
	req.Header.Set("Authorization", "Bearer "+r.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestSignedStatuses: through the real hub, NATS and S3. A recipient's
// signed 01 is verified, archived with the status (one object; the audit
// bundle gives it on its own too), indexed with its
// digest, passed to the sender with the notice, served by the API, and
// verified by openssl cms -verify alone. An unsigned status (an old agent)
// is recorded as unsigned by default; a status signed by another unit, over
// another container, over another status, or with a certificate that is
// not the unit's registered one any more, is refused (status.signature).
// With unsigned_statuses: refuse, an unsigned status is refused
// (status.unsigned).
func TestSignedStatuses(t *testing.T) {
	cfg := testConfig(t)
	cfg.Tlog.TimestampInterval = time.Second // the audit bundle waits for a time-stamp
	h := startHub(t, cfg)
	a, b := h.register(uA), h.register(uB)
	id := a.send(a.signer, uB)
	if n := a.notice(); n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %s %v", n.Type, n.Reasons)
	}
	d := b.delivery()
	sha := d.SHA256

	st := document.Status{DocumentID: id, Unit: uB, Time: time.Now().UTC(), Code: document.StatusDelivered}
	b.report(st, b.signer, sha)
	n := a.notice()
	if n.Type != protocol.NoticeStatus || n.Status.Code != document.StatusDelivered || len(n.StatusSignature) == 0 {
		t.Fatalf("the sender's notice: %s %+v, signature of %d bytes", n.Type, n.Status, len(n.StatusSignature))
	}
	var hist []index.StatusEntry
	eventually(t, "the signed 01 indexed", func() bool {
		hist = h.history(id)
		return len(hist) == 1 && hist[0].SignatureSHA256 != ""
	})
	sum := sha256.Sum256(n.StatusSignature)
	if hist[0].SignatureSHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("indexed digest %s, notice's signature %x", hist[0].SignatureSHA256, sum)
	}
	code, sig := h.fetch("/api/v1/documents/" + string(id) + "/signatures/" + hist[0].SignatureSHA256)
	if code != http.StatusOK || !bytes.Equal(sig, n.StatusSignature) {
		t.Fatalf("GET signature: %d, %d bytes", code, len(sig))
	}
	if code, _ := h.fetch("/api/v1/documents/" + string(id) + "/signatures/" + strings.Repeat("0", 64)); code != http.StatusNotFound {
		t.Fatalf("GET an unknown signature: %d", code)
	}
	// An auditor, with OpenSSL alone: the signature verifies against the
	// trust roots and says which container unit B received.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "01.p7s"), sig, 0o644)
	cmd := exec.Command("openssl", "cms", "-verify", "-in", "01.p7s", "-inform", "DER", "-CAfile", h.cfg.PKI.Trust, "-purpose", "any", "-out", "statement.json")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Verification successful") {
		t.Fatalf("openssl cms -verify: %v\n%s", err, out)
	}
	stmt, _ := os.ReadFile(filepath.Join(dir, "statement.json"))
	for _, want := range []string{`"document_id":"` + string(id), `"container_sha256":"` + sha, `"unit":"` + string(uB), `"code":"01"`, `"type":"edx.status"`} {
		if !strings.Contains(string(stmt), want) {
			t.Fatalf("the statement %s lacks %s", stmt, want)
		}
	}
	// The archive holds it with the status, in one object.
	eventually(t, "archived", func() bool {
		b, _, err := h.arch.Get(t.Context(), projection.StatusKey(&st))
		if err != nil {
			return false
		}
		_, sig, err := projection.DecodeStatus(b)
		return err == nil && len(sig) > 0 && bytes.Equal(sig, n.StatusSignature)
	})
	if _, _, err := h.arch.Get(t.Context(), projection.StatusSignatureKey(&st)); err == nil {
		t.Fatal("the signature is also archived in an object of its own: one write per status")
	}
	// The audit bundle gives it on its own too, for OpenSSL, beside the
	// archived status.
	var bb []byte
	eventually(t, "the bundle (once time-stamped)", func() bool {
		var code int
		code, bb = h.fetch("/api/v1/documents/" + string(id) + "/bundle")
		return code == http.StatusOK
	})
	bundle, err := audit.Parse(bb)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(projection.StatusSignatureKey(&st), projection.StatusPrefix(id))
	if !bytes.Equal(bundle.Statuses[name], n.StatusSignature) || bundle.Statuses[strings.TrimSuffix(name, ".p7s")+".json"] == nil {
		t.Fatalf("the bundle's statuses %v lack %s", slices.Collect(maps.Keys(bundle.Statuses)), name)
	}

	// An old agent's unsigned status: recorded, unsigned.
	b.report(document.Status{DocumentID: id, Unit: uB, Time: time.Now().UTC(), Code: document.StatusAccepted}, nil, "")
	if n := a.notice(); n.Type != protocol.NoticeStatus || len(n.StatusSignature) != 0 {
		t.Fatalf("unsigned 03: %s, signature %d bytes", n.Type, len(n.StatusSignature))
	}
	eventually(t, "the unsigned 03 indexed", func() bool { return len(h.history(id)) == 2 })
	if e := h.history(id)[1]; e.Code != document.StatusAccepted || e.SignatureSHA256 != "" {
		t.Fatalf("the unsigned 03: %+v", e)
	}

	// Forged or mismatched signatures: refused.
	other := sha256.Sum256([]byte("another container"))
	forge := func(name string, st document.Status, signer *pki.Signer, sha string, tweak func(*protocol.StatusReport)) {
		t.Helper()
		rep := &protocol.StatusReport{Status: st}
		rep.Signature, _ = container.SignStatus(st, sha, signer)
		if tweak != nil {
			tweak(rep)
		}
		m, _ := protocol.StatusReportMsg(rep)
		if _, err := b.js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
		n := b.notice()
		if n.Type != protocol.NoticeStatusRejected || !n.Reasons.Has(reason.StatusSignature) {
			t.Fatalf("%s: %s %v", name, n.Type, n.Reasons)
		}
	}
	at := func(code document.StatusCode) document.Status {
		return document.Status{DocumentID: id, Unit: uB, Time: time.Now().UTC(), Code: code}
	}
	forge("signed by unit A", at(document.StatusAssigned), a.signer, sha, nil)
	forge("over another container", at(document.StatusAssigned), b.signer, hex.EncodeToString(other[:]), nil)
	forge("over another status", at(document.StatusAssigned), b.signer, sha, func(r *protocol.StatusReport) { r.Description = "added after signing" })
	forge("a damaged signature", at(document.StatusAssigned), b.signer, sha, func(r *protocol.StatusReport) { r.Signature[len(r.Signature)-5] ^= 1 })
	// B's certificate replaced: the old one is not the registered one.
	var nb service.UnitBundle
	if code := h.api("POST", "/api/v1/units/"+string(uB)+"/rotate", service.RotateRequest{NewCert: true}, &nb); code != http.StatusOK {
		t.Fatalf("rotate B: %d", code)
	}
	b2 := h.agentFrom(uB, &nb)
	oldSigner := b.signer
	b = b2
	forge("by B's certificate before the rotation", at(document.StatusAssigned), oldSigner, sha, nil)
	b.report(at(document.StatusAssigned), b.signer, sha)
	if n := a.notice(); n.Type != protocol.NoticeStatus || n.Status.Code != document.StatusAssigned || len(n.StatusSignature) == 0 {
		t.Fatalf("04 signed with B's new certificate: %s %v", n.Type, n.Reasons)
	}
	eventually(t, "the signed 04 indexed", func() bool { return len(h.history(id)) == 3 })
	if n := gauge(t, h.Registry(), "edx_hub_status_signatures_total"); n != 8 {
		t.Fatalf("edx_hub_status_signatures_total %v, want 8 (2 signed, 1 unsigned, 5 refused)", n)
	}
	h.stop()

	// A hub that requires signed statuses.
	cfg.Pipeline.UnsignedStatuses = pipeline.UnsignedRefuse
	h = startHub(t, cfg)
	b = h.agentFrom(uB, &nb)
	b.report(at(document.StatusInProgress), nil, "")
	if n := b.notice(); n.Type != protocol.NoticeStatusRejected || !n.Reasons.Has(reason.StatusUnsigned) {
		t.Fatalf("unsigned with unsigned_statuses refuse: %s %v", n.Type, n.Reasons)
	}
	b.report(at(document.StatusInProgress), b.signer, sha)
	a.nc.Close()
	a = h.agentFrom(uA, &service.UnitBundle{Creds: string(a.creds)}, a)
	if n := a.notice(); n.Type != protocol.NoticeStatus || n.Status.Code != document.StatusInProgress || len(n.StatusSignature) == 0 {
		t.Fatalf("a signed 05 with unsigned_statuses refuse: %s %v", n.Type, n.Reasons)
	}
}
