package tsa

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/timestamp"

	"github.com/edxhub/edx/pkg/pki"
)

// devTSA is a development CA, its TSA behind an HTTP server, and the roots.
type devTSA struct {
	ca     *pki.CA
	srv    *Server
	http   *httptest.Server
	roots  *x509.CertPool
	keyP   string
	certP  string
	rootsP string
}

func newDevTSA(t *testing.T) *devTSA {
	t.Helper()
	ca, err := pki.InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	keyP, certP, err := ca.EnsureTSA("edx development TSA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := LoadServer(keyP, certP, "")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root)
	return &devTSA{ca: ca, srv: srv, http: hs, roots: roots, keyP: keyP, certP: certP, rootsP: ca.RootsPath()}
}

func openssl(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDevTSATokenVerifiesWithOpenSSL(t *testing.T) {
	d := newDevTSA(t)
	dir := t.TempDir()
	data := []byte("edx checkpoint\n1000\nroot hash\n")
	digest := sha256.Sum256(data)
	c, err := NewClient(Config{URLs: []string{d.http.URL}, Roots: d.roots})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	tok, err := c.Timestamp(t.Context(), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	gen, err := Verify(tok, digest[:], d.roots, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if gen.Before(before.Truncate(time.Second)) || gen.After(time.Now()) {
		t.Fatalf("genTime %s is not now", gen)
	}
	info, err := VerifyToken(tok, digest[:], VerifyOptions{Roots: d.roots, Policy: OIDDevPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Chain) != 3 || info.Accuracy != time.Second || info.Nonce == nil {
		t.Fatalf("token info: chain %d, accuracy %s, nonce %v", len(info.Chain), info.Accuracy, info.Nonce)
	}

	tokP := filepath.Join(dir, "checkpoint.tst")
	dataP := filepath.Join(dir, "checkpoint")
	os.WriteFile(tokP, tok, 0o644)
	os.WriteFile(dataP, data, 0o644)
	// The token carries the TSA's chain; -untrusted with the TSA's own file
	// (what an auditor is handed) works as well.
	for _, args := range [][]string{
		{"ts", "-verify", "-token_in", "-in", tokP, "-data", dataP, "-CAfile", d.rootsP},
		{"ts", "-verify", "-token_in", "-in", tokP, "-digest", hex.EncodeToString(digest[:]), "-CAfile", d.rootsP, "-untrusted", d.certP},
	} {
		if out := openssl(t, dir, args...); !strings.Contains(out, "Verification: OK") {
			t.Fatalf("openssl %v: %s", args, out)
		}
	}
	// And openssl refuses it for other data.
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("another checkpoint"), 0o644)
	cmd := exec.Command("openssl", "ts", "-verify", "-token_in", "-in", tokP, "-data", other, "-CAfile", d.rootsP)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("openssl verified a token over other data:\n%s", out)
	}
}

// independentTSA is a TSA made with nothing but OpenSSL: its own root, a
// certificate with the critical timeStamping usage, a ts configuration, and
// `openssl ts -reply` behind HTTP.
func independentTSA(t *testing.T, essAlg string) (url string, roots *x509.CertPool, rootsP string) {
	t.Helper()
	dir := t.TempDir()
	openssl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "root.key", "-out", "root.pem", "-days", "30", "-subj", "/C=VN/O=Independent/CN=Independent Root",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	openssl(t, dir, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
		"-subj", "/C=VN/O=Independent/CN=Independent TSA")
	os.WriteFile(filepath.Join(dir, "ext.cnf"), []byte(
		"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=critical,timeStamping\n"), 0o644)
	openssl(t, dir, "x509", "-req", "-in", "tsa.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "7",
		"-days", "30", "-sha256", "-extfile", "ext.cnf", "-out", "tsa.pem")
	os.WriteFile(filepath.Join(dir, "serial"), []byte("01\n"), 0o644)
	cnf := "[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\n" +
		"dir = " + dir + "\n" +
		"serial = $dir/serial\ncrypto_device = builtin\nsigner_cert = $dir/tsa.pem\nsigner_key = $dir/tsa.key\n" +
		"signer_digest = sha256\ndefault_policy = 1.2.3.4.1\nother_policies = 1.2.3.4.5\ndigests = sha256, sha384, sha512\n" +
		"accuracy = secs:1\nordering = no\ntsa_name = yes\ness_cert_id_chain = no\ness_cert_id_alg = " + essAlg + "\n"
	os.WriteFile(filepath.Join(dir, "ts.cnf"), []byte(cnf), 0o644)

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := os.CreateTemp(dir, "q-*.tsq")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer os.Remove(q.Name())
		if _, err := q.ReadFrom(http.MaxBytesReader(w, r.Body, 1<<14)); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		q.Close()
		out := q.Name() + ".tsr"
		defer os.Remove(out)
		cmd := exec.Command("openssl", "ts", "-reply", "-config", filepath.Join(dir, "ts.cnf"), "-queryfile", q.Name(), "-out", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			http.Error(w, string(b), 500)
			return
		}
		resp, err := os.ReadFile(out)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", ReplyContentType)
		w.Write(resp)
	})
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	b, err := os.ReadFile(filepath.Join(dir, "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AppendCertsFromPEM(b)
	return hs.URL, roots, filepath.Join(dir, "root.pem")
}

func TestIndependentOpenSSLTSA(t *testing.T) {
	for _, ess := range []string{"sha256", "sha1"} {
		t.Run("ess_cert_id_alg="+ess, func(t *testing.T) {
			url, roots, _ := independentTSA(t, ess)
			digest := sha256.Sum256([]byte("a checkpoint"))
			c, err := NewClient(Config{URLs: []string{url}, Roots: roots})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.Timestamp(t.Context(), digest[:])
			if err != nil {
				t.Fatal(err)
			}
			info, err := VerifyToken(tok, digest[:], VerifyOptions{Roots: roots, At: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			if info.Policy.String() != "1.2.3.4.1" {
				t.Fatalf("policy %s", info.Policy)
			}
			// A policy the TSA has is granted; one it lacks is refused.
			c2, _ := NewClient(Config{URLs: []string{url}, Roots: roots, Policy: "1.2.3.4.5"})
			if _, err := c2.Timestamp(t.Context(), digest[:]); err != nil {
				t.Fatalf("policy 1.2.3.4.5: %v", err)
			}
			c3, _ := NewClient(Config{URLs: []string{url}, Roots: roots, Policy: "1.2.3.4.9"})
			if _, err := c3.Timestamp(t.Context(), digest[:]); err == nil {
				t.Fatal("a TSA granted a policy it does not have")
			}
			// Our roots do not trust it.
			d := newDevTSA(t)
			if _, err := Verify(tok, digest[:], d.roots, time.Time{}); err == nil {
				t.Fatal("a token from an untrusted TSA verified")
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	d := newDevTSA(t)
	digest := sha256.Sum256([]byte("document"))
	other := sha256.Sum256([]byte("another document"))
	tok, err := Timestamp(t.Context(), []string{d.http.URL}, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(tok, digest[:], d.roots, time.Time{}); err != nil {
		t.Fatalf("the good token: %v", err)
	}
	if _, err := Verify(tok, other[:], d.roots, time.Time{}); err == nil || !strings.Contains(err.Error(), "another digest") {
		t.Fatalf("a token for another digest: %v", err)
	}
	stranger := newDevTSA(t)
	if _, err := Verify(tok, digest[:], stranger.roots, time.Time{}); err == nil {
		t.Fatal("a token from an untrusted TSA verified")
	}
	// At genTime (zero) the chain is valid; ten years on the TSA's
	// certificate has expired.
	if _, err := Verify(tok, digest[:], d.roots, time.Now().AddDate(10, 0, 0)); err == nil {
		t.Fatal("a token verified with the TSA's certificate expired")
	}
	if _, err := Verify(tok, digest[:], nil, time.Time{}); err == nil {
		t.Fatal("verify without roots")
	}

	// TSAs whose certificate is not a TSA's: no extended key usage at all
	// (a unit's certificate), and timeStamping that is not critical.
	unitKey, unitCertP, err := d.ca.IssueUnit("000.00.00.H29", "Sở Nội vụ", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	unit, err := pki.LoadSigner(unitKey, unitCertP)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(ServerConfig{Key: unit.Key, Chain: unit.Chain}); err == nil {
		t.Fatal("NewServer accepted a certificate without timeStamping")
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	nonCritical, err := x509.CreateCertificate(nil, &x509.Certificate{
		SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "lax TSA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping},
	}, d.ca.Issuing, key.Public(), issuingKey(t, d.ca))
	if err != nil {
		t.Fatal(err)
	}
	laxCert, _ := x509.ParseCertificate(nonCritical)
	for name, chain := range map[string][]*x509.Certificate{
		"no EKU":           unit.Chain,
		"non-critical EKU": {laxCert, d.ca.Issuing},
	} {
		t.Run(name, func(t *testing.T) {
			k := unit.Key
			if name != "no EKU" {
				k = key
			}
			bad := &Server{cfg: ServerConfig{Key: k, Chain: chain, Policy: OIDDevPolicy, Accuracy: time.Second, Now: time.Now}}
			hs := httptest.NewServer(bad)
			defer hs.Close()
			tok, err := Timestamp(t.Context(), []string{hs.URL}, digest[:])
			if err != nil {
				t.Fatalf("the lax TSA answered no token: %v", err)
			}
			if _, err := Verify(tok, digest[:], d.roots, time.Time{}); err == nil || !strings.Contains(err.Error(), "not a time-stamping authority") {
				t.Fatalf("Verify of a token from a non-TSA certificate: %v", err)
			}
			c, _ := NewClient(Config{URLs: []string{hs.URL}, Roots: d.roots})
			if _, err := c.Timestamp(t.Context(), digest[:]); err == nil {
				t.Fatal("the client returned a token from a non-TSA certificate")
			}
		})
	}
}

// issuingKey reopens the development CA to sign a certificate outside its
// profiles (the test's lax TSA).
func issuingKey(t *testing.T, ca *pki.CA) any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ca.Dir, "ca", "issuing.key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestClientFallsBackAndRefusesBadAnswers(t *testing.T) {
	d := newDevTSA(t)
	digest := sha256.Sum256([]byte("x"))
	hang := hangingServer(t)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ReplyContentType)
		w.Write(make([]byte, MaxTokenSize+10))
	}))
	defer huge.Close()
	// A replayed answer: a genuine token, but for an earlier request.
	old, err := d.srv.Respond(mustQuery(t, digest[:], big.NewInt(42)))
	if err != nil {
		t.Fatal(err)
	}
	replay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ReplyContentType)
		w.Write(old)
	}))
	defer replay.Close()
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>captive portal</html>"))
	}))
	defer html.Close()

	c, err := NewClient(Config{
		URLs:    []string{hang.URL, down.URL, huge.URL, replay.URL, html.URL, d.http.URL},
		Timeout: 300 * time.Millisecond,
		Roots:   d.roots,
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := c.Timestamp(t.Context(), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(tok, digest[:], d.roots, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// Without the good TSA, the error names every failure.
	c, _ = NewClient(Config{URLs: []string{hang.URL, down.URL, huge.URL, replay.URL, html.URL}, Timeout: 300 * time.Millisecond})
	_, err = c.Timestamp(t.Context(), digest[:])
	if err == nil {
		t.Fatal("no good TSA, yet a token")
	}
	for _, want := range []string{"deadline exceeded", "503", "over 262144 bytes", "nonce", "answer of type"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if _, err := c.Timestamp(t.Context(), []byte("short")); err == nil {
		t.Fatal("a 5-byte digest was accepted")
	}
	for _, bad := range []Config{{}, {URLs: []string{"ftp://x"}}, {URLs: []string{"http://x"}, Policy: "1..2"}} {
		if _, err := NewClient(bad); err == nil {
			t.Errorf("NewClient(%+v) accepted", bad)
		}
	}
}

func mustQuery(t *testing.T, digest []byte, nonce *big.Int) []byte {
	t.Helper()
	req := &timestamp.Request{HashAlgorithm: 5 /* crypto.SHA256 */, HashedMessage: digest, Certificates: true, Nonce: nonce}
	q, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestServerRefusesBadQueries(t *testing.T) {
	d := newDevTSA(t)
	post := func(ct string, body []byte) *http.Response {
		resp, err := http.Post(d.http.URL, ct, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if resp, _ := http.Get(d.http.URL); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	if resp := post("text/plain", []byte("x")); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %d", resp.StatusCode)
	}
	if resp := post(QueryContentType, make([]byte, maxQuerySize+1)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("huge query: %d", resp.StatusCode)
	}
	digest := sha256.Sum256([]byte("x"))
	sha1Query, _ := (&timestamp.Request{HashAlgorithm: 3 /* SHA-1 */, HashedMessage: digest[:20]}).Marshal()
	shortQuery, _ := (&timestamp.Request{HashAlgorithm: 5, HashedMessage: digest[:10]}).Marshal()
	policyQuery, _ := (&timestamp.Request{HashAlgorithm: 5, HashedMessage: digest[:], TSAPolicyOID: []int{1, 2, 3}}).Marshal()
	for name, q := range map[string][]byte{
		"garbage":      []byte("not DER"),
		"sha1":         sha1Query,
		"short digest": shortQuery,
		"other policy": policyQuery,
	} {
		resp, err := d.srv.Respond(q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := timestamp.ParseResponse(resp); err == nil || !strings.Contains(err.Error(), "rejected") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A query without certReq gets a token without certificates, which
	// verifies once the TSA's chain is given as intermediates.
	noCerts, _ := (&timestamp.Request{HashAlgorithm: 5, HashedMessage: digest[:]}).Marshal()
	resp, err := d.srv.Respond(noCerts)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := timestamp.ParseResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts.Certificates) != 0 {
		t.Fatalf("a token without certReq carries %d certificates", len(ts.Certificates))
	}
	if _, err := Verify(ts.RawToken, digest[:], d.roots, time.Time{}); err == nil {
		t.Fatal("a token without the TSA's certificate verified without it")
	}
	chain, _ := os.ReadFile(d.certP)
	certs, _ := pki.ParseCertificates(chain)
	if _, err := VerifyToken(ts.RawToken, digest[:], VerifyOptions{Roots: d.roots, Intermediates: certs}); err != nil {
		t.Fatal(err)
	}
}

func TestContextCancelStopsTrying(t *testing.T) {
	hang := hangingServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d := newDevTSA(t)
	digest := sha256.Sum256([]byte("x"))
	if _, err := Timestamp(ctx, []string{hang.URL, d.http.URL}, digest[:]); err == nil {
		t.Fatal("a cancelled context still got a token")
	}
}

// hangingServer accepts a query and never answers (until the test ends).
func hangingServer(t *testing.T) *httptest.Server {
	stop := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the server notices a closed connection only once the body is read
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(func() { close(stop); hs.Close() })
	return hs
}
