package tsa

import (
	"crypto/sha256"
	"crypto/x509"
	"testing"
	"time"

	"github.com/digitorus/timestamp"

	"github.com/edxhub/edx/pkg/pki"
)

// FuzzVerifyToken feeds hostile tokens (a TSA's answer is untrusted input,
// and so is a token an auditor is handed) to the verifier and the response
// parser: they may refuse, never panic, and what verifies says what the TSA
// signed.
func FuzzVerifyToken(f *testing.F) {
	ca, err := pki.InitCA(f.TempDir(), "")
	if err != nil {
		f.Fatal(err)
	}
	keyP, certP, err := ca.EnsureTSA("fuzz TSA")
	if err != nil {
		f.Fatal(err)
	}
	srv, err := LoadServer(keyP, certP, "")
	if err != nil {
		f.Fatal(err)
	}
	digest := sha256.Sum256([]byte("checkpoint"))
	q, _ := (&timestamp.Request{HashAlgorithm: 5, HashedMessage: digest[:], Certificates: true}).Marshal()
	resp, err := srv.Respond(q)
	if err != nil {
		f.Fatal(err)
	}
	ts, err := timestamp.ParseResponse(resp)
	if err != nil {
		f.Fatal(err)
	}
	good := ts.RawToken
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root)
	f.Add(good)
	f.Add(resp)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, tok []byte) {
		timestamp.ParseResponse(tok)
		if info, err := VerifyToken(tok, digest[:], VerifyOptions{Roots: roots, At: time.Now()}); err == nil && !info.Time.Equal(ts.Time) {
			t.Fatalf("a changed token verified with another time: %s", info.Time)
		}
	})
}
