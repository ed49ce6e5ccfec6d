package logwatch

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/witness"
)

const unit = document.UnitID("000.01.00.H29")

// fakeHub answers the witness service's requests: proofs as told, and
// records cosignatures. (The hub's real service and log: hub
// TestWitnessService, e2e TestAgentsCatchForkedLog.)
type fakeHub struct {
	proof      [][]byte
	beyond     bool
	cosigned   []string
	checkpoint []byte
}

func (f *fakeHub) Do(_ context.Context, r *protocol.WitnessRequest) (*protocol.WitnessReply, error) {
	switch r.Op {
	case protocol.WitnessConsistency:
		if f.beyond {
			return nil, &protocol.WitnessError{Reason: reason.Reason{Code: reason.WitnessBeyondLog, Message: "smaller"}, Size: 1}
		}
		return &protocol.WitnessReply{Proof: f.proof}, nil
	case protocol.WitnessCosign:
		f.cosigned = append(f.cosigned, r.Cosignature)
		return &protocol.WitnessReply{Kept: true}, nil
	case protocol.WitnessCheckpoint:
		return &protocol.WitnessReply{Checkpoint: f.checkpoint}, nil
	}
	return nil, errors.New("unexpected")
}

func checkpoint(t *testing.T, s note.Signer, size uint64) []byte {
	t.Helper()
	root := make([]byte, 32)
	rand.Read(root)
	b, err := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: s.Name(), Size: size, Hash: root}.Marshal())}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWatcher: the witness key is made once (0600, the unit's name), the
// log key pinned; a first checkpoint is taken and cosigned; one that no
// proof joins to it is a fork, alerted once with its evidence kept; a log
// that cannot reach the size it signed is a rollback; a checkpoint signed by
// another key is refused; the state survives a restart, and another log key
// is refused then.
func TestWatcher(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	skey, vkey, _ := note.GenerateKey(rand.Reader, "edx.local/hub-log")
	ls, _ := note.NewSigner(skey)
	cfg := Config{Unit: unit, KeyFile: filepath.Join(dir, "witness.key"), LogKey: vkey, DB: filepath.Join(dir, "state", "witness.db"),
		EvidenceDir: filepath.Join(dir, "evidence")}
	w, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("witness key file: %v", err)
	}
	wv, err := witness.NewVerifier(w.VKey())
	if err != nil || wv.Name() != "edx-witness/"+string(unit) {
		t.Fatalf("witness key %q: %v", w.VKey(), err)
	}
	hub := &fakeHub{}
	first := checkpoint(t, ls, 5)
	res, alert, err := w.Check(ctx, first, hub)
	if err != nil || alert != nil || !res.Cosigned || !res.Kept || res.Size != 5 || len(hub.cosigned) != 1 {
		t.Fatalf("first checkpoint: %+v %+v %v", res, alert, err)
	}
	if _, _, err := witness.VerifyQuorum(append(first, hub.cosigned[0]...), "edx.local/hub-log", mustVerifier(t, vkey), []note.Verifier{wv}, 1); err != nil {
		t.Fatalf("the cosignature: %v", err)
	}

	fork := checkpoint(t, ls, 8)
	_, alert, err = w.Check(ctx, fork, hub)
	if !errors.Is(err, ErrInconsistent) || alert == nil || alert.Kind != AlertFork || alert.OldSize != 5 || alert.NewSize != 8 {
		t.Fatalf("fork: %+v %v", alert, err)
	}
	b, err := os.ReadFile(alert.Evidence)
	if err != nil || !strings.Contains(string(b), `"kind": "fork"`) {
		t.Fatalf("evidence %s: %v", b, err)
	}
	if _, alert, err := w.Check(ctx, fork, hub); alert != nil || !errors.Is(err, ErrInconsistent) {
		t.Fatalf("the fork again: %+v %v", alert, err)
	}
	hub.beyond = true
	if _, alert, err = w.Check(ctx, checkpoint(t, ls, 3), hub); alert == nil || alert.Kind != AlertRollback {
		t.Fatalf("rollback: %+v %v", alert, err)
	}
	other, _, _ := note.GenerateKey(rand.Reader, "edx.local/hub-log")
	os2, _ := note.NewSigner(other)
	if _, alert, err = w.Check(ctx, checkpoint(t, os2, 9), hub); alert == nil || alert.Kind != AlertSignature {
		t.Fatalf("another key's checkpoint: %+v %v", alert, err)
	}
	if len(hub.cosigned) != 1 {
		t.Fatalf("cosigned %d checkpoints", len(hub.cosigned))
	}
	as, _ := w.Alerts(ctx)
	if len(as) != 3 {
		t.Fatalf("alerts %+v", as)
	}
	before := w.VKey()
	w.Close()

	// Restarted: the same key, the same state.
	w, err = Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := w.Size(ctx); n != 5 || w.VKey() != before {
		t.Fatalf("after a restart: size %d", n)
	}
	w.Close()
	_, vkey2, _ := note.GenerateKey(rand.Reader, "edx.local/hub-log")
	cfg.LogKey = vkey2
	if _, err := Open(ctx, cfg); err == nil {
		t.Fatal("a witness opened with another log key than the one it verified with")
	}
	// A key of another unit's name is refused.
	other3, _, _ := witness.NewKey("edx-witness/000.02.00.H29")
	os.WriteFile(filepath.Join(dir, "b.key"), []byte(other3), 0o600)
	if _, err := Open(ctx, Config{Unit: unit, KeyFile: filepath.Join(dir, "b.key"), DB: filepath.Join(dir, "b.db"), EvidenceDir: dir}); err == nil {
		t.Fatal("another unit's witness key taken")
	}
}

func mustVerifier(t *testing.T, vkey string) note.Verifier {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
