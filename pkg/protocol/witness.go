package protocol

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Witnessing the hubs' transparency logs. Each hub has a log of its own
// (its origin, its key); every unit's agent is a witness of every one of
// them (pkg/witness): it keeps the last checkpoint of each log it verified,
// checks each new one against it with a consistency proof, and cosigns it.
//
//   - SubjectCheckpoint: every hub publishes each checkpoint of its log it
//     offers for cosigning (the log's signed note, without cosignatures) to
//     every unit at once; every unit may subscribe, none may publish.
//   - WitnessSubject(origin, unit): a unit's requests to the witness
//     service of the hub whose log has that origin (WitnessRequest,
//     answered with a WitnessReply): the newest offered checkpoint, a
//     consistency proof, a cosignature to keep, the registration of the
//     unit's witness key. The subject names the log (LogToken), so each
//     request reaches the one hub that holds it; each unit may publish
//     only with its own id last, so the hub knows who asks.
const (
	SubjectCheckpoint    = "edx.checkpoint"
	SubjectWitnessPrefix = "edx.witness."
)

// LogToken is the subject token of a log: the first 8 bytes of its
// origin's SHA-256, in hex (an origin holds '.' and '/', which a subject
// token cannot).
func LogToken(origin string) string {
	s := sha256.Sum256([]byte(origin))
	return hex.EncodeToString(s[:LogTokenBytes])
}

// LogTokenBytes is how many bytes of the origin's SHA-256 a log's token
// has, in lower-case hex.
const LogTokenBytes = 8

// WitnessSubject is the subject of a unit's requests to the witness service
// of the log with the given origin.
func WitnessSubject(origin, unit string) string {
	return SubjectWitnessPrefix + LogToken(origin) + "." + unit
}

// WitnessServiceSubject is what the hub whose log has origin subscribes
// to: every unit's requests about that log.
func WitnessServiceSubject(origin string) string {
	return SubjectWitnessPrefix + LogToken(origin) + ".>"
}

// MaxWitnessRequest bounds a witness request (a registration carries the
// unit's signed statement and certificate chain; everything else is tiny).
// The hub refuses larger ones.
const MaxWitnessRequest = 16 << 10

// MaxWitnessReply bounds what a unit reads of a reply: a checkpoint with its
// cosignatures and a proof of at most 64 hashes.
const MaxWitnessReply = 96 << 10

// WitnessOp is what a witness request asks for.
type WitnessOp string

// Witness operations.
const (
	// WitnessCheckpoint asks for the newest checkpoint offered for
	// cosigning, with the cosignatures kept for it so far and the log's
	// verifier key.
	WitnessCheckpoint WitnessOp = "checkpoint"
	// WitnessConsistency asks for the proof that the tree of size From is a
	// prefix of the tree of size To.
	WitnessConsistency WitnessOp = "consistency"
	// WitnessCosign hands the hub the unit's cosignature line over the
	// checkpoint of size Size.
	WitnessCosign WitnessOp = "cosign"
	// WitnessRegister registers the unit's witness key: Binding is the
	// unit's signed statement of it (container.SignWitnessKey).
	WitnessRegister WitnessOp = "register"
)

// WitnessRequest is a unit's request to the witness service.
type WitnessRequest struct {
	Op WitnessOp `json:"op"`
	// Origin names the log asked about (its subject is WitnessSubject of
	// it); the hub refuses a request about another log.
	Origin      string `json:"origin"`
	From        uint64 `json:"from,omitempty"`
	To          uint64 `json:"to,omitempty"`
	Size        uint64 `json:"size,omitempty"`
	Cosignature string `json:"cosignature,omitempty"`
	Binding     []byte `json:"binding,omitempty"`
}

// WitnessReply answers a WitnessRequest; Error says why it was refused.
type WitnessReply struct {
	// Checkpoint is the log's signed note (op checkpoint: with the
	// cosignatures kept for it).
	Checkpoint []byte `json:"checkpoint,omitempty"`
	// LogKey is the log's note verifier key (op checkpoint), for an agent
	// that was not given it: it pins the first one it sees.
	LogKey string `json:"log_key,omitempty"`
	// LogStatement (op checkpoint) is the hub's statement that LogKey is
	// the key of its log (container.SignLogKey: CMS signed with the hub's
	// receipt certificate). An agent learns the key of a log it was not
	// given only from a statement that verifies with its trust roots.
	LogStatement []byte `json:"log_statement,omitempty"`
	// Proof is a consistency proof (op consistency).
	Proof [][]byte `json:"proof,omitempty"`
	// Size is the log's size now (op consistency refused with
	// reason.WitnessBeyondLog).
	Size uint64 `json:"size,omitempty"`
	// Kept says a cosignature was kept (op cosign): false when the hub has
	// enough cosignatures on that checkpoint already, or had this one.
	Kept  bool           `json:"kept,omitempty"`
	Error *reason.Reason `json:"error,omitempty"`
}

// WitnessError is a refusal by the witness service.
type WitnessError struct {
	reason.Reason
	Size uint64 // the log's size, with reason.WitnessBeyondLog
}

func (e *WitnessError) Error() string { return "witness service: " + e.Reason.String() }

// ParseWitnessRequest reads a witness request about the log with the given
// origin; the unit comes from the subject (WitnessSubject).
func ParseWitnessRequest(m *nats.Msg, origin string) (document.UnitID, *WitnessRequest, error) {
	prefix := SubjectWitnessPrefix + LogToken(origin) + "."
	unit := document.UnitID(strings.TrimPrefix(m.Subject, prefix))
	if !strings.HasPrefix(m.Subject, prefix) || unit.Validate() != nil {
		return unit, nil, fmt.Errorf("protocol: witness request on subject %q", m.Subject)
	}
	if len(m.Data) > MaxWitnessRequest {
		return unit, nil, fmt.Errorf("protocol: witness request of %d bytes (at most %d)", len(m.Data), MaxWitnessRequest)
	}
	var r WitnessRequest
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return unit, nil, fmt.Errorf("protocol: witness request: %w", err)
	}
	switch r.Op {
	case WitnessCheckpoint, WitnessConsistency, WitnessCosign, WitnessRegister:
	default:
		return unit, nil, fmt.Errorf("protocol: witness request: unknown op %q", r.Op)
	}
	if r.Origin != origin {
		return unit, &r, fmt.Errorf("protocol: witness request about log %q on the subject of log %q", r.Origin, origin)
	}
	return unit, &r, nil
}

// Witness makes a unit's requests to the witness service over its
// connection (ConnectUnit's: replies come to the unit's own inbox).
type Witness struct {
	NC   *nats.Conn
	Unit document.UnitID
}

// Do sends a request to the hub of the log r.Origin names and returns the
// reply; a refusal is a *WitnessError.
func (w *Witness) Do(ctx context.Context, r *WitnessRequest) (*WitnessReply, error) {
	if r.Origin == "" {
		return nil, fmt.Errorf("protocol: witness %s: no log named", r.Op)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("protocol: witness %s: %w", r.Op, err)
	}
	m, err := w.NC.RequestWithContext(ctx, WitnessSubject(r.Origin, string(w.Unit)), body)
	if err != nil {
		return nil, fmt.Errorf("protocol: witness %s: %w", r.Op, err)
	}
	if len(m.Data) > MaxWitnessReply {
		return nil, fmt.Errorf("protocol: witness %s: a reply of %d bytes", r.Op, len(m.Data))
	}
	var rep WitnessReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return nil, fmt.Errorf("protocol: witness %s: reply: %w", r.Op, err)
	}
	if rep.Error != nil {
		return &rep, &WitnessError{Reason: *rep.Error, Size: rep.Size}
	}
	return &rep, nil
}

// Proofs asks the hub of the log with origin for consistency proofs
// (pkg/witness.Proofs).
func (w *Witness) Proofs(origin string) LogProofs { return LogProofs{w: w, origin: origin} }

// LogProofs asks one log's hub for consistency proofs.
type LogProofs struct {
	w      *Witness
	origin string
}

// ConsistencyProof asks for the proof that the tree of size from is a
// prefix of the tree of size to (pkg/witness.Proofs).
func (p LogProofs) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error) {
	rep, err := p.w.Do(ctx, &WitnessRequest{Op: WitnessConsistency, Origin: p.origin, From: from, To: to})
	if err != nil {
		return nil, err
	}
	return rep.Proof, nil
}

// IsWitnessRefusal reports whether err is the witness service's refusal
// with code c.
func IsWitnessRefusal(err error, c reason.Code) bool {
	var we *WitnessError
	return errors.As(err, &we) && we.Code == c
}

// CheckpointMsg is the message that offers a checkpoint to every witness.
func CheckpointMsg(checkpoint []byte) *nats.Msg {
	m := nats.NewMsg(SubjectCheckpoint)
	m.Header.Set(HeaderVersion, ProtocolVersion)
	m.Data = checkpoint
	return m
}
