package witness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

const origin = "edx.test/hub-log"

// memLog is an in-memory log for this package's unit tests (the real log,
// tessera on disk, is tested with witnesses in hub/tlog).
type memLog struct {
	tree   *testonly.Tree
	signer note.Signer
}

func newMemLog(t testing.TB, skey string) *memLog {
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &memLog{tree: testonly.New(rfc6962.DefaultHasher), signer: s}
}

func (m *memLog) add(n int, prefix string) {
	for i := 0; i < n; i++ {
		m.tree.AppendData([]byte(fmt.Sprintf("%s-%d", prefix, m.tree.Size())))
	}
}

func (m *memLog) checkpoint(t testing.TB) []byte {
	b, err := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: origin, Size: m.tree.Size(), Hash: m.tree.Hash()}.Marshal())}, m.signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (m *memLog) ConsistencyProof(_ context.Context, from, to uint64) ([][]byte, error) {
	if to > m.tree.Size() {
		return nil, fmt.Errorf("no tree of %d", to)
	}
	return m.tree.ConsistencyProof(from, to)
}

type logKeys struct{ skey, vkey string }

func newLogKeys(t testing.TB) logKeys {
	skey, vkey, err := note.GenerateKey(nil, origin)
	if err != nil {
		t.Fatal(err)
	}
	return logKeys{skey, vkey}
}

func newWitness(t testing.TB, lk logKeys, name, state string) *Witness {
	skey, _, err := NewKey(name)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{StateFile: state, Origin: origin, LogKey: lk.vkey, Key: skey})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWitnessFollowsAGrowingLog(t *testing.T) {
	lk := newLogKeys(t)
	m := newMemLog(t, lk.skey)
	state := filepath.Join(t.TempDir(), "witness", "checkpoint")
	w := newWitness(t, lk, "edx-witness/000.00.00.H29", state)
	lv, _ := note.NewVerifier(lk.vkey)
	ctx := t.Context()

	var cosigned []byte
	for _, n := range []int{1, 5, 250, 1, 700, 0} {
		m.add(n, "e")
		cp := m.checkpoint(t)
		line, err := w.Update(ctx, cp, m)
		if err != nil {
			t.Fatalf("size %d: %v", m.tree.Size(), err)
		}
		cosigned, err = AddCosignatures(cp, line)
		if err != nil {
			t.Fatal(err)
		}
		if _, got, err := VerifyQuorum(cosigned, origin, lv, []note.Verifier{w.Verifier()}, 1); err != nil || len(got) != 1 || got[0].Time.IsZero() {
			t.Fatalf("size %d: cosignature: %v %v", m.tree.Size(), got, err)
		}
	}
	// The state survives a restart, and the witness still checks against it.
	on, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if string(w2.Last()) != string(on) {
		t.Fatal("the reloaded witness does not hold the saved checkpoint")
	}
	// A checkpoint that arrives with cosignatures on it is stored without them.
	m.add(3, "e")
	cp := m.checkpoint(t)
	other := newWitness(t, lk, "edx-witness/000.00.00.H30", filepath.Join(t.TempDir(), "s"))
	otherLine, err := other.Update(ctx, cp, m)
	if err != nil {
		t.Fatal(err)
	}
	withCosig, _ := AddCosignatures(cp, otherLine)
	if _, err := w2.Update(ctx, withCosig, m); err != nil {
		t.Fatal(err)
	}
	if string(w2.Last()) != string(cp) {
		t.Fatalf("the state keeps another witness's cosignature:\n%s", w2.Last())
	}
	// An older, consistent checkpoint is stale, not a fork.
	if _, err := w2.Update(ctx, cosignedAt(t, m, 10, lk), m); !errors.Is(err, ErrStale) {
		t.Fatalf("stale checkpoint: %v", err)
	}
}

// cosignedAt signs the checkpoint of m's tree at an earlier size.
func cosignedAt(t *testing.T, m *memLog, size uint64, lk logKeys) []byte {
	s, _ := note.NewSigner(lk.skey)
	b, err := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: origin, Size: size, Hash: m.tree.HashAt(size)}.Marshal())}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWitnessRefusesAFork(t *testing.T) {
	lk := newLogKeys(t)
	a, b := newMemLog(t, lk.skey), newMemLog(t, lk.skey)
	a.add(100, "shared")
	b.add(100, "shared")
	a.add(50, "honest")
	b.add(50, "rewritten")
	b.add(10, "more")

	dir := t.TempDir()
	w := newWitness(t, lk, "edx-witness/000.00.00.H29", filepath.Join(dir, "state"))
	ctx := t.Context()
	if _, err := w.Update(ctx, a.checkpoint(t), a); err != nil {
		t.Fatal(err)
	}
	seen := w.Last()

	// The fork, larger: its own consistency proof does not reach the
	// witness's root.
	forked := b.checkpoint(t)
	line, err := w.Update(ctx, forked, b)
	var ie *InconsistentError
	if !errors.As(err, &ie) || line != nil {
		t.Fatalf("a forked checkpoint: %v, cosignature %q", err, line)
	}
	if string(ie.Old) != string(seen) || string(ie.New) != string(forked) || len(ie.Proof) == 0 {
		t.Fatalf("the evidence does not hold both checkpoints and the proof: %+v", ie)
	}
	var ev InconsistentError
	if err := json.Unmarshal(ie.Evidence(), &ev); err != nil || string(ev.New) != string(forked) {
		t.Fatalf("evidence JSON: %v", err)
	}
	// The fork at the same size: two roots, no proof needed.
	b2 := newMemLog(t, lk.skey)
	b2.add(100, "shared")
	b2.add(50, "rewritten")
	if _, err := w.Update(ctx, b2.checkpoint(t), b2); !errors.As(err, &ie) || ie.Proof != nil {
		t.Fatalf("same size, another root: %v", err)
	}
	// A smaller checkpoint of the fork is inconsistent too, not stale.
	b3 := newMemLog(t, lk.skey)
	b3.add(200, "other")
	if _, err := w.Update(ctx, cosignedAt(t, b3, 99, lk), b3); !errors.As(err, &ie) {
		t.Fatalf("smaller forked checkpoint: %v", err)
	}
	// The witness kept its view: the honest log still extends it.
	if string(w.Last()) != string(seen) {
		t.Fatal("a refused checkpoint replaced the witness's state")
	}
	a.add(5, "honest")
	if _, err := w.Update(ctx, a.checkpoint(t), a); err != nil {
		t.Fatalf("the honest log after the fork: %v", err)
	}
}

func TestWitnessRefusesBadInput(t *testing.T) {
	lk := newLogKeys(t)
	m := newMemLog(t, lk.skey)
	m.add(10, "e")
	w := newWitness(t, lk, "edx-witness/000.00.00.H29", filepath.Join(t.TempDir(), "state"))
	ctx := t.Context()
	stranger := newLogKeys(t)
	sm := newMemLog(t, stranger.skey)
	sm.add(10, "e")
	for name, cp := range map[string][]byte{
		"another key":  sm.checkpoint(t),
		"not a note":   []byte("edx.test/hub-log\n10\n"),
		"altered size": []byte(string(m.checkpoint(t))[:len(origin)+1] + "11" + string(m.checkpoint(t))[len(origin)+3:]),
	} {
		if _, err := w.Update(ctx, cp, m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if w.Last() != nil {
		t.Fatal("a refused checkpoint became the state")
	}
	// A state file that is not this log's checkpoint is an error, never a
	// silent reset.
	bad := filepath.Join(t.TempDir(), "state")
	os.WriteFile(bad, sm.checkpoint(t), 0o600)
	skey, _, _ := NewKey("w")
	if _, err := New(Config{StateFile: bad, Origin: origin, LogKey: lk.vkey, Key: skey}); err == nil {
		t.Fatal("a foreign state file was accepted")
	}
	// A proof source that fails is an error, not an inconsistency.
	if _, err := w.Update(ctx, m.checkpoint(t), m); err != nil {
		t.Fatal(err)
	}
	m.add(1, "e")
	var ie *InconsistentError
	if _, err := w.Update(ctx, m.checkpoint(t), failing{}); err == nil || errors.As(err, &ie) {
		t.Fatalf("failing proof source: %v", err)
	}
}

type failing struct{}

func (failing) ConsistencyProof(context.Context, uint64, uint64) ([][]byte, error) {
	return nil, errors.New("hub unreachable")
}

func TestQuorum(t *testing.T) {
	lk := newLogKeys(t)
	m := newMemLog(t, lk.skey)
	m.add(42, "e")
	cp := m.checkpoint(t)
	lv, _ := note.NewVerifier(lk.vkey)
	ctx := t.Context()
	var ws []*Witness
	var vs []note.Verifier
	var lines [][]byte
	for i := range 3 {
		w := newWitness(t, lk, fmt.Sprintf("edx-witness/000.00.00.H%02d", 30+i), filepath.Join(t.TempDir(), "s"))
		line, err := w.Update(ctx, cp, m)
		if err != nil {
			t.Fatal(err)
		}
		ws, vs, lines = append(ws, w), append(vs, w.Verifier()), append(lines, line)
	}
	two, err := AddCosignatures(cp, lines[0], lines[2], lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err := VerifyQuorum(two, origin, lv, vs, 2); err != nil || len(got) != 2 {
		t.Fatalf("2 of 3: %v %v", got, err)
	}
	one, _ := AddCosignatures(cp, lines[1])
	if _, _, err := VerifyQuorum(one, origin, lv, vs, 2); err == nil {
		t.Fatal("one cosignature met a quorum of 2")
	}
	// The same cosignature twice counts once.
	dup := append(append([]byte{}, one...), lines[1]...)
	if _, _, err := VerifyQuorum(dup, origin, lv, vs, 2); err == nil {
		t.Fatal("a repeated cosignature counted twice")
	}
	// A cosignature over another checkpoint does not count, and does not
	// spoil the good ones.
	m.add(1, "e")
	later := m.checkpoint(t)
	lateLine, err := ws[1].Update(ctx, later, m)
	if err != nil {
		t.Fatal(err)
	}
	mixed := append(append([]byte{}, two...), lateLine...)
	if _, got, err := VerifyQuorum(mixed, origin, lv, vs, 3); err == nil || len(got) != 2 {
		t.Fatalf("a cosignature of another checkpoint counted: %v %v", got, err)
	}
	if _, got, err := VerifyQuorum(mixed, origin, lv, vs, 2); err != nil || len(got) != 2 {
		t.Fatalf("a stray cosignature spoiled the quorum: %v %v", got, err)
	}
	// Unknown witnesses do not count; the log's own signature is required.
	stranger := newWitness(t, lk, "edx-witness/999", filepath.Join(t.TempDir(), "s"))
	sl, _ := stranger.Update(ctx, cp, m)
	withStranger, _ := AddCosignatures(one, sl)
	if _, _, err := VerifyQuorum(withStranger, origin, lv, vs, 2); err == nil {
		t.Fatal("an unknown witness counted")
	}
	if _, _, err := VerifyQuorum(two, origin, vs[0], vs, 2); err == nil {
		t.Fatal("a checkpoint verified without the log's signature")
	}
	if _, _, err := VerifyQuorum(two, origin, lv, vs, 4); err == nil {
		t.Fatal("a quorum larger than the witnesses")
	}
	if _, err := AddCosignatures(cp, []byte("— x\n")); err == nil {
		t.Fatal("a malformed line was added")
	}
	// The verifier from the published vkey works as the witness's own.
	_, vkey, _ := NewKey("edx-witness/000.00.00.H29")
	if _, err := NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
}

// TestVerifierKeyOf: the verifier key derived from a signing key is the one
// NewKey returned with it.
func TestVerifierKeyOf(t *testing.T) {
	skey, vkey, err := NewKey("edx-witness/000.01.00.H29")
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifierKeyOf(skey + "\n")
	if err != nil || got != vkey {
		t.Fatalf("%q %v, want %q", got, err, vkey)
	}
	if _, err := VerifierKeyOf("PRIVATE+KEY+x+1+AAA"); err == nil {
		t.Fatal("a malformed key")
	}
}
