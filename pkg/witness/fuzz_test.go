package witness

import (
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// FuzzVerifyQuorum feeds hostile checkpoints (a hub's answer is untrusted
// input for an agent or an auditor) to the note and cosignature parsers
// behind VerifyQuorum, AddCosignatures and Witness.Update: they may refuse,
// never panic, and never count a cosignature that does not verify.
func FuzzVerifyQuorum(f *testing.F) {
	lk := newLogKeys(f)
	m := newMemLog(f, lk.skey)
	m.add(7, "e")
	cp := m.checkpoint(f)
	lv, _ := note.NewVerifier(lk.vkey)
	w := newWitness(f, lk, "edx-witness/000.00.00.H29", filepath.Join(f.TempDir(), "s"))
	line, err := w.Update(f.Context(), cp, m)
	if err != nil {
		f.Fatal(err)
	}
	cosigned, _ := AddCosignatures(cp, line)
	f.Add(cosigned, line)
	f.Add(cp, []byte("— x AAAA\n"))
	f.Add([]byte("edx.test/hub-log\n7\n\n— a b\n"), []byte{})
	vs := []note.Verifier{w.Verifier()}
	state := filepath.Join(f.TempDir(), "fuzz-state")
	skey, _, err := NewKey("edx-witness/fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw, extra []byte) {
		if out, err := AddCosignatures(raw, extra); err == nil {
			raw = out
		}
		_, got, err := VerifyQuorum(raw, origin, lv, vs, 1)
		if err == nil && len(got) != 1 {
			t.Fatalf("quorum met with %d cosignatures", len(got))
		}
		fw, err := New(Config{StateFile: state, Origin: origin, LogKey: lk.vkey, Key: skey})
		if err != nil {
			t.Fatal(err)
		}
		fw.Update(t.Context(), raw, m)
	})
}
