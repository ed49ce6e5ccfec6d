package container

import (
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/pki"
)

// TestLogKeyStatement: a hub's statement of its log's key verifies with the
// trust roots when the hub's receipt certificate (the hub signer profile)
// signed it; one signed by a unit's certificate, under other roots, or
// naming a key of another origin does not.
func TestLogKeyStatement(t *testing.T) {
	hub, err := pki.LoadSigner(fx.ca.HubKeyPath(), fx.ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	const origin = "edx.local/hub/one"
	_, vkey, _ := note.GenerateKey(rand.Reader, origin)
	_, other, _ := note.GenerateKey(rand.Reader, "edx.local/hub/two")
	b, err := SignLogKey(origin, vkey, time.Now(), hub)
	if err != nil {
		t.Fatal(err)
	}
	st, _, rs := VerifyLogKey(b, Options{Trust: fx.trust})
	if len(rs) > 0 || st.Origin != origin || st.Key != vkey {
		t.Fatalf("the hub's statement: %+v %v", st, rs)
	}
	byUnit, _ := SignLogKey(origin, vkey, time.Now(), signer(t, unitA, pki.ECDSAP256, nil))
	if _, _, rs := VerifyLogKey(byUnit, Options{Trust: fx.trust}); len(rs) == 0 {
		t.Fatal("a statement signed by a unit verifies")
	}
	elsewhere, err := pki.InitCA(t.TempDir(), "Elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	otherHub, _ := pki.LoadSigner(elsewhere.HubKeyPath(), elsewhere.HubCertPath())
	foreign, _ := SignLogKey(origin, vkey, time.Now(), otherHub)
	if _, _, rs := VerifyLogKey(foreign, Options{Trust: fx.trust}); len(rs) == 0 {
		t.Fatal("a statement by another city's hub verifies")
	}
	mismatched, _ := SignLogKey(origin, other, time.Now(), hub)
	if _, _, rs := VerifyLogKey(mismatched, Options{Trust: fx.trust}); len(rs) == 0 {
		t.Fatal("a statement of a key named for another log verifies")
	}
	if _, _, rs := VerifyLogKey(b, Options{}); len(rs) == 0 {
		t.Fatal("a statement verifies without trust roots")
	}
}
