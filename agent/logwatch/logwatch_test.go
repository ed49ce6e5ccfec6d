package logwatch

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/sqldb"
	"github.com/edxhub/edx/pkg/witness"
)

const unit = document.UnitID("000.01.00.H29")

// fakeHub answers the witness service's requests: proofs as told, and
// records cosignatures. (The hub's real service and log: hub
// TestWitnessService, e2e TestAgentsCatchForkedLog.)
type fakeHub struct {
	origin     string
	proof      [][]byte
	beyond     bool
	cosigned   []string
	checkpoint []byte
	logKey     string
	statement  []byte
}

func (f *fakeHub) Do(_ context.Context, r *protocol.WitnessRequest) (*protocol.WitnessReply, error) {
	if f.origin != "" && r.Origin != f.origin {
		return nil, fmt.Errorf("a request about log %q reached the hub of %q", r.Origin, f.origin)
	}
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
		return &protocol.WitnessReply{Checkpoint: f.checkpoint, LogKey: f.logKey, LogStatement: f.statement}, nil
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
	cfg := Config{Unit: unit, KeyFile: filepath.Join(dir, "witness.key"), LogKeys: []string{vkey}, DB: filepath.Join(dir, "state", "witness.db"),
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
	hub := &fakeHub{origin: "edx.local/hub-log"}
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
	if n, _ := w.Size(ctx, "edx.local/hub-log"); n != 5 || w.VKey() != before {
		t.Fatalf("after a restart: size %d", n)
	}
	w.Close()
	_, vkey2, _ := note.GenerateKey(rand.Reader, "edx.local/hub-log")
	cfg.LogKeys = []string{vkey2}
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

// hubs routes each request to the hub of the log it names, as the
// per-log subjects do.
type hubs map[string]*fakeHub

func (h hubs) Do(ctx context.Context, r *protocol.WitnessRequest) (*protocol.WitnessReply, error) {
	f := h[r.Origin]
	if f == nil {
		return nil, fmt.Errorf("no hub holds log %q (no responders)", r.Origin)
	}
	return f.Do(ctx, r)
}

// TestWatcherLogs: a witness of several hubs' logs. The log it was given
// and the log of a hub that joined later, learned from that hub's
// statement of its key signed with the hub's certificate, are both
// verified and cosigned, each cosignature handed to its own log's hub; a
// log whose statement is signed by a unit's certificate, or missing, is
// not learned and not an alarm; a fork of one log is alerted with that
// log's origin while the other goes on being cosigned; the learned log and
// its state survive a restart; and a witness state of the version before
// (one log, pinned) is carried over.
func TestWatcherLogs(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	ca, err := pki.InitCA(filepath.Join(dir, "pki"), "")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := pki.LoadTrust(ca.RootsPath())
	if err != nil {
		t.Fatal(err)
	}
	hubSigner, err := pki.LoadSigner(ca.HubKeyPath(), ca.HubCertPath())
	if err != nil {
		t.Fatal(err)
	}
	kp, cp, err := ca.IssueUnit(unit, "A", pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	unitSigner, _ := pki.LoadSigner(kp, cp)

	type hubLog struct {
		origin string
		signer note.Signer
		vkey   string
	}
	newLog := func(origin string) hubLog {
		skey, vkey, _ := note.GenerateKey(rand.Reader, origin)
		s, _ := note.NewSigner(skey)
		return hubLog{origin, s, vkey}
	}
	one, two, three := newLog("edx.local/hub/one"), newLog("edx.local/hub/two"), newLog("edx.local/hub/three")
	st2, err := container.SignLogKey(two.origin, two.vkey, time.Now(), hubSigner)
	if err != nil {
		t.Fatal(err)
	}
	st3, _ := container.SignLogKey(three.origin, three.vkey, time.Now(), unitSigner)
	hs := hubs{}
	for _, l := range []hubLog{one, two, three} {
		hs[l.origin] = &fakeHub{origin: l.origin, logKey: l.vkey}
	}
	hs[two.origin].statement, hs[three.origin].statement = st2, st3

	cfg := Config{Unit: unit, KeyFile: filepath.Join(dir, "witness.key"), LogKeys: []string{one.vkey}, Trust: trust,
		DB: filepath.Join(dir, "witness.db"), EvidenceDir: filepath.Join(dir, "evidence")}
	w, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cp1, cp2 := checkpoint(t, one.signer, 5), checkpoint(t, two.signer, 3)
	hs[one.origin].checkpoint, hs[two.origin].checkpoint = cp1, cp2
	if res, alert, err := w.Check(ctx, cp1, hs); err != nil || alert != nil || !res.Cosigned || res.Learned || res.Origin != one.origin {
		t.Fatalf("log one: %+v %+v %v", res, alert, err)
	}
	res, alert, err := w.Check(ctx, cp2, hs)
	if err != nil || alert != nil || !res.Cosigned || !res.Learned || res.Origin != two.origin || res.Size != 3 {
		t.Fatalf("log two, learned: %+v %+v %v", res, alert, err)
	}
	if len(hs[one.origin].cosigned) != 1 || len(hs[two.origin].cosigned) != 1 {
		t.Fatalf("cosignatures: %d to hub one, %d to hub two", len(hs[one.origin].cosigned), len(hs[two.origin].cosigned))
	}
	wv, _ := witness.NewVerifier(w.VKey())
	if _, _, err := witness.VerifyQuorum(append(cp2, hs[two.origin].cosigned[0]...), two.origin, mustVerifier(t, two.vkey), []note.Verifier{wv}, 1); err != nil {
		t.Fatalf("the cosignature of log two: %v", err)
	}

	// A log whose key statement is signed by a unit, and one without a
	// statement: not learned, not checked, no alert.
	if _, alert, err := w.Check(ctx, checkpoint(t, three.signer, 2), hs); !errors.Is(err, ErrUnknownLog) || alert != nil {
		t.Fatalf("a log vouched for by a unit: %+v %v", alert, err)
	}
	hs[three.origin].statement = nil
	if _, alert, err := w.Check(ctx, checkpoint(t, three.signer, 2), hs); !errors.Is(err, ErrUnknownLog) || alert != nil {
		t.Fatalf("a log with no statement: %+v %v", alert, err)
	}
	// Log two forks: alerted as log two's; log one goes on.
	fork := checkpoint(t, two.signer, 7)
	_, alert, err = w.Check(ctx, fork, hs)
	if !errors.Is(err, ErrInconsistent) || alert == nil || alert.Kind != AlertFork || alert.Origin != two.origin {
		t.Fatalf("log two's fork: %+v %v", alert, err)
	}
	var outcomes []string
	for _, o := range w.Sync(ctx, hs) {
		outcomes = append(outcomes, fmt.Sprintf("%s:%v:%v", o.Origin, o.Result != nil && o.Result.Cosigned, o.Err != nil))
	}
	if want := []string{one.origin + ":true:false", two.origin + ":true:false"}; !slices.Equal(outcomes, want) {
		t.Fatalf("sync: %v, want %v", outcomes, want)
	}
	as, _ := w.Alerts(ctx)
	if len(as) != 1 || as[0].Origin != two.origin {
		t.Fatalf("alerts: %+v", as)
	}
	w.Close()

	// Restarted with log one's key only: log two is still known.
	if w, err = Open(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := w.Origins(); !slices.Equal(got, []string{one.origin, two.origin}) {
		t.Fatalf("after a restart: %v", got)
	}
	if n, _ := w.Size(ctx, two.origin); n != 3 {
		t.Fatalf("log two's size after a restart: %d", n)
	}
	w.Close()

	// The state of the version before: one log, pinned.
	old := filepath.Join(dir, "old.db")
	db, err := sqldb.Open(ctx, old, sqldb.Options{Migrations: migrations[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO state (one, log_key, checkpoint, size, updated_at) VALUES (1, ?, ?, 5, 0)`, one.vkey, cp1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	cfg.DB, cfg.LogKeys = old, nil
	if w, err = Open(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if logs, _ := w.Logs(ctx); len(logs) != 1 || logs[0].Origin != one.origin || logs[0].Source != "pinned" || logs[0].Size != 5 {
		t.Fatalf("carried over: %+v", logs)
	}
	if _, alert, err := w.Check(ctx, checkpoint(t, one.signer, 5), hs); !errors.Is(err, ErrInconsistent) || alert == nil {
		t.Fatalf("a fork of the carried-over log: %+v %v", alert, err)
	}
}
