package hub

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// TestUnitCredentialsLifecycle: on a running hub (embedded NATS in operator
// mode, real S3), a unit's old NATS credentials stop working, and its open
// connection is closed, when it is registered again, rotated or disabled;
// a delivery waiting for it cannot be taken with them, only with the new
// ones. A disabled unit is refused as a recipient (recipient.disabled) and
// cannot connect; enabled, it gets new credentials. Credentials carry the
// configured expiry. Reindexing from the archive alone rebuilds each unit's
// state.
func TestUnitCredentialsLifecycle(t *testing.T) {
	cfg := testConfig(t)
	cfg.NATS.CredsTTL = 48 * time.Hour
	h := startHub(t, cfg)
	a, b := h.register(uA), h.register(uB)

	// The credentials expire after nats.creds_ttl, as the unit record says.
	_, exp, err := broker.UserKey(a.creds)
	if err != nil || exp.IsZero() || time.Until(exp) > 48*time.Hour || time.Until(exp) < 47*time.Hour {
		t.Fatalf("credentials expire at %v (%v), want in 48h", exp, err)
	}
	if v := h.unitView(uA); !v.CredsExpire.Equal(exp) || len(v.NATSUsers) != 1 {
		t.Fatalf("unit record: expiry %v users %v", v.CredsExpire, v.NATSUsers)
	}

	// Registered again: the first credentials are revoked.
	id := b.send(b.signer, uA)
	if n := b.notice(); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("B to A: %s %v", n.Type, n.Reasons.Codes())
	}
	var rb api.UnitBundle
	if code := h.api("POST", "/api/v1/units", api.UnitRequest{ID: uA, Name: "Đơn vị A"}, &rb); code != http.StatusCreated {
		t.Fatalf("register again: %d", code)
	}
	a.waitClosed("registered again")
	h.refused(a.creds, uA, "registered again")
	a2 := h.agentFrom(uA, &rb)
	if d := a2.delivery(); d.DocumentID != id {
		t.Fatalf("delivery with the new credentials: %s", d.DocumentID)
	}

	// Rotated: new credentials, the old ones revoked; a delivery waits for
	// the new ones only.
	id = b.send(b.signer, uA)
	b.notice()
	if code := h.api("POST", "/api/v1/units/"+string(uA)+"/rotate", nil, &rb); code != http.StatusOK {
		t.Fatalf("rotate: %d", code)
	}
	a2.waitClosed("rotated")
	h.refused(a2.creds, uA, "rotated")
	a3 := h.agentFrom(uA, &rb, a2)
	if d := a3.delivery(); d.DocumentID != id {
		t.Fatalf("delivery after rotation: %s", d.DocumentID)
	}
	if a3.signer.Cert().SerialNumber.Cmp(a2.signer.Cert().SerialNumber) != 0 {
		t.Fatal("a rotation without --cert changed the certificate")
	}

	// Disabled: the connection closes, the credentials are refused, and
	// documents to the unit are refused.
	var dv api.UnitView
	if code := h.api("POST", "/api/v1/units/"+string(uA)+"/disable", nil, &dv); code != http.StatusOK || dv.State != api.UnitDisabled {
		t.Fatalf("disable: %d %+v", code, dv.State)
	}
	a3.waitClosed("disabled")
	h.refused(a3.creds, uA, "disabled")
	b.send(b.signer, uA)
	if n := b.notice(); n.Type != protocol.NoticeRejected || !n.Reasons.Has(reason.RecipientDisabled) {
		t.Fatalf("document to a disabled unit: %s %v", n.Type, n.Reasons.Codes())
	}
	if code := h.api("POST", "/api/v1/units/"+string(uA)+"/rotate", nil, nil); code != http.StatusConflict {
		t.Fatalf("rotating a disabled unit: %d", code)
	}

	// Enabled: new credentials; documents flow again.
	if code := h.api("POST", "/api/v1/units/"+string(uA)+"/enable", nil, &rb); code != http.StatusOK || rb.Unit.Disabled {
		t.Fatalf("enable: %d", code)
	}
	h.refused(a3.creds, uA, "enabled")
	a4 := h.agentFrom(uA, &rb, a3)
	id = b.send(b.signer, uA)
	if n := b.notice(); n.Type != protocol.NoticeAccepted {
		t.Fatalf("document to the enabled unit: %s %v", n.Type, n.Reasons.Codes())
	}
	if d := a4.delivery(); d.DocumentID != id {
		t.Fatalf("delivery after enable: %s", d.DocumentID)
	}
	if code := h.api("POST", "/api/v1/units/"+string(uA)+"/enable", nil, nil); code != http.StatusConflict {
		t.Fatalf("enabling an active unit: %d", code)
	}

	// The archive alone rebuilds the state: B disabled, A active.
	if code := h.api("POST", "/api/v1/units/"+string(uB)+"/disable", nil, nil); code != http.StatusOK {
		t.Fatalf("disable B: %d", code)
	}
	h.stop()
	cfg.Index.Path = filepath.Join(t.TempDir(), "rebuilt.db")
	st, err := Reindex(t.Context(), cfg, testLog(t), nil)
	if err != nil || st.Skipped != 0 {
		t.Fatalf("reindex: %+v %v", st, err)
	}
	ix, err := index.Open(t.Context(), cfg.Index, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	ua, _ := ix.GetUnit(t.Context(), uA)
	ub, _ := ix.GetUnit(t.Context(), uB)
	if ua.Disabled || !ub.Disabled || len(ua.NATSUsers) != 1 || ua.NATSUsers[0] != rb.Unit.NATSUsers[0] || ua.CertPEM == "" {
		t.Fatalf("rebuilt units: A %+v, B disabled %v", ua, ub.Disabled)
	}
}

// TestRevokedCertificateAtRunningHub: `edx pki revoke` (ca.Revoke) while the
// hub runs takes effect within its CRL poll: re-verifying the accepted
// document now says signature.revoked, the unit's NATS credentials are
// revoked (its connection closes), the unit list says revoked with the
// certificate's serial; a document signed with the revoked certificate is
// rejected signature.revoked even when sent with new credentials.
func TestRevokedCertificateAtRunningHub(t *testing.T) {
	h := startHub(t, testConfig(t))
	a, b := h.register(uA), h.register(uB)
	id := a.send(a.signer, uB)
	if n := a.notice(); n.Type != protocol.NoticeAccepted {
		t.Fatalf("first document: %s %v", n.Type, n.Reasons.Codes())
	}
	b.delivery()
	if v := h.unitView(uA); v.State != api.UnitActive || v.Certificate == nil || v.Certificate.Serial != a.signer.Cert().SerialNumber.Text(16) ||
		!v.Certificate.NotAfter.Equal(a.signer.Cert().NotAfter.UTC()) {
		t.Fatalf("unit before revocation: %+v %+v", v.State, v.Certificate)
	}

	if err := h.ca.Revoke(a.signer.Cert().SerialNumber, time.Now()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-verification says revoked", func() bool {
		var v api.Verification
		h.api("POST", "/api/v1/documents/"+string(id)+"/verify", nil, &v)
		return v.Container != nil && v.Container.Reasons.Has(reason.SignatureRevoked) && !v.Valid
	})
	a.waitClosed("certificate revoked")
	h.refused(a.creds, uA, "certificate revoked")
	if v := h.unitView(uA); v.State != api.UnitRevoked || v.Certificate.Valid || !v.Certificate.Reasons.Has(reason.SignatureRevoked) {
		t.Fatalf("unit after revocation: %s %+v", v.State, v.Certificate)
	}
	var units []api.UnitView
	h.api("GET", "/api/v1/units", nil, &units)
	if len(units) != 2 || units[0].State != api.UnitRevoked || units[1].State != api.UnitActive {
		t.Fatalf("unit list: %+v", units)
	}
	// New credentials need a new certificate.
	if code := h.api("POST", "/api/v1/units/"+string(uA)+"/rotate", nil, nil); code != http.StatusConflict {
		t.Fatalf("rotate a revoked unit without a new certificate: %d", code)
	}
	var rb api.UnitBundle
	if code := h.api("POST", "/api/v1/units/"+string(uA)+"/rotate", api.RotateRequest{NewCert: true}, &rb); code != http.StatusOK || rb.KeyPEM == "" {
		t.Fatalf("rotate with a new certificate: %d", code)
	}
	a2 := h.agentFrom(uA, &rb)
	a2.send(a.signer, uB) // the revoked certificate
	if n := a2.notice(); n.Type != protocol.NoticeRejected || !n.Reasons.Has(reason.SignatureRevoked) {
		t.Fatalf("document signed with the revoked certificate: %s %v", n.Type, n.Reasons.Codes())
	}
	a2.send(a2.signer, uB)
	if n := a2.notice(); n.Type != protocol.NoticeAccepted {
		t.Fatalf("document signed with the new certificate: %s %v", n.Type, n.Reasons.Codes())
	}
	if v := h.unitView(uA); v.State != api.UnitActive || v.Certificate.Serial != a2.signer.Cert().SerialNumber.Text(16) {
		t.Fatalf("unit after rotation: %s %+v", v.State, v.Certificate)
	}
}
