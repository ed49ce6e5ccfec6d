// Package logwatch is the agent's witness of the hub's transparency log
// (issue #11, "agents are witnesses"). It keeps the last checkpoint of the
// log it verified (in SQLite, beside the inbox's database), checks each new
// checkpoint the hub offers against it (the log's signature, then a
// consistency proof that the new tree extends the old one: pkg/witness),
// and cosigns it with the unit's witness key (C2SP cosignature/v1).
//
// A checkpoint that does not extend the last one (a fork, a rewritten
// entry), a log that can no longer prove a size it signed (a rollback), or
// a checkpoint that the log's key did not sign, is never cosigned: the
// witness keeps the evidence (both checkpoints as the log signed them and
// the proof that failed) in a file under its evidence directory and in its
// database, and reports it as an Alert, once per checkpoint, for the agent
// to log, count and send to the document system. Its last checkpoint stays
// as it was, so it goes on refusing the other branch.
package logwatch

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/agent/durable"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/sqldb"
	"github.com/edxhub/edx/pkg/witness"
)

// Service is the hub's witness service (protocol.Witness).
type Service interface {
	Do(ctx context.Context, r *protocol.WitnessRequest) (*protocol.WitnessReply, error)
}

// Config says where the witness keeps its key and state.
type Config struct {
	Unit document.UnitID
	// KeyFile holds the witness's signing key (a note key named
	// edx-witness/<unit>); made (0600) when missing.
	KeyFile string
	// LogKey is the hub log's verifier key. Empty: the key the hub gives at
	// first contact is pinned and kept.
	LogKey string
	// DB is the state database; EvidenceDir where evidence files go.
	DB          string
	EvidenceDir string
}

// Alert kinds.
const (
	// AlertFork: a checkpoint that does not extend the last one verified
	// (two roots for one size, or a failed consistency proof).
	AlertFork = "fork"
	// AlertRollback: the log cannot prove a size it signed before: it is
	// smaller than a checkpoint it published.
	AlertRollback = "rollback"
	// AlertSignature: a checkpoint not signed by the log's key.
	AlertSignature = "signature"
)

// ErrInconsistent wraps Check's error for a checkpoint it refuses to cosign
// because the log is inconsistent (every Alert kind).
var ErrInconsistent = errors.New("logwatch: the hub's log is inconsistent")

// Alert is an inconsistency the witness saw, with where its evidence is.
type Alert struct {
	ID       int64     `json:"id"`
	At       time.Time `json:"at"`
	Kind     string    `json:"kind"`
	OldSize  uint64    `json:"old_size"`
	NewSize  uint64    `json:"new_size"`
	Detail   string    `json:"detail"`
	Evidence string    `json:"evidence"` // the evidence file
}

// Result is what Check did with a checkpoint.
type Result struct {
	Size uint64 `json:"size"`
	// Stale: an older checkpoint consistent with the last one (a late
	// message), neither cosigned nor a problem.
	Stale bool `json:"stale,omitempty"`
	// Cosigned: verified and cosigned; Kept: the hub kept the cosignature.
	Cosigned bool `json:"cosigned,omitempty"`
	Kept     bool `json:"kept,omitempty"`
}

// Watcher is one unit's witness.
type Watcher struct {
	cfg    Config
	db     *sql.DB
	skey   string
	vkey   string
	signer note.Signer
	now    func() time.Time

	mu      sync.Mutex // one check at a time
	logKey  string
	w       *witness.Witness
	origin  string
	lastErr string
}

// migrations are the state database's schema versions (sqldb).
var migrations = []sqldb.Migration{
	{SQL: `
CREATE TABLE state (
	one        INTEGER PRIMARY KEY CHECK (one = 1),
	log_key    TEXT NOT NULL,     -- the hub log's verifier key, pinned
	checkpoint BLOB,              -- the last checkpoint verified, as the log signed it
	size       INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL   -- Unix ns
);
CREATE TABLE alerts (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	at         INTEGER NOT NULL,  -- Unix ns
	kind       TEXT NOT NULL,
	old_size   INTEGER NOT NULL,
	new_size   INTEGER NOT NULL,
	new_sha256 TEXT NOT NULL UNIQUE, -- of the offending checkpoint: one alert each
	detail     TEXT NOT NULL,
	evidence   TEXT NOT NULL      -- the evidence file
);
`},
}

// Open loads (or makes) the witness key and opens the state.
func Open(ctx context.Context, cfg Config) (*Watcher, error) {
	if err := cfg.Unit.Validate(); err != nil {
		return nil, fmt.Errorf("logwatch: %w", err)
	}
	if cfg.KeyFile == "" || cfg.DB == "" || cfg.EvidenceDir == "" {
		return nil, errors.New("logwatch: key file, database and evidence directory are required")
	}
	skey, err := ensureKey(cfg.KeyFile, Name(cfg.Unit))
	if err != nil {
		return nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("logwatch: key %s: %w", cfg.KeyFile, err)
	}
	if signer.Name() != Name(cfg.Unit) {
		return nil, fmt.Errorf("logwatch: key %s is named %q, the unit's witness key is named %q", cfg.KeyFile, signer.Name(), Name(cfg.Unit))
	}
	vkey, err := VerifierKey(skey)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.DB), 0o750); err != nil {
		return nil, fmt.Errorf("logwatch: %w", err)
	}
	db, err := sqldb.Open(ctx, cfg.DB, sqldb.Options{Migrations: migrations})
	if err != nil {
		return nil, fmt.Errorf("logwatch: %w", err)
	}
	w := &Watcher{cfg: cfg, db: db, skey: skey, vkey: vkey, signer: signer, now: time.Now}
	var pinned string
	err = db.QueryRowContext(ctx, `SELECT log_key FROM state WHERE one = 1`).Scan(&pinned)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		db.Close()
		return nil, fmt.Errorf("logwatch: state: %w", err)
	}
	err = nil
	switch {
	case cfg.LogKey != "" && pinned != "" && strings.TrimSpace(cfg.LogKey) != pinned:
		db.Close()
		return nil, fmt.Errorf("logwatch: the configured log key is not the one this witness verified the log with (%s): "+
			"a new log is a new history; move %s aside to witness it from its start", pinned, cfg.DB)
	case cfg.LogKey != "":
		err = w.pin(ctx, strings.TrimSpace(cfg.LogKey))
	case pinned != "":
		err = w.pin(ctx, pinned)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return w, nil
}

// Close closes the state.
func (w *Watcher) Close() error { return w.db.Close() }

// Name is the key name of a unit's witness key.
func Name(u document.UnitID) string { return "edx-witness/" + string(u) }

// VKey is the witness's verifier key (cosignature/v1): what the unit
// registry holds.
func (w *Watcher) VKey() string { return w.vkey }

// LogKey is the pinned log key ("" before the first contact).
func (w *Watcher) LogKey() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logKey
}

// pin makes logKey the log's key: it is written to the state, and the
// witness built on it.
func (w *Watcher) pin(ctx context.Context, logKey string) error {
	v, err := note.NewVerifier(logKey)
	if err != nil {
		return fmt.Errorf("logwatch: log key: %w", err)
	}
	if _, err := w.db.ExecContext(ctx, `INSERT INTO state (one, log_key, updated_at) VALUES (1, ?, ?)
		ON CONFLICT (one) DO UPDATE SET log_key = excluded.log_key`, logKey, w.now().UnixNano()); err != nil {
		return fmt.Errorf("logwatch: state: %w", err)
	}
	ww, err := witness.New(witness.Config{State: &state{w: w}, Origin: v.Name(), LogKey: logKey, Key: w.skey})
	if err != nil {
		return fmt.Errorf("logwatch: %w", err)
	}
	w.logKey, w.w, w.origin = logKey, ww, v.Name()
	return nil
}

// state is the pkg/witness State in the database.
type state struct{ w *Watcher }

func (s *state) Load() ([]byte, error) {
	var b []byte
	err := s.w.db.QueryRow(`SELECT checkpoint FROM state WHERE one = 1`).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

func (s *state) Save(cp []byte) error {
	size, _ := parseSize(cp)
	_, err := s.w.db.Exec(`UPDATE state SET checkpoint = ?, size = ?, updated_at = ? WHERE one = 1`, cp, size, s.w.now().UnixNano())
	return err
}

// parseSize reads a checkpoint's size without checking its signature (its
// signature was checked before it is saved).
func parseSize(cp []byte) (uint64, error) {
	lines := strings.SplitN(string(cp), "\n", 3)
	if len(lines) < 3 {
		return 0, errors.New("not a checkpoint")
	}
	var n uint64
	if _, err := fmt.Sscan(lines[1], &n); err != nil {
		return 0, err
	}
	return n, nil
}

// Size is the size of the last checkpoint verified (0 before the first).
func (w *Watcher) Size(ctx context.Context) (uint64, error) {
	var n uint64
	err := w.db.QueryRowContext(ctx, `SELECT size FROM state WHERE one = 1`).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

// Register asks the hub to register this witness's key for the unit, with
// the unit's statement of it signed by the unit's key. A hub that has the
// key already answers yes; one that has another key answers
// reason.WitnessKeyMismatch.
func (w *Watcher) Register(ctx context.Context, svc Service, s *pki.Signer) error {
	b, err := container.SignWitnessKey(w.cfg.Unit, w.vkey, w.now(), s)
	if err != nil {
		return err
	}
	_, err = svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessRegister, Binding: b})
	return err
}

// Sync asks the hub for the newest checkpoint offered and checks it; a
// witness with no log key pins the one the hub gives.
func (w *Watcher) Sync(ctx context.Context, svc Service) (*Result, *Alert, error) {
	rep, err := svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessCheckpoint})
	if err != nil {
		return nil, nil, err
	}
	w.mu.Lock()
	if w.w == nil {
		if rep.LogKey == "" {
			w.mu.Unlock()
			return nil, nil, errors.New("logwatch: the hub gave no log key")
		}
		err = w.pin(ctx, rep.LogKey)
	}
	w.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	return w.Check(ctx, rep.Checkpoint, svc)
}

// Check verifies a checkpoint the hub offered and, when it extends the last
// one, cosigns it and hands the cosignature to the hub. An inconsistency is
// returned as an Alert (nil when the same checkpoint was alerted before)
// with an error.
func (w *Watcher) Check(ctx context.Context, raw []byte, svc Service) (*Result, *Alert, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.w == nil {
		return nil, nil, errors.New("logwatch: the log's key is not known yet")
	}
	lastSize, _ := w.Size(ctx)
	line, err := w.w.Update(ctx, raw, proofs{svc})
	var ie *witness.InconsistentError
	switch {
	case errors.Is(err, witness.ErrStale):
		return &Result{Size: lastSize, Stale: true}, nil, nil
	case errors.As(err, &ie):
		return nil, w.alert(ctx, AlertFork, ie.Old, ie.New, ie.Proof, ie.Err), fmt.Errorf("%w: %v", ErrInconsistent, err)
	case protocol.IsWitnessRefusal(err, reason.WitnessBeyondLog):
		// The log cannot prove a size it signed before: it is smaller now.
		var we *protocol.WitnessError
		errors.As(err, &we)
		detail := fmt.Sprintf("the log no longer reaches size %d, which it signed (it has %d entries now): %s", max(lastSize, sizeOf(raw)), we.Size, we.Message)
		return nil, w.alert(ctx, AlertRollback, w.w.Last(), raw, nil, detail), fmt.Errorf("%w: %s", ErrInconsistent, detail)
	case err != nil && strings.Contains(err.Error(), "evidence: checkpoint"):
		// Not signed by the log's key (pkg/witness: evidence.OpenCheckpoint).
		return nil, w.alert(ctx, AlertSignature, w.w.Last(), raw, nil, err.Error()), fmt.Errorf("%w: %v", ErrInconsistent, err)
	case err != nil:
		return nil, nil, err
	}
	size := sizeOf(raw)
	res := &Result{Size: size, Cosigned: true}
	rep, err := svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessCosign, Size: size, Cosignature: string(line)})
	if err != nil {
		return res, nil, fmt.Errorf("logwatch: checkpoint %d verified and cosigned, the hub did not take the cosignature: %w", size, err)
	}
	res.Kept = rep.Kept
	return res, nil, nil
}

func sizeOf(raw []byte) uint64 {
	n, _ := parseSize(raw)
	return n
}

// proofs asks the hub's witness service for consistency proofs.
type proofs struct{ svc Service }

func (p proofs) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error) {
	rep, err := p.svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessConsistency, From: from, To: to})
	if err != nil {
		return nil, err
	}
	return rep.Proof, nil
}

// evidenceFile is what an evidence file holds: both checkpoints as the log
// signed them, the proof that failed, and what the witness concluded.
type evidenceFile struct {
	Unit   document.UnitID `json:"unit"`
	Kind   string          `json:"kind"`
	At     time.Time       `json:"at"`
	LogKey string          `json:"log_key"`
	Old    string          `json:"old_checkpoint"`
	New    string          `json:"new_checkpoint"`
	Proof  [][]byte        `json:"proof,omitempty"`
	Error  string          `json:"error"`
}

// alert keeps the evidence of an inconsistency and records the alert, once
// per offending checkpoint; it returns the new alert, or nil when that
// checkpoint was alerted before (or the evidence could not be kept: the
// error is in the detail of the next one).
func (w *Watcher) alert(ctx context.Context, kind string, old, cur []byte, proof [][]byte, detail string) *Alert {
	sum := sha256.Sum256(cur)
	digest := hex.EncodeToString(sum[:])
	var n int
	if err := w.db.QueryRowContext(ctx, `SELECT count(*) FROM alerts WHERE new_sha256 = ?`, digest).Scan(&n); err == nil && n > 0 {
		return nil
	}
	now := w.now().UTC()
	a := &Alert{At: now, Kind: kind, OldSize: sizeOf(old), NewSize: sizeOf(cur), Detail: detail}
	body, _ := json.MarshalIndent(evidenceFile{Unit: w.cfg.Unit, Kind: kind, At: now, LogKey: w.logKey, Old: string(old), New: string(cur), Proof: proof, Error: detail}, "", "  ")
	if err := os.MkdirAll(w.cfg.EvidenceDir, 0o750); err != nil {
		a.Detail += "; the evidence could not be kept: " + err.Error()
	} else {
		a.Evidence = filepath.Join(w.cfg.EvidenceDir, fmt.Sprintf("%s-%s-%d-%s.json", now.Format("20060102T150405Z"), kind, a.NewSize, digest[:12]))
		if err := durable.WriteFile(a.Evidence, body, 0o640); err != nil {
			a.Detail += "; the evidence could not be kept: " + err.Error()
			a.Evidence = ""
		}
	}
	res, err := w.db.ExecContext(ctx, `INSERT OR IGNORE INTO alerts (at, kind, old_size, new_size, new_sha256, detail, evidence) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		now.UnixNano(), kind, a.OldSize, a.NewSize, digest, a.Detail, a.Evidence)
	if err == nil {
		a.ID, _ = res.LastInsertId()
	}
	return a
}

// Alerts lists the alerts raised, oldest first.
func (w *Watcher) Alerts(ctx context.Context) ([]Alert, error) {
	rows, err := w.db.QueryContext(ctx, `SELECT id, at, kind, old_size, new_size, detail, evidence FROM alerts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("logwatch: alerts: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		var at int64
		if err := rows.Scan(&a.ID, &at, &a.Kind, &a.OldSize, &a.NewSize, &a.Detail, &a.Evidence); err != nil {
			return nil, fmt.Errorf("logwatch: alerts: %w", err)
		}
		a.At = time.Unix(0, at).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// ensureKey reads the witness key at path, or makes one named name and
// writes it there (0600).
func ensureKey(path, name string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("logwatch: key: %w", err)
	}
	skey, _, err := witness.NewKey(name)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("logwatch: key: %w", err)
	}
	if err := durable.WriteFile(path, []byte(skey+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("logwatch: key: %w", err)
	}
	return skey, nil
}

// VerifierKey returns the cosignature/v1 verifier key of a witness signing
// key (what edx unit add registers).
func VerifierKey(skey string) (string, error) {
	return witness.VerifierKeyOf(skey)
}
