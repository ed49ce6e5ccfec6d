// Package witness lets agents (and the CLI) witness the hub's transparency
// log: a Witness keeps the last checkpoint it verified, checks each new one
// against it with a consistency proof, and cosigns it (C2SP
// tlog-cosignature, cosignature/v1, Ed25519) only when the log only grew. An
// inconsistent checkpoint is refused with an *InconsistentError that holds
// the evidence (both signed checkpoints and the proof) for the caller to keep
// and raise.
//
// VerifyQuorum checks a checkpoint against a set of witness keys: the log
// signed it and at least a quorum of witnesses cosigned it.
package witness

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/evidence"
)

// Proofs fetches consistency proofs from the log (evidence.Client does,
// from the hub's tiles).
type Proofs interface {
	ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error)
}

// State keeps a witness's last verified checkpoint durably (the agent
// keeps it in its SQLite database).
type State interface {
	// Load returns the checkpoint saved last, nil when none was.
	Load() ([]byte, error)
	// Save replaces it, durably before it returns.
	Save(checkpoint []byte) error
}

// Config is a witness's setup.
type Config struct {
	// StateFile keeps the last verified checkpoint (written durably),
	// unless State does.
	StateFile string
	State     State
	// Origin and LogKey identify the log: its origin line and its note
	// verifier key (vkey).
	Origin string
	LogKey string
	// Key is the witness's signing key (NewKey's skey).
	Key string
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.StateFile == "" && c.State == nil {
		return errors.New("witness: a state file (or state) is required")
	}
	if c.Origin == "" || c.LogKey == "" || c.Key == "" {
		return errors.New("witness: the log's origin and key and the witness's key are required")
	}
	return nil
}

// ErrStale is returned for a checkpoint smaller than the last one seen that
// is consistent with it: an old view (a cache, a lagging mirror), not a
// fork. It is not cosigned.
var ErrStale = errors.New("witness: checkpoint older than the last one seen")

// InconsistentError says the log showed two views that cannot both be
// true: the newer checkpoint does not extend the older one. Old and New are
// the two checkpoints as the log signed them; Proof is the consistency proof
// that failed (none when both have the same size and different roots).
type InconsistentError struct {
	Old   []byte   `json:"old"`
	New   []byte   `json:"new"`
	Proof [][]byte `json:"proof"`
	Err   string   `json:"error"`
}

func (e *InconsistentError) Error() string {
	return "witness: inconsistent checkpoints: " + e.Err
}

// Evidence returns the error as JSON (checkpoints and proof base64), to be
// kept: it proves the log forked to anyone with the log's public key.
func (e *InconsistentError) Evidence() []byte {
	b, _ := json.MarshalIndent(e, "", "  ")
	return b
}

// Witness holds the last verified checkpoint and the cosigning key.
type Witness struct {
	cfg    Config
	logKey note.Verifier
	signer *fnote.Signer

	mu   sync.Mutex
	last []byte // as the log signed it
	cp   *log.Checkpoint
}

// New loads the witness's state (none yet is fine: the first checkpoint is
// taken on trust) and keys.
func New(cfg Config) (*Witness, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lv, err := note.NewVerifier(cfg.LogKey)
	if err != nil {
		return nil, fmt.Errorf("witness: log key: %w", err)
	}
	s, err := fnote.NewSignerForCosignatureV1(strings.TrimSpace(cfg.Key))
	if err != nil {
		return nil, fmt.Errorf("witness: key: %w", err)
	}
	if cfg.State == nil {
		cfg.State = fileState(cfg.StateFile)
	}
	w := &Witness{cfg: cfg, logKey: lv, signer: s}
	b, err := cfg.State.Load()
	switch {
	case err != nil:
		return nil, fmt.Errorf("witness: state: %w", err)
	case b != nil:
		cp, err := evidence.OpenCheckpoint(b, cfg.Origin, lv)
		if err != nil {
			return nil, fmt.Errorf("witness: the state does not hold a checkpoint of this log: %w", err)
		}
		w.last, w.cp = b, cp
	}
	return w, nil
}

// fileState is State in a file.
type fileState string

func (f fileState) Load() ([]byte, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (f fileState) Save(b []byte) error { return writeState(string(f), b) }

// Name is the witness's key name.
func (w *Witness) Name() string { return w.signer.Name() }

// Verifier returns the verifier of this witness's cosignatures.
func (w *Witness) Verifier() note.Verifier { return w.signer.Verifier() }

// Last returns the last verified checkpoint (nil before the first).
func (w *Witness) Last() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.last)
}

// Update checks raw, a checkpoint of the log (cosignatures on it are
// ignored), against the last one: its signature, then that it extends the
// last one (a consistency proof from proofs, verified here). When it does,
// it becomes the last one (written to the state file first) and Update
// returns this witness's cosignature line over it ("— name base64\n").
//
// An older consistent checkpoint gives ErrStale; one that does not extend
// the last gives *InconsistentError and the state is left as it was, so the
// witness keeps refusing the fork.
func (w *Witness) Update(ctx context.Context, raw []byte, proofs Proofs) ([]byte, error) {
	cp, text, signed, err := w.open(raw)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cp != nil {
		old := w.cp
		switch {
		case cp.Size == old.Size:
			if !bytes.Equal(cp.Hash, old.Hash) {
				return nil, &InconsistentError{Old: w.last, New: signed, Err: fmt.Sprintf("two roots for the tree of %d", cp.Size)}
			}
		case cp.Size < old.Size:
			p, err := proofs.ConsistencyProof(ctx, cp.Size, old.Size)
			if err != nil {
				return nil, fmt.Errorf("witness: consistency proof %d to %d: %w", cp.Size, old.Size, err)
			}
			if err := evidence.VerifyConsistency(cp, old, p); err != nil {
				return nil, &InconsistentError{Old: w.last, New: signed, Proof: p, Err: err.Error()}
			}
			return nil, ErrStale
		default:
			p, err := proofs.ConsistencyProof(ctx, old.Size, cp.Size)
			if err != nil {
				return nil, fmt.Errorf("witness: consistency proof %d to %d: %w", old.Size, cp.Size, err)
			}
			if err := evidence.VerifyConsistency(old, cp, p); err != nil {
				return nil, &InconsistentError{Old: w.last, New: signed, Proof: p, Err: err.Error()}
			}
		}
	}
	if err := w.cfg.State.Save(signed); err != nil {
		return nil, fmt.Errorf("witness: state: %w", err)
	}
	w.last, w.cp = signed, cp
	return w.cosign(text)
}

// open verifies the log's signature and returns the checkpoint, the note's
// text and the note with the log's signatures only.
func (w *Witness) open(raw []byte) (*log.Checkpoint, string, []byte, error) {
	cp, err := evidence.OpenCheckpoint(raw, w.cfg.Origin, w.logKey)
	if err != nil {
		return nil, "", nil, fmt.Errorf("witness: %w", err)
	}
	n, err := note.Open(raw, note.VerifierList(w.logKey))
	if err != nil {
		return nil, "", nil, fmt.Errorf("witness: %w", err)
	}
	var b bytes.Buffer
	b.WriteString(n.Text)
	b.WriteString("\n")
	for _, s := range n.Sigs {
		fmt.Fprintf(&b, "— %s %s\n", s.Name, s.Base64)
	}
	return cp, n.Text, b.Bytes(), nil
}

// cosign signs the checkpoint's text (cosignature/v1: the witness's
// timestamp is inside the signature).
func (w *Witness) cosign(text string) ([]byte, error) {
	signed, err := note.Sign(&note.Note{Text: text}, w.signer)
	if err != nil {
		return nil, fmt.Errorf("witness: cosign: %w", err)
	}
	_, line, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return nil, errors.New("witness: cosign: malformed note")
	}
	return line, nil
}

// writeState replaces the state file durably: a temporary file, synced,
// renamed over the old one, and the directory synced.
func writeState(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("witness: state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".witness-*")
	if err != nil {
		return fmt.Errorf("witness: state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("witness: state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("witness: state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("witness: state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("witness: state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("witness: state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("witness: state: %w", err)
	}
	return nil
}

// NewKey makes a witness key named name (a unit's agent:
// "edx-witness/000.00.00.H29", say). skey signs; keep it secret. vkey is the
// cosignature/v1 verifier key to publish (the unit registry holds it).
func NewKey(name string) (skey, vkey string, err error) {
	skey, v, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("witness: %w", err)
	}
	vkey, err = fnote.VKeyToCosignatureV1(v)
	if err != nil {
		return "", "", fmt.Errorf("witness: %w", err)
	}
	return skey, vkey, nil
}

// NewVerifier returns the verifier of a witness's cosignatures from its vkey.
func NewVerifier(vkey string) (note.Verifier, error) {
	v, err := fnote.NewVerifierForCosignatureV1(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("witness: vkey: %w", err)
	}
	return v, nil
}

// VerifierKeyOf returns the cosignature/v1 verifier key of a witness's
// signing key (NewKey's skey): what the unit registry holds.
func VerifierKeyOf(skey string) (string, error) {
	skey = strings.TrimSpace(skey)
	s, err := note.NewSigner(skey)
	if err != nil {
		return "", fmt.Errorf("witness: key: %w", err)
	}
	// PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>; base64 may hold '+'.
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 {
		return "", errors.New("witness: key: malformed")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("witness: key: not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	v, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return "", fmt.Errorf("witness: key: %w", err)
	}
	vkey, err := fnote.VKeyToCosignatureV1(v)
	if err != nil {
		return "", fmt.Errorf("witness: key: %w", err)
	}
	return vkey, nil
}
