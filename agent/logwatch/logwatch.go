// Package logwatch is the agent's witness of the hubs' transparency logs
// (issue #11, "agents are witnesses"). Each hub of a deployment has a log
// of its own (its origin, its key); the witness keeps, for each log, the
// last checkpoint it verified (in SQLite, beside the inbox's database),
// checks each new checkpoint a hub offers against it (the log's signature,
// then a consistency proof that the new tree extends the old one:
// pkg/witness), and cosigns it with the unit's witness key (C2SP
// cosignature/v1).
//
// The logs it knows are those whose keys it was given (the agent's
// witness.log_key_file: the unit bundle's keys of every hub's log) and
// those it learned from a hub's statement of its log's key, signed with a
// hub certificate (the hub signer extended key usage) that chains to the
// agent's trust roots (container.VerifyLogKey): a hub that joined after
// the unit was registered. A checkpoint of a log it does not know, and
// cannot learn, is not checked (and not an alarm); a log's key, once
// known, is never replaced.
//
// A checkpoint of a known log that does not extend the last one (a fork, a
// rewritten entry), a log that can no longer prove a size it signed (a
// rollback), or a checkpoint of a known origin that the log's key did not
// sign, is never cosigned: the witness keeps the evidence (both
// checkpoints as the log signed them and the proof that failed) in a file
// under its evidence directory and in its database, and reports it as an
// Alert, once per checkpoint, for the agent to log, count and send to the
// document system. That log's last checkpoint stays as it was, so it goes
// on refusing the other branch.
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
	"slices"
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

// Service is the hubs' witness service (protocol.Witness): each request
// names the log (Origin) and reaches the hub that holds it.
type Service interface {
	Do(ctx context.Context, r *protocol.WitnessRequest) (*protocol.WitnessReply, error)
}

// Config says where the witness keeps its key and state.
type Config struct {
	Unit document.UnitID
	// KeyFile holds the witness's signing key (a note key named
	// edx-witness/<unit>); made (0600) when missing.
	KeyFile string
	// LogKeys are the verifier keys of the hubs' logs the agent was given
	// (each named for its log's origin), trusted as given.
	LogKeys []string
	// Trust verifies a hub's statement of its log's key, by which the
	// witness learns a log it was not given; nil: it learns none.
	Trust *pki.Trust
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
	// AlertSignature: a checkpoint of a known log not signed by its key.
	AlertSignature = "signature"
)

// ErrInconsistent wraps Check's error for a checkpoint it refuses to cosign
// because the log is inconsistent (every Alert kind).
var ErrInconsistent = errors.New("logwatch: the hub's log is inconsistent")

// ErrUnknownLog wraps Check's error for a checkpoint of a log the witness
// does not know and could not learn (no hub's statement of its key that
// verifies): not checked, not an alarm.
var ErrUnknownLog = errors.New("logwatch: a log this witness does not know")

// Alert is an inconsistency the witness saw, with where its evidence is.
type Alert struct {
	ID       int64     `json:"id"`
	At       time.Time `json:"at"`
	Kind     string    `json:"kind"`
	Origin   string    `json:"origin"`
	OldSize  uint64    `json:"old_size"`
	NewSize  uint64    `json:"new_size"`
	Detail   string    `json:"detail"`
	Evidence string    `json:"evidence"` // the evidence file
}

// Result is what Check did with a checkpoint.
type Result struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	// Stale: an older checkpoint consistent with the last one (a late
	// message), neither cosigned nor a problem.
	Stale bool `json:"stale,omitempty"`
	// Cosigned: verified and cosigned; Kept: the hub kept the cosignature.
	Cosigned bool `json:"cosigned,omitempty"`
	Kept     bool `json:"kept,omitempty"`
	// Learned: the log's key was learned now, from its hub's statement.
	Learned bool `json:"learned,omitempty"`
}

// Log is a log the witness knows.
type Log struct {
	Origin string `json:"origin"`
	Key    string `json:"log_key"`
	// Source: "config" (given), "statement" (learned from its hub's
	// signed statement) or "pinned" (taken at first contact by an older
	// version of the agent).
	Source string `json:"source"`
	Size   uint64 `json:"size"`
}

// Watcher is one unit's witness.
type Watcher struct {
	cfg    Config
	db     *sql.DB
	skey   string
	vkey   string
	signer note.Signer
	now    func() time.Time

	mu   sync.Mutex // one check at a time
	logs map[string]*witness.Witness
	keys map[string]string // origin -> log key
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
	// One state per log: every hub of a deployment has its own.
	{SQL: `
CREATE TABLE logs (
	origin     TEXT PRIMARY KEY,
	log_key    TEXT NOT NULL,     -- the log's verifier key (named for the origin)
	source     TEXT NOT NULL,     -- config, statement (the hub's, kept below) or pinned
	statement  BLOB,              -- the hub's signed statement of the key (source statement)
	checkpoint BLOB,              -- the last checkpoint verified, as the log signed it
	size       INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL   -- Unix ns
);
INSERT INTO logs (origin, log_key, source, checkpoint, size, updated_at)
	SELECT substr(log_key, 1, instr(log_key, '+') - 1), log_key, 'pinned', checkpoint, size, updated_at
	FROM state WHERE instr(log_key, '+') > 1;
DROP TABLE state;
ALTER TABLE alerts ADD COLUMN origin TEXT NOT NULL DEFAULT '';
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
	w := &Watcher{cfg: cfg, db: db, skey: skey, vkey: vkey, signer: signer, now: time.Now,
		logs: map[string]*witness.Witness{}, keys: map[string]string{}}
	if err := w.load(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return w, nil
}

// load opens the witness of every log known, and adds the configured ones.
func (w *Watcher) load(ctx context.Context) error {
	rows, err := w.db.QueryContext(ctx, `SELECT origin, log_key FROM logs`)
	if err != nil {
		return fmt.Errorf("logwatch: state: %w", err)
	}
	known := map[string]string{}
	for rows.Next() {
		var origin, key string
		if err := rows.Scan(&origin, &key); err != nil {
			rows.Close()
			return fmt.Errorf("logwatch: state: %w", err)
		}
		known[origin] = key
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("logwatch: state: %w", err)
	}
	for _, k := range w.cfg.LogKeys {
		k = strings.TrimSpace(k)
		v, err := note.NewVerifier(k)
		if err != nil {
			return fmt.Errorf("logwatch: log key %q: %w", k, err)
		}
		switch had, ok := known[v.Name()]; {
		case ok && had != k:
			return fmt.Errorf("logwatch: the configured key of log %s is not the one this witness verified it with (%s): "+
				"a new log is a new history; move %s aside to witness it from its start", v.Name(), had, w.cfg.DB)
		case !ok:
			if _, err := w.db.ExecContext(ctx, `INSERT INTO logs (origin, log_key, source, updated_at) VALUES (?, ?, 'config', ?)`,
				v.Name(), k, w.now().UnixNano()); err != nil {
				return fmt.Errorf("logwatch: state: %w", err)
			}
			known[v.Name()] = k
		}
	}
	for origin, key := range known {
		if err := w.open(origin, key); err != nil {
			return err
		}
	}
	return nil
}

// open builds the witness of one log on its key and state.
func (w *Watcher) open(origin, key string) error {
	ww, err := witness.New(witness.Config{State: &state{w: w, origin: origin}, Origin: origin, LogKey: key, Key: w.skey})
	if err != nil {
		return fmt.Errorf("logwatch: log %s: %w", origin, err)
	}
	w.logs[origin], w.keys[origin] = ww, key
	return nil
}

// Close closes the state.
func (w *Watcher) Close() error { return w.db.Close() }

// Name is the key name of a unit's witness key.
func Name(u document.UnitID) string { return "edx-witness/" + string(u) }

// VKey is the witness's verifier key (cosignature/v1): what the unit
// registry holds.
func (w *Watcher) VKey() string { return w.vkey }

// Origins are the logs known, sorted.
func (w *Watcher) Origins() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for o := range w.logs {
		out = append(out, o)
	}
	slices.Sort(out)
	return out
}

// Logs lists the logs known with the size each was verified up to, by
// origin.
func (w *Watcher) Logs(ctx context.Context) ([]Log, error) {
	rows, err := w.db.QueryContext(ctx, `SELECT origin, log_key, source, size FROM logs ORDER BY origin`)
	if err != nil {
		return nil, fmt.Errorf("logwatch: state: %w", err)
	}
	defer rows.Close()
	var out []Log
	for rows.Next() {
		var l Log
		if err := rows.Scan(&l.Origin, &l.Key, &l.Source, &l.Size); err != nil {
			return nil, fmt.Errorf("logwatch: state: %w", err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// state is the pkg/witness State of one log in the database.
type state struct {
	w      *Watcher
	origin string
}

func (s *state) Load() ([]byte, error) {
	var b []byte
	err := s.w.db.QueryRow(`SELECT checkpoint FROM logs WHERE origin = ?`, s.origin).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return b, err
}

func (s *state) Save(cp []byte) error {
	size, _ := parseSize(cp)
	_, err := s.w.db.Exec(`UPDATE logs SET checkpoint = ?, size = ?, updated_at = ? WHERE origin = ?`, cp, size, s.w.now().UnixNano(), s.origin)
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

// OriginOf reads a checkpoint's origin (its first line) without checking
// its signature.
func OriginOf(cp []byte) string {
	o, _, _ := strings.Cut(string(cp), "\n")
	if len(o) > 256 {
		return ""
	}
	return o
}

// Size is the size of the last checkpoint of a log verified (0 before the
// first).
func (w *Watcher) Size(ctx context.Context, origin string) (uint64, error) {
	var n uint64
	err := w.db.QueryRowContext(ctx, `SELECT size FROM logs WHERE origin = ?`, origin).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

// Register asks a hub to register this witness's key for the unit, with
// the unit's statement of it signed by the unit's key: the hub of any log
// known (they share the registry). A hub that has the key already answers
// yes; one that has another key answers reason.WitnessKeyMismatch.
func (w *Watcher) Register(ctx context.Context, svc Service, s *pki.Signer) error {
	origins := w.Origins()
	if len(origins) == 0 {
		return errors.New("logwatch: no hub's log known yet to register the witness key with")
	}
	b, err := container.SignWitnessKey(w.cfg.Unit, w.vkey, w.now(), s)
	if err != nil {
		return err
	}
	for _, o := range origins {
		if _, err = svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessRegister, Origin: o, Binding: b}); err == nil ||
			protocol.IsWitnessRefusal(err, reason.WitnessKeyMismatch) {
			return err
		}
	}
	return err
}

// Outcome is what Sync did with one log.
type Outcome struct {
	Origin string
	Result *Result
	Alert  *Alert
	Err    error
}

// Sync asks the hub of each known log for its newest checkpoint offered,
// and checks it.
func (w *Watcher) Sync(ctx context.Context, svc Service) []Outcome {
	var out []Outcome
	for _, o := range w.Origins() {
		rep, err := svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessCheckpoint, Origin: o})
		if err != nil {
			out = append(out, Outcome{Origin: o, Err: err})
			continue
		}
		if got := OriginOf(rep.Checkpoint); got != o {
			out = append(out, Outcome{Origin: o, Err: fmt.Errorf("logwatch: asked for log %s, the hub gave a checkpoint of %q", o, got)})
			continue
		}
		res, alert, err := w.Check(ctx, rep.Checkpoint, svc)
		out = append(out, Outcome{Origin: o, Result: res, Alert: alert, Err: err})
	}
	return out
}

// learn asks the hub of a log the witness does not know for the log's key
// and its statement of it, and keeps the key when the statement verifies
// (a hub certificate chaining to the trust roots, naming this origin and
// key).
func (w *Watcher) learn(ctx context.Context, origin string, svc Service) error {
	if w.cfg.Trust == nil {
		return fmt.Errorf("%w: %s (no trust roots to verify its hub's statement with)", ErrUnknownLog, origin)
	}
	rep, err := svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessCheckpoint, Origin: origin})
	if err != nil {
		return fmt.Errorf("%w: %s: asking its hub: %w", ErrUnknownLog, origin, err)
	}
	st, _, rs := container.VerifyLogKey(rep.LogStatement, container.Options{Trust: w.cfg.Trust, At: w.now()})
	switch {
	case len(rep.LogStatement) == 0:
		return fmt.Errorf("%w: %s: its hub gave no statement of the log's key", ErrUnknownLog, origin)
	case len(rs) > 0:
		return fmt.Errorf("%w: %s: its hub's statement of the log's key: %v", ErrUnknownLog, origin, rs)
	case st.Origin != origin || strings.TrimSpace(rep.LogKey) != st.Key:
		return fmt.Errorf("%w: %s: the hub's statement is of log %s with key %s", ErrUnknownLog, origin, st.Origin, st.Key)
	}
	if _, err := note.NewVerifier(st.Key); err != nil {
		return fmt.Errorf("%w: %s: key %q: %v", ErrUnknownLog, origin, st.Key, err)
	}
	if _, err := w.db.ExecContext(ctx, `INSERT INTO logs (origin, log_key, source, statement, updated_at) VALUES (?, ?, 'statement', ?, ?)`,
		origin, st.Key, rep.LogStatement, w.now().UnixNano()); err != nil {
		return fmt.Errorf("logwatch: state: %w", err)
	}
	return w.open(origin, st.Key)
}

// Check verifies a checkpoint a hub offered and, when it extends the last
// one of its log, cosigns it and hands the cosignature to the log's hub. A
// log it does not know is learned first from its hub's statement
// (ErrUnknownLog when it cannot be). An inconsistency is returned as an
// Alert (nil when the same checkpoint was alerted before) with an error.
func (w *Watcher) Check(ctx context.Context, raw []byte, svc Service) (*Result, *Alert, error) {
	origin := OriginOf(raw)
	w.mu.Lock()
	defer w.mu.Unlock()
	ww := w.logs[origin]
	learned := false
	if ww == nil {
		if origin == "" {
			return nil, nil, fmt.Errorf("%w: a checkpoint with no origin", ErrUnknownLog)
		}
		if err := w.learn(ctx, origin, svc); err != nil {
			return nil, nil, err
		}
		ww, learned = w.logs[origin], true
	}
	lastSize, _ := w.Size(ctx, origin)
	line, err := ww.Update(ctx, raw, proofs{svc, origin})
	var ie *witness.InconsistentError
	switch {
	case errors.Is(err, witness.ErrStale):
		return &Result{Origin: origin, Size: lastSize, Stale: true}, nil, nil
	case errors.As(err, &ie):
		return nil, w.alert(ctx, origin, AlertFork, ie.Old, ie.New, ie.Proof, ie.Err), fmt.Errorf("%w: %v", ErrInconsistent, err)
	case protocol.IsWitnessRefusal(err, reason.WitnessBeyondLog):
		// The log cannot prove a size it signed before: it is smaller now.
		var we *protocol.WitnessError
		errors.As(err, &we)
		detail := fmt.Sprintf("the log no longer reaches size %d, which it signed (it has %d entries now): %s", max(lastSize, sizeOf(raw)), we.Size, we.Message)
		return nil, w.alert(ctx, origin, AlertRollback, ww.Last(), raw, nil, detail), fmt.Errorf("%w: %s", ErrInconsistent, detail)
	case err != nil && strings.Contains(err.Error(), "evidence: checkpoint"):
		// Not signed by the log's key (pkg/witness: evidence.OpenCheckpoint).
		return nil, w.alert(ctx, origin, AlertSignature, ww.Last(), raw, nil, err.Error()), fmt.Errorf("%w: %v", ErrInconsistent, err)
	case err != nil:
		return nil, nil, err
	}
	size := sizeOf(raw)
	res := &Result{Origin: origin, Size: size, Cosigned: true, Learned: learned}
	rep, err := svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessCosign, Origin: origin, Size: size, Cosignature: string(line)})
	if err != nil {
		return res, nil, fmt.Errorf("logwatch: checkpoint %d of %s verified and cosigned, the hub did not take the cosignature: %w", size, origin, err)
	}
	res.Kept = rep.Kept
	return res, nil, nil
}

func sizeOf(raw []byte) uint64 {
	n, _ := parseSize(raw)
	return n
}

// proofs asks a log's hub for consistency proofs.
type proofs struct {
	svc    Service
	origin string
}

func (p proofs) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error) {
	rep, err := p.svc.Do(ctx, &protocol.WitnessRequest{Op: protocol.WitnessConsistency, Origin: p.origin, From: from, To: to})
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
	Origin string          `json:"origin"`
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
func (w *Watcher) alert(ctx context.Context, origin, kind string, old, cur []byte, proof [][]byte, detail string) *Alert {
	sum := sha256.Sum256(cur)
	digest := hex.EncodeToString(sum[:])
	var n int
	if err := w.db.QueryRowContext(ctx, `SELECT count(*) FROM alerts WHERE new_sha256 = ?`, digest).Scan(&n); err == nil && n > 0 {
		return nil
	}
	now := w.now().UTC()
	a := &Alert{At: now, Kind: kind, Origin: origin, OldSize: sizeOf(old), NewSize: sizeOf(cur), Detail: detail}
	body, _ := json.MarshalIndent(evidenceFile{Unit: w.cfg.Unit, Kind: kind, At: now, Origin: origin, LogKey: w.keys[origin], Old: string(old), New: string(cur), Proof: proof, Error: detail}, "", "  ")
	if err := os.MkdirAll(w.cfg.EvidenceDir, 0o750); err != nil {
		a.Detail += "; the evidence could not be kept: " + err.Error()
	} else {
		a.Evidence = filepath.Join(w.cfg.EvidenceDir, fmt.Sprintf("%s-%s-%d-%s.json", now.Format("20060102T150405Z"), kind, a.NewSize, digest[:12]))
		if err := durable.WriteFile(a.Evidence, body, 0o640); err != nil {
			a.Detail += "; the evidence could not be kept: " + err.Error()
			a.Evidence = ""
		}
	}
	res, err := w.db.ExecContext(ctx, `INSERT OR IGNORE INTO alerts (at, kind, origin, old_size, new_size, new_sha256, detail, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		now.UnixNano(), kind, origin, a.OldSize, a.NewSize, digest, a.Detail, a.Evidence)
	if err == nil {
		a.ID, _ = res.LastInsertId()
	}
	return a
}

// Alerts lists the alerts raised, oldest first.
func (w *Watcher) Alerts(ctx context.Context) ([]Alert, error) {
	rows, err := w.db.QueryContext(ctx, `SELECT id, at, kind, origin, old_size, new_size, detail, evidence FROM alerts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("logwatch: alerts: %w", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		var at int64
		if err := rows.Scan(&a.ID, &at, &a.Kind, &a.Origin, &a.OldSize, &a.NewSize, &a.Detail, &a.Evidence); err != nil {
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
