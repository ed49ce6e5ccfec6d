package container

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func status01(unit document.UnitID) document.Status {
	return document.Status{DocumentID: document.NewID(time.Now()), Unit: unit, Time: time.Now().UTC().Truncate(time.Nanosecond),
		Code: document.StatusDelivered, Description: "Văn thư đã nhận", Officer: &document.Officer{Name: "Lê Văn C"}}
}

// TestSignedStatus: a unit's signed status verifies, says what it signs,
// and matches the status exactly; a status signed by another unit's
// certificate, a changed field, a detached signature, a damaged one, an
// expired certificate and a statement of another type do not.
func TestSignedStatus(t *testing.T) {
	sA, sB := signer(t, unitA, pki.ECDSAP256, nil), signer(t, unitB, pki.RSA2048, nil)
	st := status01(unitA)
	der, err := SignStatus(st, sha, sA)
	if err != nil {
		t.Fatal(err)
	}
	r := VerifyStatus(der, Options{Trust: fx.trust})
	if !r.Valid || r.Statement == nil || r.Statement.ContainerSHA256 != sha || r.Signature.Identifier != string(unitA) {
		t.Fatalf("%+v", r)
	}
	if err := r.Statement.Matches(st); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*document.Status){
		"time":        func(s *document.Status) { s.Time = s.Time.Add(time.Nanosecond) },
		"code":        func(s *document.Status) { s.Code = document.StatusAccepted },
		"description": func(s *document.Status) { s.Description += "." },
		"officer":     func(s *document.Status) { s.Officer = nil },
		"document":    func(s *document.Status) { s.DocumentID = document.NewID(time.Now()) },
	} {
		other := st
		change(&other)
		if err := r.Statement.Matches(other); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s changed: %v", name, err)
		}
	}

	wrongUnit, _ := SignStatus(st, sha, sB)
	detached, _ := SignDetached([]byte(`{"version":1,"type":"edx.status"}`), sA)
	damaged := append([]byte{}, der...)
	damaged[len(damaged)-10] ^= 1
	receipt, _ := SignReceipt(&Receipt{DocumentID: st.DocumentID, From: unitB, To: []document.UnitID{unitA}, ContainerSHA256: sha, AcceptedAt: time.Now()}, sA)
	extra := func() []byte {
		var m map[string]any
		b, _ := json.Marshal(NewStatusStatement(st, sha))
		json.Unmarshal(b, &m)
		m["delivered_to"] = "someone else"
		b, _ = json.Marshal(m)
		der, _ := sign(b, sA, false)
		return der
	}()
	for _, tc := range []struct {
		name string
		der  []byte
		at   time.Time
		want reason.Code
	}{
		{"another unit's certificate", wrongUnit, time.Time{}, reason.SignatureUnitMismatch},
		{"detached", detached, time.Time{}, reason.SignatureMalformed},
		{"damaged", damaged, time.Time{}, ""},
		{"a receipt", receipt, time.Time{}, reason.SignatureMalformed},
		{"an unknown field", extra, time.Time{}, reason.SignatureMalformed},
		{"checked after the certificate expired", der, time.Now().AddDate(30, 0, 0), reason.SignatureExpired},
		{"not CMS", []byte("{}"), time.Time{}, reason.SignatureMalformed},
	} {
		r := VerifyStatus(tc.der, Options{Trust: fx.trust, At: tc.at})
		if r.Valid || (tc.want != "" && !r.Reasons.Has(tc.want)) {
			t.Errorf("%s: valid %v, reasons %v, want %s", tc.name, r.Valid, r.Reasons, tc.want)
		}
	}
	if _, err := SignStatus(st, "no digest", sA); err == nil {
		t.Error("a status signed without a container digest")
	}
}

// TestOpenSSLVerifiesSignedStatus: an auditor verifies a unit's signed
// status with openssl cms -verify alone, and reads what it says.
func TestOpenSSLVerifiesSignedStatus(t *testing.T) {
	ossl := openssl(t)
	dir := t.TempDir()
	st := status01(unitA)
	der, err := SignStatus(st, sha, signer(t, unitA, pki.ECDSAP256, nil))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "status.p7s")
	os.WriteFile(p, der, 0o644)
	out := run(t, dir, ossl, "cms", "-verify", "-in", p, "-inform", "DER", "-CAfile", fx.ca.RootsPath(), "-purpose", "any", "-out", "statement.json")
	if !strings.Contains(out, "Verification successful") {
		t.Fatalf("openssl: %s", out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "statement.json"))
	var got StatusStatement
	if err := json.Unmarshal(b, &got); err != nil || got.Matches(st) != nil || got.ContainerSHA256 != sha || got.Type != TypeStatus {
		t.Fatalf("openssl printed %s (%v)", b, err)
	}
}

// TestSignedWitnessKey: a unit's statement of its witness key verifies and
// names the unit; another unit's certificate does not.
func TestSignedWitnessKey(t *testing.T) {
	sA := signer(t, unitA, pki.ECDSAP256, nil)
	der, err := SignWitnessKey(unitA, "edx-witness/000.01.00.H29+01234567+AQ", time.Now(), sA)
	if err != nil {
		t.Fatal(err)
	}
	st, _, rs := VerifyWitnessKey(der, Options{Trust: fx.trust})
	if len(rs) > 0 || st == nil || st.Unit != unitA {
		t.Fatalf("%+v %v", st, rs)
	}
	der, _ = SignWitnessKey(unitB, "k", time.Now(), sA)
	if _, _, rs := VerifyWitnessKey(der, Options{Trust: fx.trust}); !rs.Has(reason.SignatureUnitMismatch) {
		t.Fatalf("unit B's key signed by unit A: %v", rs)
	}
	status, _ := SignStatus(status01(unitA), sha, sA)
	if st, _, rs := VerifyWitnessKey(status, Options{Trust: fx.trust}); st != nil || !rs.Has(reason.SignatureMalformed) {
		t.Fatalf("a status as a witness key: %v", rs)
	}
}

// BenchmarkSignStatus and BenchmarkVerifyStatus: the cost of a signed
// status, to the agent that signs it and to the hub that checks it (chain
// and CRL check included).
func BenchmarkSignStatus(b *testing.B) {
	s := signer(b, unitA, pki.ECDSAP256, nil)
	st := status01(unitA)
	for b.Loop() {
		if _, err := SignStatus(st, sha, s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyStatus(b *testing.B) {
	der, err := SignStatus(status01(unitA), sha, signer(b, unitA, pki.ECDSAP256, nil))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if r := VerifyStatus(der, Options{Trust: fx.trust}); !r.Valid {
			b.Fatal(r.Reasons)
		}
	}
}

// TestSignerChainChecked: a signer's chain is checked before it signs,
// once per chain (checkSignerChain): the same leaf with a parent that did
// not issue it cannot sign, even after it signed with its own chain, and
// the signature names the leaf's issuer and carries the whole chain.
func TestSignerChainChecked(t *testing.T) {
	s := signer(t, unitA, pki.ECDSAP256, nil)
	st := status01(unitA)
	for range 2 {
		der, err := SignStatus(st, sha, s)
		if err != nil {
			t.Fatal(err)
		}
		if r := VerifyStatus(der, Options{Trust: fx.trust}); !r.Valid || len(r.Signature.Chain) != 3 {
			t.Fatalf("%+v", r)
		}
		p7, err := parseCMS(der)
		if err != nil || len(p7.Certificates) != 2 || p7.Certificates[1] == nil || !p7.Certificates[1].Equal(fx.ca.Issuing) {
			t.Fatalf("certificates in the signature: %v %v", p7, err)
		}
	}
	other, err := pki.InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	broken := &pki.Signer{Key: s.Key, Chain: []*x509.Certificate{s.Cert(), other.Issuing}}
	if _, err := SignStatus(st, sha, broken); err == nil || !strings.Contains(err.Error(), "not signed by the next in its chain") {
		t.Fatalf("a chain whose parent did not issue the leaf: %v", err)
	}
}
