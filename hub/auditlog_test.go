package hub

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/tlog"
	"github.com/edxhub/edx/pkg/audit"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/tsa"
)

// opensslTSA is a time-stamping authority made with nothing but OpenSSL: its
// own root, a certificate with the critical timeStamping usage, and
// `openssl ts -reply` behind HTTP. It returns its URL and the path of its
// root (PEM).
func opensslTSA(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root.key", "-out", "root.pem",
		"-days", "30", "-subj", "/C=VN/O=Independent TSA/CN=Independent TSA Root",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/C=VN/O=Independent TSA/CN=Independent TSA")
	os.WriteFile(filepath.Join(dir, "ext.cnf"), []byte("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=critical,timeStamping\n"), 0o644)
	run("x509", "-req", "-in", "tsa.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "7", "-days", "30", "-sha256", "-extfile", "ext.cnf", "-out", "tsa.pem")
	os.WriteFile(filepath.Join(dir, "serial"), []byte("01\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ts.cnf"), []byte("[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\ndir = "+dir+"\n"+
		"serial = $dir/serial\ncrypto_device = builtin\nsigner_cert = $dir/tsa.pem\nsigner_key = $dir/tsa.key\n"+
		"signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256, sha384, sha512\n"+
		"accuracy = secs:1\nordering = no\ntsa_name = yes\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n"), 0o644)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		if b, err := exec.Command("openssl", "ts", "-reply", "-config", filepath.Join(dir, "ts.cnf"), "-queryfile", q.Name(), "-out", out).CombinedOutput(); err != nil {
			http.Error(w, string(b), 500)
			return
		}
		resp, err := os.ReadFile(out)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", tsa.ReplyContentType)
		w.Write(resp)
	}))
	t.Cleanup(hs.Close)
	return hs.URL, filepath.Join(dir, "root.pem")
}

// get fetches a path of the hub's HTTP API with the admin token.
func (r *running) get(path string) (int, []byte) {
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

// bundle waits until the document's audit bundle can be made (its entry in
// a time-stamped checkpoint) and returns it.
func (r *running) bundle(id string) *audit.Bundle {
	r.t.Helper()
	var b []byte
	eventually(r.t, "the audit bundle of "+id, func() bool {
		code, body := r.get("/api/v1/documents/" + id + "/bundle")
		b = body
		return code == http.StatusOK
	})
	ab, err := audit.Parse(b)
	if err != nil {
		r.t.Fatal(err)
	}
	return ab
}

// TestEvidence is issue #11's "done when", through the real hub, NATS, S3
// and an independent TSA (OpenSSL's): a document accepted today has a
// receipt naming its log entry and an audit bundle that verifies offline,
// with the OpenSSL TSA's token checked by `openssl ts -verify`; it verifies
// as well with the verifier's clock in 2036, past every certificate's end
// (where the container alone no longer verifies); a certificate revoked
// after acceptance leaves it valid, while a revocation dated before it
// would not, and the hub rejects what the revoked certificate signs next;
// every decision (trust, certificates, units, CRLs, acceptances,
// rejections) is in the log the hub serves; and a container deleted from
// the archive is reported missing by the comparison of the archive with the
// log.
func TestEvidence(t *testing.T) {
	cfg := testConfig(t)
	tsaURL, tsaRoot := opensslTSA(t)
	cfg.TSA.URLs = []string{tsaURL}
	cfg.TSA.Roots = tsaRoot
	cfg.Tlog.TimestampInterval = time.Second
	cfg.Tlog.CheckpointInterval = 200 * time.Millisecond
	r := startHub(t, cfg)
	a, b := r.register(uA), r.register(uB)
	id := a.send(a.signer, uB)
	n := a.notice()
	if n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	rc := container.VerifyReceipt(n.Receipt, n.SHA256, container.Options{Trust: r.trust}).Receipt
	if rc == nil || rc.Log == nil || rc.Log.Origin != r.Log().Origin() {
		t.Fatalf("the receipt names no entry of the hub's log: %+v", rc)
	}
	bundle := r.bundle(string(id))
	roots, err := os.ReadFile(r.cfg.PKI.Trust)
	if err != nil {
		t.Fatal(err)
	}
	tsaRoots, _ := os.ReadFile(tsaRoot)
	var info struct{ Log LogInfo }
	if code := r.api("GET", "/api/v1/log", nil, &info.Log); code != http.StatusOK {
		t.Fatalf("GET /api/v1/log: %d", code)
	}
	lk, err := note.NewVerifier(info.Log.VKey)
	if err != nil {
		t.Fatal(err)
	}
	opts := audit.Options{Roots: roots, TSARoots: tsaRoots, LogKeys: []note.Verifier{lk}}
	rep, err := audit.Verify(bundle, opts)
	if err != nil || !rep.Valid {
		t.Fatalf("the bundle does not verify: %v %+v", err, rep)
	}
	var names []string
	for _, c := range rep.Checks {
		names = append(names, c.Name)
	}
	for _, want := range []string{"log", "timestamp", "entry", "crls", "container", "receipt"} {
		if !slices.Contains(names, want) {
			t.Errorf("the report says nothing of %s: %v", want, names)
		}
	}
	// OpenSSL checks the independent TSA's token over the checkpoint.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "checkpoint"), bundle.Proof.Checkpoint, 0o644)
	os.WriteFile(filepath.Join(dir, "checkpoint.tsr"), bundle.Proof.Timestamp, 0o644)
	out, err := exec.Command("openssl", "ts", "-verify", "-token_in", "-in", filepath.Join(dir, "checkpoint.tsr"),
		"-data", filepath.Join(dir, "checkpoint"), "-CAfile", tsaRoot).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification: OK") {
		t.Fatalf("openssl ts -verify: %v\n%s", err, out)
	}

	// 2036: every certificate has ended. The container alone no longer
	// verifies; the bundle does, from the time-stamp.
	in2036 := time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, cr := container.VerifyBytes(bundle.Container, container.DefaultLimits, container.Options{Trust: r.trust, At: in2036}); cr.Valid {
		t.Fatal("the container verifies in 2036 on its own: the test proves nothing")
	}
	late := opts
	late.Now = in2036
	if rep, err := audit.Verify(bundle, late); err != nil || !rep.Valid {
		t.Fatalf("the bundle does not verify in 2036: %v %+v", err, rep)
	}

	// A's certificate revoked now, after the acceptance and its
	// time-stamp: the document stays valid with the new CRL.
	revokedAt := time.Now()
	if err := r.ca.Revoke(a.signer.Cert().SerialNumber, revokedAt); err != nil {
		t.Fatal(err)
	}
	newCRL, err := r.ca.CRL()
	if err != nil {
		t.Fatal(err)
	}
	withCRL := opts
	withCRL.CRLs = [][]byte{newCRL}
	if rep, err := audit.Verify(bundle, withCRL); err != nil || !rep.Valid {
		t.Fatalf("revoked after acceptance, the bundle no longer verifies: %v %+v", err, rep)
	}
	// The same revocation dated before the acceptance is what an auditor
	// would catch.
	backdated := revokedCRL(t, r, a.signer.Cert(), rc.AcceptedAt.Add(-time.Minute))
	before := opts
	before.CRLs = [][]byte{backdated}
	if rep, err := audit.Verify(bundle, before); err != nil || rep.Valid {
		t.Fatalf("a revocation dated before acceptance left the bundle valid: %v %+v", err, rep)
	}
	// The hub revokes A's NATS credentials with its certificate; A gets a
	// new certificate and credentials. A document still signed with the
	// revoked certificate is rejected, and the rejection is logged naming
	// the CRL in force.
	a.waitClosed("certificate revoked")
	var rb service.UnitBundle
	if code := r.api("POST", "/api/v1/units/"+string(uA)+"/rotate", service.RotateRequest{NewCert: true}, &rb); code != http.StatusOK {
		t.Fatalf("rotate: %d", code)
	}
	a2 := r.agentFrom(uA, &rb)
	id2 := a2.send(a.signer, uB)
	n2 := a2.notice()
	if n2.Type != protocol.NoticeRejected || !hasReason(n2.Reasons, reason.SignatureRevoked) {
		t.Fatalf("a document signed with a revoked certificate: %+v", n2)
	}

	// The log, as the hub serves it to anyone: every kind of decision.
	cl, err := evidence.NewClient(info.Log.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	newSum := sha256hexOf(derOf(t, newCRL))
	kinds := map[evidence.Kind]int{}
	var rejected *evidence.Entry
	eventually(t, "the rejection in a published checkpoint", func() bool {
		kinds, rejected = map[evidence.Kind]int{}, nil
		raw, err := cl.ReadCheckpoint(t.Context())
		if err != nil {
			return false
		}
		cp, err := evidence.OpenCheckpoint(raw, lk.Name(), lk)
		if err != nil {
			t.Fatal(err)
		}
		err = evidence.ReadAll(t.Context(), cl.ReadEntryBundle, cp, func(_ uint64, b []byte) error {
			e, err := evidence.ParseEntry(b)
			if err != nil {
				return err
			}
			kinds[e.Kind]++
			if e.Kind == evidence.Rejected && e.Doc == string(id2) {
				rejected = e
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return rejected != nil
	})
	for _, k := range []evidence.Kind{evidence.Trust, evidence.Certificate, evidence.UnitChange, evidence.CRL, evidence.Accepted, evidence.Rejected} {
		if kinds[k] == 0 {
			t.Errorf("no %s entry in the log: %v", k, kinds)
		}
	}
	if kinds[evidence.UnitChange] < 2 || kinds[evidence.Certificate] < 3 {
		t.Errorf("units and certificates: %v (want both units registered, their certificates and the hub's)", kinds)
	}
	if !slices.Contains(rejected.CRLs, newSum) || !slices.Contains(rejected.Reasons, string(reason.SignatureRevoked)) {
		t.Errorf("the rejection's entry %+v does not name the revocation and the CRL %s", rejected, newSum)
	}
	_ = b

	// A container deleted from the archive (this test archive has no
	// object lock): the comparison with the log reports it.
	sources := []tlog.Source{tlog.HTTPSource(cl, info.Log.URL, lk)}
	cmp, err := tlog.CompareArchive(t.Context(), r.arch, sources)
	if err != nil || len(cmp.Missing) != 0 || cmp.Accepted != 1 || cmp.Archived != 1 {
		t.Fatalf("before the deletion: %v %+v", err, cmp)
	}
	s3, err := minio.New(r.cfg.S3.Archive.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(r.cfg.S3.Archive.AccessKey, r.cfg.S3.Archive.SecretKey, ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.RemoveObject(t.Context(), r.cfg.S3.Archive.Bucket, projection.ContainerKey(id), minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	cmp, err = tlog.CompareArchive(t.Context(), r.arch, sources)
	if err != nil || len(cmp.Missing) != 1 || cmp.Missing[0].Doc != id || cmp.Missing[0].What != "container" {
		t.Fatalf("after the deletion: %v %+v", err, cmp)
	}
}

// revokedCRL is a CRL of the development CA revoking cert at revokedAt,
// signed now (as a CA that backdates a revocation would).
func revokedCRL(t *testing.T, r *running, cert *x509.Certificate, revokedAt time.Time) []byte {
	t.Helper()
	key, err := readIssuingKey(r.ca)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(nil, &x509.RevocationList{
		Number: big.NewInt(now.UnixNano()), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: cert.SerialNumber, RevocationTime: revokedAt}},
	}, r.ca.Issuing, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func hasReason(rs reason.List, c reason.Code) bool {
	return slices.ContainsFunc(rs, func(r reason.Reason) bool { return r.Code == c })
}

func derOf(t *testing.T, b []byte) []byte {
	if p, _ := pem.Decode(b); p != nil {
		return p.Bytes
	}
	return b
}

func sha256hexOf(b []byte) string { return sha256Hex(b) }

// TestHubsHaveTheirOwnLogs: on a cluster each hub keeps its own log (its
// own origin and key: tessera's POSIX writer is single), and a receipt
// names the log of the hub that accepted the document. A hub proves, and
// bundles, a document another hub accepted, from that hub's log mirrored
// in the archive, with the other hub gone. A hub given another hub's
// origin refuses to start.
func TestHubsHaveTheirOwnLogs(t *testing.T) {
	c := newCluster(t)
	c.base.Tlog.TimestampInterval = time.Second
	c.base.Tlog.CheckpointInterval = 200 * time.Millisecond
	h1 := c.hub()
	a := h1.register(uA)
	h1.register(uB)
	h2 := c.hub()
	if h1.Log().Origin() == h2.Log().Origin() {
		t.Fatalf("two hubs share the origin %s", h1.Log().Origin())
	}
	h1.stop() // hub 2 decides alone
	id := a.send(a.signer, uB)
	n := a.notice()
	if n.Type != protocol.NoticeAccepted {
		t.Fatalf("notice %+v", n)
	}
	rc := container.VerifyReceipt(n.Receipt, n.SHA256, container.Options{Trust: h2.trust}).Receipt
	if rc == nil || rc.Log == nil || rc.Log.Origin != h2.Log().Origin() {
		t.Fatalf("the receipt does not name hub 2's log: %+v", rc)
	}
	h2key := h2.tlogVKey
	// Once hub 2 has time-stamped and mirrored its log, it goes away.
	eventually(t, "hub 2's log mirrored with the entry", func() bool {
		m := tlog.OpenMirror(h2.arch, projection.LogPrefix(rc.Log.Origin))
		sizes, err := m.Sizes(t.Context())
		return err == nil && len(sizes) > 0 && sizes[len(sizes)-1] > rc.Log.Index
	})
	h2.stop()
	h3 := c.hub()
	eventually(t, "hub 3 has the document", func() bool {
		code, _ := h3.get("/api/v1/documents/" + string(id))
		return code == http.StatusOK
	})
	var dp service.DocumentProof
	if code := h3.api("GET", "/api/v1/documents/"+string(id)+"/proof", nil, &dp); code != http.StatusOK {
		t.Fatalf("hub 3's proof of a document hub 2 accepted: %d", code)
	}
	lk, err := note.NewVerifier(h2key)
	if err != nil {
		t.Fatal(err)
	}
	tsaRoots := x509.NewCertPool()
	tsaRoots.AddCert(h3.ca.Root)
	v, err := dp.Proof.Verify(evidence.ProofOptions{Origin: dp.Origin, LogKey: lk, TSARoots: tsaRoots, RequireTimestamp: true})
	if err != nil || v.Entry.Doc != string(id) || dp.Origin != rc.Log.Origin {
		t.Fatalf("the proof hub 3 gives: %v %+v", err, v)
	}
	roots, _ := os.ReadFile(h3.cfg.PKI.Trust)
	rep, err := audit.Verify(h3.bundle(string(id)), audit.Options{Roots: roots, LogKeys: []note.Verifier{lk}})
	if err != nil || !rep.Valid {
		t.Fatalf("hub 3's bundle of hub 2's document: %v %+v", err, rep)
	}

	// Another hub under hub 2's origin, with a key of its own.
	cfg := c.base
	cfg.Data = t.TempDir()
	cfg.Tlog.Origin = rc.Log.Origin
	if h, err := New(t.Context(), cfg, testLog(t)); err == nil {
		h.Close()
		t.Fatal("a hub started under another hub's log origin")
	} else if !strings.Contains(err.Error(), "another log key") {
		t.Fatalf("the refusal does not say why: %v", err)
	}
}
