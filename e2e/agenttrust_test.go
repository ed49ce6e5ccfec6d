package e2e

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// writeCRLFile signs a CRL of the hub's development CA with nextUpdate next
// and installs it at path (atomically, as a CA's publisher would).
func writeCRLFile(t *testing.T, caDir, path string, number int64, next time.Time) {
	t.Helper()
	kb, err := os.ReadFile(filepath.Join(caDir, "ca", "issuing.key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParsePrivateKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := os.ReadFile(filepath.Join(caDir, "ca", "issuing.cert.pem"))
	iss, err := pki.ParseCertificates(cb)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number),
		ThisUpdate: next.Add(-7 * 24 * time.Hour), NextUpdate: next}, iss[0], key)
	if err != nil {
		t.Fatal(err)
	}
	installFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
}

func installFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// readyDetail reads an agent's /readyz.
func (a *agentProc) readyDetail() map[string]string {
	a.t.Helper()
	resp, err := http.Get(a.url + "/readyz")
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var d map[string]string
	json.NewDecoder(resp.Body).Decode(&d)
	return d
}

// quarantineReasons returns the reasons of the deliveries in the agent's
// quarantine.
func (a *agentProc) quarantineReasons() []reason.List {
	dirs, _ := filepath.Glob(filepath.Join(a.dir, "data", "quarantine", "*", "reasons.json"))
	var out []reason.List
	for _, p := range dirs {
		var r struct{ Reasons reason.List }
		b, _ := os.ReadFile(p)
		json.Unmarshal(b, &r)
		out = append(out, r.Reasons)
	}
	return out
}

// TestAgentTrustWhileRunning: the agent reads its CRL again while it runs.
// With a stale CRL, a delivery waits (not in the inbox, not quarantined) and
// /readyz says the CRL is stale; a current CRL lets it in. A CRL that
// revokes the sender's certificate, installed while the agent runs, sends
// the sender's next delivery to quarantine with signature.revoked. The
// agent reports when its NATS credentials expire.
func TestAgentTrustWhileRunning(t *testing.T) {
	work := t.TempDir()
	natsPort := freePort(t)
	h := startHubOn(t, filepath.Join(work, "edx-data"), natsPort)
	for _, u := range []string{string(uA), string(uB)} {
		edx(t, work, 0, "unit", "add", "--data", h.data, "--unit", u, "--name", "Đơn vị "+u)
	}
	caDir := filepath.Join(h.data, "pki")
	a := newAgent(t, work, h.info.NATSURL, uA)
	b := newAgent(t, work, h.info.NATSURL, uB)
	crl := filepath.Join(b.dir, "city.crl")
	writeCRLFile(t, caDir, crl, 0, time.Now().Add(-2*time.Hour)) // stale
	cfgPath := filepath.Join(b.dir, "agent.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	cfg = []byte(strings.Replace(string(cfg), "trust:\n", "trust:\n  crls: ["+crl+"]\n  crl_poll: 100ms\n  crl_grace: 1s\n", 1))
	os.WriteFile(cfgPath, cfg, 0o644)
	a.start()
	b.start()

	d := b.readyDetail()
	if !strings.HasPrefix(d["crl"], "stale") || !strings.HasPrefix(d["nats_creds"], "expire ") {
		t.Fatalf("B's readyz: %v", d)
	}
	if !strings.Contains(b.logText(), "credentials expire") {
		t.Fatalf("B does not log its credentials' expiry:\n%s", b.logText())
	}
	code, id, body := a.post(uB)
	if code != http.StatusAccepted {
		t.Fatalf("post: %d %s", code, body)
	}
	eventually(t, "the delivery is held at B", 30*time.Second, func() bool {
		return strings.Contains(b.logText(), "delivery held") && strings.Contains(b.logText(), string(id))
	}, b)
	if len(b.inbox()) != 0 || len(b.quarantineReasons()) != 0 {
		t.Fatalf("with a stale CRL: inbox %d, quarantined %v", len(b.inbox()), b.quarantineReasons())
	}

	writeCRLFile(t, caDir, crl, 1, time.Now().Add(24*time.Hour))
	eventually(t, "the delivery reaches B's inbox", 60*time.Second, func() bool {
		items := b.inbox()
		return len(items) == 1 && items[0].ID == id
	}, b)
	if d := b.readyDetail(); d["crl"] != "ok" {
		t.Fatalf("B's readyz with a current CRL: %v", d)
	}

	// B's CRL goes stale again and holds A's next delivery; meanwhile A's
	// certificate is revoked, and B gets the CA's new CRL while running
	// (a higher number than those above: an agent never goes back to an
	// older CRL). The held delivery is then refused: signature.revoked.
	writeCRLFile(t, caDir, crl, 1, time.Now().Add(-2*time.Hour))
	eventually(t, "B sees its CRL stale", 30*time.Second, func() bool { return strings.HasPrefix(b.readyDetail()["crl"], "stale") }, b)
	code, id2, body := a.post(uB)
	if code != http.StatusAccepted {
		t.Fatalf("post: %d %s", code, body)
	}
	eventually(t, "B holds A's second document", 30*time.Second, func() bool {
		return strings.Count(b.logText(), "delivery held") >= 2 && strings.Contains(b.logText(), string(id2))
	}, b)
	edx(t, work, 0, "pki", "revoke", "--dir", caDir, "--cert", filepath.Join(work, "units", string(uA), "cert.pem"))
	crlNow, err := os.ReadFile(filepath.Join(caDir, "crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	installFile(t, crl, crlNow)
	eventually(t, "the delivery of a revoked signer is quarantined at B", 60*time.Second, func() bool {
		for _, rs := range b.quarantineReasons() {
			if rs.Has(reason.SignatureRevoked) {
				return true
			}
		}
		return false
	}, b)
	for _, it := range b.inbox() {
		if it.ID == id2 {
			t.Fatal("the revoked signer's document reached B's inbox")
		}
	}
}
