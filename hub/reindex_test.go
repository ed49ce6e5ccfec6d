package hub

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// redial connects an agent again (after a hub restart) with its credentials.
func (r *running) redial(a *agent) *agent {
	r.t.Helper()
	b := *a
	var err error
	if b.nc, b.js, b.closed, err = r.dial(a.creds, a.id); err != nil {
		r.t.Fatal(err)
	}
	return &b
}

// TestReceiptsOutliveHubCertificate: receipts are verified as of their
// acceptance. A hub whose certificate is short-lived accepts a document;
// its certificate is rotated (edx pki rotate-hub) and the hub restarted; it
// accepts another. A month later, when the first certificate has long
// expired, both receipts verify (document page, API), and reindex indexes
// both documents from the archive.
func TestReceiptsOutliveHubCertificate(t *testing.T) {
	cfg := testConfig(t)
	ca, err := pki.InitCA(filepath.Join(cfg.Data, "pki"), "")
	if err != nil {
		t.Fatal(err)
	}
	first, err := ca.RotateHub(2 * time.Hour) // lives two hours
	if err != nil {
		t.Fatal(err)
	}
	h := startHub(t, cfg)
	a, b := h.register(uA), h.register(uB)
	doc1 := a.send(a.signer, uB)
	if n := a.notice(); n.Type != protocol.NoticeAccepted {
		t.Fatalf("first document: %s %v", n.Type, n.Reasons.Codes())
	}
	h.stop()

	second, err := ca.RotateHub(0)
	if err != nil {
		t.Fatal(err)
	}
	h = startHub(t, cfg)
	a = h.redial(a)
	_ = h.redial(b)
	doc2 := a.send(a.signer, uB)
	n := a.notice()
	for n.DocumentID == doc1 { // delivered again, if the hub had not removed it when it stopped
		n = a.notice()
	}
	if n.Type != protocol.NoticeAccepted || n.DocumentID != doc2 {
		t.Fatalf("second document: %s %s %v", n.DocumentID, n.Type, n.Reasons.Codes())
	}
	for _, tc := range []struct {
		id   document.ID
		hub  string
		name string
	}{{doc1, first.SerialNumber.Text(16), "first"}, {doc2, second.SerialNumber.Text(16), "second"}} {
		var v service.Verification
		h.api("POST", "/api/v1/documents/"+string(tc.id)+"/verify", nil, &v)
		if !v.Valid || v.Receipt.Signature.SignerSerial != tc.hub {
			t.Fatalf("%s document today: valid %v, receipt by %s (%v)", tc.name, v.Valid, v.Receipt.Signature.SignerSerial, v.Receipt.Reasons)
		}
	}

	// A month later: the first hub certificate expired long ago.
	later := time.Now().Add(30 * 24 * time.Hour)
	rec, err := service.New(service.Deps{Index: h.ix, Archive: h.arch, Registry: h.units, Trust: h.trust, Now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	admin := &auth.Identity{User: auth.AdminUser, Via: auth.ViaAdminToken}
	for _, id := range []document.ID{doc1, doc2} {
		v, err := rec.Verify(t.Context(), admin, id, service.AtAccepted)
		if err != nil || !v.Valid || !v.Receipt.Valid {
			t.Fatalf("%s a month later, as of acceptance: %v %+v", id, err, v)
		}
		if v, err = rec.Verify(t.Context(), admin, id, service.AtNow); err != nil || !v.Receipt.Valid {
			t.Fatalf("%s's receipt a month later: %v %+v", id, err, v.Receipt)
		}
	}
	h.stop()

	cfg.Index.Path = filepath.Join(t.TempDir(), "rebuilt.db")
	cfg.Clock = func() time.Time { return later }
	st, err := Reindex(t.Context(), cfg, testLog(t), nil)
	if err != nil || st.Documents != 2 || st.Skipped != 0 {
		t.Fatalf("reindex a month later: %+v %v", st, err)
	}
}

// TestReindexReportsSkips: an archived document that cannot be indexed (its
// receipt missing, or not a receipt) is never dropped silently: reindex
// lists each with its key and reason and counts it; the good one is indexed.
func TestReindexReportsSkips(t *testing.T) {
	cfg := testConfig(t)
	h := startHub(t, cfg)
	a, _ := h.register(uA), h.register(uB)
	good := a.send(a.signer, uB)
	if n := a.notice(); n.Type != protocol.NoticeAccepted {
		t.Fatalf("document: %s %v", n.Type, n.Reasons.Codes())
	}
	data, _, err := h.arch.Get(t.Context(), projection.ContainerKey(good))
	if err != nil {
		t.Fatal(err)
	}
	// The same container under two other document ids: one without a
	// receipt, one whose receipt is not a receipt.
	noReceipt, badReceipt := document.NewID(time.Now()), document.NewID(time.Now())
	for _, id := range []document.ID{noReceipt, badReceipt} {
		if _, err := h.arch.Put(t.Context(), projection.ContainerKey(id), data, "application/vnd.etsi.asic-e+zip", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.arch.Put(t.Context(), projection.ReceiptKey(badReceipt), []byte("not a receipt"), "application/pkcs7-mime", nil); err != nil {
		t.Fatal(err)
	}
	h.stop()

	cfg.Index.Path = filepath.Join(t.TempDir(), "rebuilt.db")
	st, err := Reindex(t.Context(), cfg, testLog(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Documents != 1 || st.Skipped != 2 || len(st.Skips) != 2 {
		t.Fatalf("reindex: %+v", st)
	}
	for _, s := range st.Skips {
		switch s.Key {
		case projection.ContainerKey(noReceipt):
			if !strings.Contains(s.Reason, "receipt") || !strings.Contains(s.Reason, "not found") {
				t.Errorf("no receipt: %q", s.Reason)
			}
		case projection.ContainerKey(badReceipt):
			if !strings.Contains(s.Reason, "receipt.invalid") {
				t.Errorf("bad receipt: %q", s.Reason)
			}
		default:
			t.Errorf("skipped %s: %s", s.Key, s.Reason)
		}
	}
}
