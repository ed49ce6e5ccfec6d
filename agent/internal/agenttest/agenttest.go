// Package agenttest gives the agent's tests a development CA, unit signers,
// signed containers and hub receipts.
package agenttest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// PKI is a development CA with the hub's signer and unit signers.
type PKI struct {
	CA    *pki.CA
	Trust *pki.Trust
	Hub   *pki.Signer
	units map[document.UnitID]*pki.Signer
}

// NewPKI makes a CA in a temporary directory.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := pki.InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := pki.LoadTrust(ca.RootsPath())
	if err != nil {
		t.Fatal(err)
	}
	hub, err := pki.LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca, Trust: trust, Hub: hub, units: map[document.UnitID]*pki.Signer{}}
}

// Unit returns the signer of a unit, issuing it on first use.
func (p *PKI) Unit(t testing.TB, u document.UnitID) *pki.Signer {
	t.Helper()
	if s, ok := p.units[u]; ok {
		return s
	}
	kp, cp, err := p.CA.IssueUnit(u, "Đơn vị "+string(u), pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pki.LoadSigner(kp, cp)
	if err != nil {
		t.Fatal(err)
	}
	p.units[u] = s
	return s
}

// Meta returns a valid document.json from a unit to recipients.
func Meta(from document.UnitID, to ...document.UnitID) (document.ID, []byte) {
	d := document.Template(time.Now())
	d.From, d.To = from, to
	b, _ := d.Marshal()
	return d.ID, b
}

// Container builds a container signed by the sender with one payload file
// of size random bytes.
func (p *PKI) Container(t testing.TB, meta []byte, size int) []byte {
	t.Helper()
	d, err := document.Parse(meta)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data)
	c, err := container.Build(meta, []container.File{{Name: "van-ban.pdf", Data: data}, {Name: "phu-luc.txt", Data: []byte("Phụ lục")}}, p.Unit(t, d.From))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Receipt signs a hub receipt for a container.
func (p *PKI) Receipt(t testing.TB, raw []byte) []byte {
	t.Helper()
	c, err := container.Open(raw, container.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	r := &container.Receipt{DocumentID: c.Meta.ID, From: c.Meta.From, To: c.Meta.To, ContainerSHA256: hex.EncodeToString(sum[:]),
		ContainerSize: int64(len(raw)), ArchiveKey: "2027/01/02/" + string(c.Meta.ID) + "/container.asice", AcceptedAt: time.Now().UTC()}
	b, err := container.SignReceipt(r, p.Hub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SHA256 is the hex digest of b.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
