package tlog

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/tsa"
	"github.com/edxhub/edx/pkg/witness"
)

// testTSA is the development TSA from a development CA, over HTTP.
type testTSA struct {
	client *tsa.Client
	roots  *x509.CertPool
	rootsP string
}

func newTestTSA(t testing.TB) *testTSA {
	t.Helper()
	ca, err := pki.InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	k, c, err := ca.EnsureTSA("edx development TSA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := tsa.LoadServer(k, c, "")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root)
	cl, err := tsa.NewClient(tsa.Config{URLs: []string{hs.URL}, Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	return &testTSA{client: cl, roots: roots, rootsP: ca.RootsPath()}
}

type testLog struct {
	*Log
	dir  string
	vkey string
}

// openLog opens a log in dir (the journal, as the hub does for a new log) with the log key in skey.
func openLog(t testing.TB, dir, skey string, ts *testTSA) *testLog {
	t.Helper()
	s, v, vkey, err := ParseKey(skey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := DirBackend(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{Signer: s, Verifier: v}
	if ts != nil {
		deps.Timestamper = ts.client
	}
	l, err := Open(ctx, Config{BatchMaxAge: 20 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond}, b, deps)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			l.Close(context.Background())
		}
	})
	return &testLog{Log: l, dir: dir, vkey: vkey}
}

func newKey(t testing.TB) string {
	skey, _, err := NewKey("edx.test/hub-log")
	if err != nil {
		t.Fatal(err)
	}
	return skey
}

var (
	docID    = string(document.NewID(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)))
	baseTime = time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
)

// entry i is a distinct accepted decision.
func entry(i int, tag string) *evidence.Entry {
	c := sha256.Sum256([]byte(fmt.Sprintf("%s container %d", tag, i)))
	return &evidence.Entry{
		V: evidence.Version, Kind: evidence.Accepted, Time: baseTime.Add(time.Duration(i) * time.Millisecond),
		Doc: docID, Container: hex.EncodeToString(c[:]), Sender: "000.00.00.H29",
		Recipients: []string{fmt.Sprintf("000.00.%02d.H29", i%100)},
	}
}

// appendN appends n entries from concurrent goroutines and returns the
// index each got.
func appendN(t testing.TB, l *Log, from, n int, tag string) map[uint64]int {
	t.Helper()
	var mu sync.Mutex
	got := map[uint64]int{}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := from; i < from+n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			idx, err := l.Append(context.Background(), entry(i, tag))
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			got[idx] = i
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d entries got %d distinct indexes", n, len(got))
	}
	return got
}

func TestAppendProveAndStamp(t *testing.T) {
	ts := newTestTSA(t)
	l := openLog(t, t.TempDir(), newKey(t), ts)
	ctx := t.Context()

	idx := appendN(t, l.Log, 0, 1000, "a")
	for i := uint64(0); i < 1000; i++ {
		if _, ok := idx[i]; !ok {
			t.Fatalf("index %d was not assigned: the log is not dense", i)
		}
	}
	await(t, l.Log, 999)
	// Before any time-stamp, a proof is against the newest checkpoint,
	// without a token.
	p, err := l.Proof(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	lv, _ := note.NewVerifier(l.vkey)
	opts := evidence.ProofOptions{Origin: l.Origin(), LogKey: lv, TSARoots: ts.roots}
	if _, err := p.Verify(opts); err != nil || p.Timestamp != nil {
		t.Fatalf("untimestamped proof: %v (token %d bytes)", err, len(p.Timestamp))
	}
	if _, err := p.Verify(evidence.ProofOptions{Origin: l.Origin(), LogKey: lv, TSARoots: ts.roots, RequireTimestamp: true}); err == nil {
		t.Fatal("a proof without a token passed RequireTimestamp")
	}

	s1, err := l.Stamp(ctx)
	if err != nil || s1 != 1000 {
		t.Fatalf("stamp: %d %v", s1, err)
	}
	if again, err := l.Stamp(ctx); err != nil || again != s1 {
		t.Fatalf("stamping the same checkpoint again: %d %v", again, err)
	}
	idx2 := appendN(t, l.Log, 1000, 500, "a")
	await(t, l.Log, 1499)
	s2, err := l.Stamp(ctx)
	if err != nil || s2 != 1500 {
		t.Fatalf("stamp: %d %v", s2, err)
	}
	for k, v := range idx2 {
		idx[k] = v
	}

	// Every entry proves: inclusion in the smallest time-stamped checkpoint
	// covering it, and that checkpoint's token.
	for i := uint64(0); i < 1500; i++ {
		p, err := l.Proof(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		v, err := p.Verify(evidence.ProofOptions{Origin: l.Origin(), LogKey: lv, TSARoots: ts.roots, RequireTimestamp: true})
		if err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
		want := uint64(1000)
		if i >= 1000 {
			want = 1500
		}
		if v.Checkpoint.Size != want || v.Time.IsZero() {
			t.Fatalf("proof %d: checkpoint %d, time %s", i, v.Checkpoint.Size, v.Time)
		}
		wantEntry, _ := entry(idx[i], "a").Marshal()
		if string(p.Entry) != string(wantEntry) {
			t.Fatalf("entry %d is not the one appended there", i)
		}
	}

	// Consistency from the first stamped checkpoint to the second.
	c1raw, _ := l.files.Get(ctx, checkpointName(1000))
	c2raw, _ := l.files.Get(ctx, checkpointName(1500))
	c1, _ := evidence.OpenCheckpoint(c1raw, l.Origin(), lv)
	c2, _ := evidence.OpenCheckpoint(c2raw, l.Origin(), lv)
	for _, from := range []uint64{1, 7, 256, 999, 1000} {
		cp := c1
		if from != 1000 {
			// Intermediate sizes: the log proves against its own tiles.
			h, err := l.ConsistencyProof(ctx, from, 1500)
			if err != nil {
				t.Fatal(err)
			}
			if len(h) == 0 {
				t.Fatalf("empty consistency proof from %d", from)
			}
			continue
		}
		h, err := l.ConsistencyProof(ctx, cp.Size, c2.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := evidence.VerifyConsistency(c1, c2, h); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Stamped(); len(got) != 2 || got[0] != 1000 || got[1] != 1500 {
		t.Fatalf("stamped sizes %v", got)
	}

	// The same decision appended again (a redelivery) keeps its index.
	i7, err := l.Append(ctx, entry(idx[7], "a"))
	if err != nil || i7 != 7 {
		t.Fatalf("a repeated entry got index %d (%v), want 7", i7, err)
	}
	if _, err := l.Append(ctx, &evidence.Entry{V: 1, Kind: evidence.Accepted}); err == nil {
		t.Fatal("an invalid entry was appended")
	}
}

func TestRestartKeepsTheLog(t *testing.T) {
	ts := newTestTSA(t)
	dir, key := t.TempDir(), newKey(t)
	l := openLog(t, dir, key, ts)
	ctx := t.Context()
	appendN(t, l.Log, 0, 300, "r")
	await(t, l.Log, 299)
	if _, err := l.Stamp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, dir, key, ts)
	if got := l2.Stamped(); len(got) != 1 || got[0] != 300 {
		t.Fatalf("stamped after restart: %v", got)
	}
	i, err := l2.Append(ctx, entry(1000, "r"))
	if err != nil || i != 300 {
		t.Fatalf("first index after restart: %d %v", i, err)
	}
	await(t, l2.Log, 300)
	lv, _ := note.NewVerifier(l2.vkey)
	p, err := l2.Proof(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Verify(evidence.ProofOptions{Origin: l2.Origin(), LogKey: lv, TSARoots: ts.roots, RequireTimestamp: true}); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPMirror reads the log over HTTP twice: with a reader written here
// from the C2SP tlog-tiles and tlog-checkpoint specs alone (paths, tile and
// bundle formats, RFC 6962 hashing), and with pkg/evidence's client (built
// on tessera's); both agree with the signed checkpoint.
func TestHTTPMirror(t *testing.T) {
	ts := newTestTSA(t)
	l := openLog(t, t.TempDir(), newKey(t), ts)
	ctx := t.Context()
	const n = 1000
	appendN(t, l.Log, 0, n, "m")
	await(t, l.Log, n-1)
	if _, err := l.Stamp(ctx); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.StripPrefix("/log", l.Handler()))
	defer hs.Close()
	base := hs.URL + "/log/"

	get := func(p string) ([]byte, int) {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b, resp.StatusCode
	}

	// The checkpoint: a signed note, origin, size, base64 root.
	cpRaw, code := get("checkpoint")
	if code != 200 {
		t.Fatalf("checkpoint: %d", code)
	}
	lv, _ := note.NewVerifier(l.vkey)
	nt, err := note.Open(cpRaw, note.VerifierList(lv))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(nt.Text, "\n")
	if len(lines) != 4 || lines[0] != "edx.test/hub-log" || lines[1] != fmt.Sprint(n) || lines[3] != "" {
		t.Fatalf("checkpoint text %q", nt.Text)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil {
		t.Fatal(err)
	}

	// The entries, from /tile/entries/<N>[.p/<W>], each a big-endian
	// uint16 length then the entry.
	var leaves [][]byte
	for bundle := 0; bundle*256 < n; bundle++ {
		w := min(256, n-bundle*256)
		p := "tile/entries/" + tileN(uint64(bundle))
		if w < 256 {
			p += fmt.Sprintf(".p/%d", w)
		}
		b, code := get(p)
		if code != 200 {
			t.Fatalf("%s: %d", p, code)
		}
		for len(b) > 0 {
			size := int(b[0])<<8 | int(b[1])
			e := b[2 : 2+size]
			if _, err := evidence.ParseEntry(e); err != nil {
				t.Fatalf("entry %d: %v", len(leaves), err)
			}
			h := sha256.Sum256(append([]byte{0}, e...))
			leaves = append(leaves, h[:])
			b = b[2+size:]
		}
	}
	if len(leaves) != n {
		t.Fatalf("%d entries in the bundles, want %d", len(leaves), n)
	}
	if got := mth(leaves); string(got) != string(root) {
		t.Fatal("the root of the served entries is not the checkpoint's")
	}
	// The level-0 tiles hold the same leaf hashes.
	for tile := 0; tile*256 < n; tile++ {
		w := min(256, n-tile*256)
		p := "tile/0/" + tileN(uint64(tile))
		if w < 256 {
			p += fmt.Sprintf(".p/%d", w)
		}
		b, code := get(p)
		if code != 200 || len(b) != 32*w {
			t.Fatalf("%s: %d, %d bytes", p, code, len(b))
		}
		for i := 0; i < w; i++ {
			if string(b[32*i:32*i+32]) != string(leaves[tile*256+i]) {
				t.Fatalf("tile 0/%d hash %d differs from the entry's leaf hash", tile, i)
			}
		}
	}
	// The level-1 tile: hashes of full level-0 tiles' subtrees.
	b, code := get("tile/1/000.p/3")
	if code != 200 || len(b) != 96 {
		t.Fatalf("tile/1/000.p/3: %d, %d bytes", code, len(b))
	}
	for i := 0; i < 3; i++ {
		if string(b[32*i:32*i+32]) != string(mth(leaves[256*i:256*i+256])) {
			t.Fatalf("level-1 hash %d is not the root of tile 0/%d", i, i)
		}
	}

	// pkg/evidence's client (tessera's proof builder over HTTP).
	c, err := evidence.NewClient(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := evidence.OpenCheckpoint(cpRaw, l.Origin(), lv)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{0, 1, 255, 256, 511, 767, 768, 999} {
		e, err := c.Entry(ctx, i, n)
		if err != nil {
			t.Fatal(err)
		}
		h, err := c.InclusionProof(ctx, i, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := evidence.VerifyInclusion(e, i, h, cp); err != nil {
			t.Fatal(err)
		}
	}
	// The evidence files: the kept checkpoint and its token verify with
	// openssl alone.
	dir := t.TempDir()
	kept, code := get(fmt.Sprintf("checkpoints/%d", n))
	tok, code2 := get(fmt.Sprintf("timestamps/%d", n))
	if code != 200 || code2 != 200 {
		t.Fatalf("evidence files: %d %d", code, code2)
	}
	os.WriteFile(filepath.Join(dir, "cp"), kept, 0o644)
	os.WriteFile(filepath.Join(dir, "cp.tst"), tok, 0o644)
	out, err := exec.Command("openssl", "ts", "-verify", "-token_in", "-in", filepath.Join(dir, "cp.tst"), "-data", filepath.Join(dir, "cp"), "-CAfile", ts.rootsP).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification: OK") {
		t.Fatalf("openssl ts -verify of checkpoint %d: %v\n%s", n, err, out)
	}
	// The proof endpoint.
	pj, code := get("proof/123")
	var p evidence.Proof
	if code != 200 || json.Unmarshal(pj, &p) != nil {
		t.Fatalf("proof/123: %d %s", code, pj)
	}
	if _, err := p.Verify(evidence.ProofOptions{Origin: l.Origin(), LogKey: lv, TSARoots: ts.roots, RequireTimestamp: true}); err != nil {
		t.Fatal(err)
	}
	// Only the spec's paths are served, and only read.
	for _, p := range []string{".state/treeState", "evidence/checkpoints/1000", "tile/0/../../.state/treeState", "tile/0/x1000", "tile/64/000", "tile/0/000.p/0", "checkpoints/01000", "proof/5000", "timestamps/999", "proof/-1"} {
		if _, code := get(p); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
	resp, err := http.Post(base+"checkpoint", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

// tileN is the spec's N path element: groups of three digits, x-prefixed
// but the last.
func tileN(n uint64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n /= 1000; n > 0; n /= 1000 {
		s = fmt.Sprintf("x%03d/%s", n%1000, s)
	}
	return s
}

// mth is RFC 6962's Merkle tree hash of leaf hashes.
func mth(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	h := sha256.Sum256(append(append([]byte{1}, mth(leaves[:k])...), mth(leaves[k:])...))
	return h[:]
}

// TestRewrittenEntryIsCaught rewrites an entry on disk after it was logged:
// its inclusion proof against the signed checkpoint fails.
func TestRewrittenEntryIsCaught(t *testing.T) {
	ts := newTestTSA(t)
	l := openLog(t, t.TempDir(), newKey(t), ts)
	ctx := t.Context()
	appendN(t, l.Log, 0, 300, "w")
	await(t, l.Log, 299)
	if _, err := l.Stamp(ctx); err != nil {
		t.Fatal(err)
	}
	lv, _ := note.NewVerifier(l.vkey)
	opts := evidence.ProofOptions{Origin: l.Origin(), LogKey: lv, TSARoots: ts.roots, RequireTimestamp: true}
	good, err := l.Proof(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.Verify(opts); err != nil {
		t.Fatal(err)
	}
	// In the bundle: the sender becomes another unit, same length.
	bundle := filepath.Join(l.dir, "tile", "entries", "000")
	b, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	e := good.Entry
	forged := strings.Replace(string(e), `"sender":"000.00.00.H29"`, `"sender":"000.00.00.H30"`, 1)
	if forged == string(e) || !strings.Contains(string(b), string(e)) {
		t.Fatal("test setup: entry not found in its bundle")
	}
	if err := os.WriteFile(bundle, []byte(strings.Replace(string(b), string(e), forged, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	bad, err := l.Proof(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if string(bad.Entry) != forged {
		t.Fatal("the log did not serve the rewritten entry")
	}
	if _, err := bad.Verify(opts); err == nil || !strings.Contains(err.Error(), "not in the tree") {
		t.Fatalf("a rewritten entry verified: %v", err)
	}
	// And the proof bundle with the entry edited in transit fails the same.
	edited := *good
	edited.Entry = []byte(forged)
	if _, err := edited.Verify(opts); err == nil {
		t.Fatal("an edited proof verified")
	}
	// A proof whose token is over another checkpoint fails.
	other := *good
	other.Checkpoint = append([]byte{}, good.Checkpoint...)
	other.Timestamp = nil
	tok, err := ts.client.Timestamp(ctx, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	other.Timestamp = tok
	if _, err := other.Verify(opts); err == nil {
		t.Fatal("a token over another digest verified")
	}
}

// TestWitnessesOnTheRealLog: agents' witnesses follow the hub's log over
// HTTP, cosign, the hub keeps the cosignatures and publishes them on the
// checkpoint; 2 of 3 meets the quorum, 1 does not. A forked log (same key,
// same prefix, then different entries) is caught by the witness.
func TestWitnessesOnTheRealLog(t *testing.T) {
	key := newKey(t)
	l := openLog(t, t.TempDir(), key, nil)
	ctx := t.Context()
	hs := httptest.NewServer(l.Handler())
	defer hs.Close()
	client, err := evidence.NewClient(hs.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	lv, _ := note.NewVerifier(l.vkey)

	var ws []*witness.Witness
	var vs []note.Verifier
	for i := range 3 {
		skey, vkey, err := witness.NewKey(fmt.Sprintf("edx-witness/000.00.%02d.H29", i))
		if err != nil {
			t.Fatal(err)
		}
		w, err := witness.New(witness.Config{StateFile: filepath.Join(t.TempDir(), "cp"), Origin: l.Origin(), LogKey: l.vkey, Key: skey})
		if err != nil {
			t.Fatal(err)
		}
		v, err := witness.NewVerifier(vkey)
		if err != nil {
			t.Fatal(err)
		}
		ws, vs = append(ws, w), append(vs, v)
	}
	// Two rounds of growth; each witness checks consistency from its last.
	var size uint64
	for round, n := range []int{100, 400} {
		appendN(t, l.Log, int(size), n, "shared")
		size += uint64(n)
		await(t, l.Log, size-1)
		cp, err := client.ReadCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range ws {
			if round == 1 && i == 2 {
				continue // the third agent is offline this round
			}
			line, err := w.Update(ctx, cp, client)
			if err != nil {
				t.Fatalf("round %d witness %d: %v", round, i, err)
			}
			if err := l.AddCosignature(ctx, size, line, vs[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A cosignature that does not verify, or by another witness's name, is
	// refused by the hub.
	if err := l.AddCosignature(ctx, size, []byte("— edx-witness/000.00.00.H29 AAAAAAAAAAAA\n"), vs[0]); err == nil {
		t.Fatal("the hub kept a bad cosignature")
	}
	published, err := client.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, got, err := witness.VerifyQuorum(published, l.Origin(), lv, vs, 2)
	if err != nil || len(got) != 2 || cp.Size != size {
		t.Fatalf("2 of 3: %v %v", got, err)
	}
	if _, _, err := witness.VerifyQuorum(published, l.Origin(), lv, vs, 3); err == nil {
		t.Fatal("3 of 3 met with two cosignatures")
	}
	one, err := l.Cosigned(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := witness.VerifyQuorum(one, l.Origin(), lv, vs[:1], 1); err != nil {
		t.Fatal(err)
	}
	onlyFirst := strings.Join(strings.SplitAfter(string(published), "\n")[:6], "")
	if _, _, err := witness.VerifyQuorum([]byte(onlyFirst), l.Origin(), lv, vs, 2); err == nil {
		t.Fatalf("one cosignature met a quorum of 2:\n%s", onlyFirst)
	}

	// The fork: a second log with the same key and the same first 500
	// entries, then different ones. The honest log grows first, and the
	// witnesses see it; then the fork is shown to them, at the same size
	// and larger.
	appendN(t, l.Log, 1000, 20, "honest")
	await(t, l.Log, 519)
	honest, err := client.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} { // 0 last saw 500, 2 last saw 100
		if _, err := ws[i].Update(ctx, honest, client); err != nil {
			t.Fatal(err)
		}
	}
	fork := openLog(t, t.TempDir(), key, nil)
	appendSequential(t, fork.Log, l.Log, 500)
	fs := httptest.NewServer(fork.Handler())
	defer fs.Close()
	forkClient, _ := evidence.NewClient(fs.URL, nil)
	fsize := uint64(500)
	for round, n := range []int{20, 30} {
		appendN(t, fork.Log, 2000+1000*round, n, "forked")
		fsize += uint64(n)
		await(t, fork.Log, fsize-1)
		forkCP, err := forkClient.ReadCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{0, 2} {
			before := ws[i].Last()
			_, err := ws[i].Update(ctx, forkCP, forkClient)
			var ie *witness.InconsistentError
			if !errors.As(err, &ie) {
				t.Fatalf("witness %d cosigned a fork: %v", i, err)
			}
			if string(ie.New) == "" || string(ie.Old) != string(before) {
				t.Fatalf("witness %d: the evidence does not hold both checkpoints", i)
			}
			var oldCP, newCP log.Checkpoint
			oldCP.Unmarshal([]byte(strings.SplitN(string(ie.Old), "\n\n", 2)[0] + "\n"))
			newCP.Unmarshal([]byte(strings.SplitN(string(ie.New), "\n\n", 2)[0] + "\n"))
			if oldCP.Size != 520 || string(oldCP.Hash) == string(newCP.Hash) {
				t.Fatalf("witness %d evidence: %d then %d", i, oldCP.Size, newCP.Size)
			}
		}
	}
	// The witness that missed the honest 520 (it last saw 500) cannot tell
	// yet: to it the fork is a valid extension. That is why several
	// witnesses are needed, and why the hub publishes their cosignatures.
	// The honest log's next checkpoint is still cosigned by those that
	// refused the fork.
	appendN(t, l.Log, 3000, 5, "honest")
	await(t, l.Log, 524)
	next, _ := client.ReadCheckpoint(ctx)
	if _, err := ws[0].Update(ctx, next, client); err != nil {
		t.Fatalf("the honest log after the fork: %v", err)
	}
}

// appendSequential copies the first n entries of src into dst in order:
// AppendAsync sequences entries in the order it is called.
func appendSequential(t *testing.T, dst, src *Log, n uint64) {
	t.Helper()
	ctx := t.Context()
	var futures []func() (uint64, error)
	for i := uint64(0); i < n; i++ {
		raw, err := src.Entry(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := evidence.ParseEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, dst.AppendAsync(ctx, e))
	}
	for i, f := range futures {
		got, err := f()
		if err != nil || got != uint64(i) {
			t.Fatalf("copy entry %d: index %d, %v", i, got, err)
		}
	}
}

func TestConfigAndKeys(t *testing.T) {
	var c Config
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Config{
		{Origin: "has space"}, {Origin: "a+b"}, {Origin: "x", CheckpointInterval: time.Millisecond},
		{Origin: "x", TimestampInterval: time.Millisecond}, {Origin: "x", BatchMaxSize: 100000}, {Origin: "x", BatchMaxAge: time.Hour},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	p := filepath.Join(t.TempDir(), "keys", "tlog.key")
	s1, v1, vk1, err := EnsureKey(p, "edx.test/log")
	if err != nil {
		t.Fatal(err)
	}
	s2, _, vk2, err := EnsureKey(p, "ignored/when-present")
	if err != nil || vk1 != vk2 || s1.Name() != s2.Name() || s1.Name() != "edx.test/log" || v1.KeyHash() != s1.KeyHash() {
		t.Fatalf("EnsureKey made another key: %v", err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode())
	}
	msg, _ := note.Sign(&note.Note{Text: "x\n"}, s1)
	if _, err := note.Open(msg, note.VerifierList(v1)); err != nil {
		t.Fatal("the derived verifier does not verify the key's signatures")
	}
	if _, _, _, err := ParseKey("PRIVATE+KEY+x+00000000+AAAA"); err == nil {
		t.Fatal("a bad key parsed")
	}
	if _, err := Open(t.Context(), Config{}, Backend{}, Deps{}); err == nil {
		t.Fatal("Open without a key or backend")
	}
	_ = rfc6962.DefaultHasher
}

// await waits for index to be in a published checkpoint, failing the test
// after a minute rather than hanging.
func await(t testing.TB, l *Log, index uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := l.Await(ctx, index); err != nil {
		t.Fatalf("await %d: %v", index, err)
	}
}

// TestCheckpointAtRemakesPublished: a witness's cosignature on a checkpoint
// the log has since moved past is still kept, because the log makes that
// checkpoint again byte for byte.
func TestCheckpointAtRemakesPublished(t *testing.T) {
	l := openLog(t, t.TempDir(), newKey(t), nil)
	ctx := t.Context()
	published := map[uint64][]byte{}
	var size uint64
	for _, n := range []int{1, 255, 1, 300, 70} {
		appendN(t, l.Log, int(size), n, "at")
		size += uint64(n)
		await(t, l.Log, size-1)
		s, raw, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		published[s] = raw
	}
	skey, vkey, _ := witness.NewKey("edx-witness/000.00.00.H29")
	wv, _ := witness.NewVerifier(vkey)
	lv, _ := note.NewVerifier(l.vkey)
	for s, raw := range published {
		got, err := l.CheckpointAt(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(raw) {
			t.Fatalf("checkpoint %d made again differs from the published one:\n%s\n%s", s, got, raw)
		}
	}
	// The witness saw 257; the log is at 627 when the cosignature arrives.
	w, err := witness.New(witness.Config{StateFile: filepath.Join(t.TempDir(), "cp"), Origin: l.Origin(), LogKey: l.vkey, Key: skey})
	if err != nil {
		t.Fatal(err)
	}
	line, err := w.Update(ctx, published[257], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AddCosignature(ctx, 257, line, wv); err != nil {
		t.Fatal(err)
	}
	c, err := l.Cosigned(ctx, 257)
	if err != nil {
		t.Fatal(err)
	}
	if cp, _, err := witness.VerifyQuorum(c, l.Origin(), lv, []note.Verifier{wv}, 1); err != nil || cp.Size != 257 {
		t.Fatalf("cosigned 257: %v", err)
	}
	if _, err := l.CheckpointAt(ctx, 100000); !errors.Is(err, ErrNotIntegrated) {
		t.Fatalf("a checkpoint beyond the log: %v", err)
	}
}
