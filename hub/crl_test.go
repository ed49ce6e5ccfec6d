package hub

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// cityCA is a city CA the hub trusts without being its development CA: the
// hub reads its CRL from a file the CA publishes.
type cityCA struct {
	*pki.CA
	crlPath string
	number  int64
}

func newCityCA(t *testing.T) *cityCA {
	t.Helper()
	ca, err := pki.InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	c := &cityCA{CA: ca, crlPath: filepath.Join(t.TempDir(), "issuing.crl")}
	c.publish(t, time.Now().Add(24*time.Hour))
	return c
}

// publish signs a new CRL (no entries) with nextUpdate next and writes it
// where the hub reads it.
func (c *cityCA) publish(t *testing.T, next time.Time) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, "ca", "issuing.key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	c.number++
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(c.number),
		ThisUpdate: next.Add(-7 * 24 * time.Hour), NextUpdate: next}, c.Issuing, key)
	if err != nil {
		t.Fatal(err)
	}
	tmp := c.crlPath + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, c.crlPath); err != nil {
		t.Fatal(err)
	}
}

func (c *cityCA) config(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.PKI.Trust, cfg.PKI.CRLs = c.RootsPath(), []string{c.crlPath}
	cfg.PKI.HubKey, cfg.PKI.HubCert = c.HubKeyPath(), c.HubCertPath()
	cfg.PKI.CRLGrace = time.Second
	return cfg
}

// registerWith registers a unit with a certificate of the city CA.
func (r *running) registerWith(ca *pki.CA, id document.UnitID) *agent {
	r.t.Helper()
	kp, cp, err := ca.IssueUnit(id, "Đơn vị "+string(id), pki.ECDSAP256)
	if err != nil {
		r.t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(cp)
	var b service.UnitBundle
	if code := r.api("POST", "/api/v1/units", service.UnitRequest{ID: id, Name: "Đơn vị " + string(id), CertPEM: string(certPEM)}, &b); code != http.StatusCreated {
		r.t.Fatalf("register %s: %d", id, code)
	}
	a := r.agentFrom(id, &b)
	if a.signer, err = pki.LoadSigner(kp, cp); err != nil {
		r.t.Fatal(err)
	}
	return a
}

// readyz returns /readyz's status and body.
func (r *running) readyz() (int, map[string]string) {
	r.t.Helper()
	resp, err := http.Get(r.Info().HTTP + "/readyz")
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]string
	json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if m.GetGauge() != nil {
					sum += m.GetGauge().GetValue()
				}
				if m.GetCounter() != nil {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// TestStaleCRLAtRunningHub: when the CRL the hub reads goes past its
// nextUpdate (and the grace), the hub holds submissions (never rejects
// them), says so on /readyz and in edx_hub_crl_stale; when the CA publishes
// a current CRL, the hub picks it up while running and accepts the held
// document.
func TestStaleCRLAtRunningHub(t *testing.T) {
	ca := newCityCA(t)
	h := startHub(t, ca.config(t))
	a, b := h.registerWith(ca.CA, uA), h.registerWith(ca.CA, uB)
	// (Every check is listed: the transparency log's too.)
	if code, body := h.readyz(); code != http.StatusOK || body["crl"] != "ok" || body["log"] != "ok" {
		t.Fatalf("readyz with a current CRL: %d %v", code, body)
	}

	ca.publish(t, time.Now().Add(-time.Minute)) // published late: already past its nextUpdate
	eventually(t, "the hub sees the stale CRL", func() bool { return gauge(t, h.Registry(), "edx_hub_crl_stale") == 1 })
	code, body := h.readyz()
	if code != http.StatusServiceUnavailable || !strings.Contains(body["crl"], "stale") || !strings.Contains(body["crl"], ca.crlPath) {
		t.Fatalf("readyz with a stale CRL: %d %v", code, body)
	}
	id := a.send(a.signer, uB)
	eventually(t, "the submission is held", func() bool { return gauge(t, h.Registry(), "edx_hub_submissions_held_total") >= 2 })
	if rej, _ := h.ix.ListRejected(t.Context(), uA, 10); len(rej) != 0 {
		t.Fatalf("rejected for a stale CRL: %+v", rej)
	}

	ca.publish(t, time.Now().Add(24*time.Hour))
	if n := a.notice(); n.Type != protocol.NoticeAccepted || n.DocumentID != id {
		t.Fatalf("after a current CRL: %s %v", n.Type, n.Reasons.Codes())
	}
	if d := b.delivery(); d.DocumentID != id {
		t.Fatalf("delivery %s", d.DocumentID)
	}
	eventually(t, "readyz ok again", func() bool { c, _ := h.readyz(); return c == http.StatusOK })
}

// TestDevCACRLKeptCurrent: a hub with the development CA signs its CRL again
// before it goes stale, so a hub left running never stops on its own CRL.
func TestDevCACRLKeptCurrent(t *testing.T) {
	cfg := testConfig(t)
	h := startHub(t, cfg)
	crl := func() *x509.RevocationList {
		b, _ := os.ReadFile(h.ca.CRLPath())
		p, _ := pem.Decode(b)
		l, err := x509.ParseRevocationList(p.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := crl()
	// As if the hub had run for six days: less than half the CRL's life
	// is left.
	h.checkCRLs(t.Context(), time.Now().Add(6*24*time.Hour))
	second := crl()
	if second.Number.Cmp(first.Number) <= 0 || second.NextUpdate.Before(first.NextUpdate) {
		t.Fatalf("CRL not re-signed: number %s → %s, nextUpdate %v → %v", first.Number, second.Number, first.NextUpdate, second.NextUpdate)
	}
}
