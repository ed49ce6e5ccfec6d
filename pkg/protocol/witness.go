package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Witnessing the hub's transparency log. Every unit's agent is a witness
// (pkg/witness): it keeps the last checkpoint of the log it verified, checks
// each new one against it with a consistency proof, and cosigns it.
//
//   - SubjectCheckpoint: the hub publishes each checkpoint it offers for
//     cosigning (the log's signed note, without cosignatures) to every unit
//     at once; every unit may subscribe, none may publish.
//   - WitnessSubject(unit): a unit's requests to the hub's witness service
//     (WitnessRequest, answered with a WitnessReply): the newest offered
//     checkpoint, a consistency proof, a cosignature to keep, the
//     registration of the unit's witness key. Each unit may publish on its
//     own subject only, so the hub knows who asks.
const (
	SubjectCheckpoint    = "edx.checkpoint"
	SubjectWitnessPrefix = "edx.witness."
)

// WitnessSubject is the subject of a unit's requests to the witness service.
func WitnessSubject(unit string) string { return SubjectWitnessPrefix + unit }

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
	Op          WitnessOp `json:"op"`
	From        uint64    `json:"from,omitempty"`
	To          uint64    `json:"to,omitempty"`
	Size        uint64    `json:"size,omitempty"`
	Cosignature string    `json:"cosignature,omitempty"`
	Binding     []byte    `json:"binding,omitempty"`
}

// WitnessReply answers a WitnessRequest; Error says why it was refused.
type WitnessReply struct {
	// Checkpoint is the log's signed note (op checkpoint: with the
	// cosignatures kept for it).
	Checkpoint []byte `json:"checkpoint,omitempty"`
	// LogKey is the log's note verifier key (op checkpoint), for an agent
	// that was not given it: it pins the first one it sees.
	LogKey string `json:"log_key,omitempty"`
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

// ParseWitnessRequest reads a witness request; the unit comes from the
// subject.
func ParseWitnessRequest(m *nats.Msg) (document.UnitID, *WitnessRequest, error) {
	unit := document.UnitID(strings.TrimPrefix(m.Subject, SubjectWitnessPrefix))
	if !strings.HasPrefix(m.Subject, SubjectWitnessPrefix) || unit.Validate() != nil {
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
	return unit, &r, nil
}

// Witness makes a unit's requests to the witness service over its
// connection (ConnectUnit's: replies come to the unit's own inbox).
type Witness struct {
	NC   *nats.Conn
	Unit document.UnitID
}

// Do sends a request and returns the reply; a refusal is a *WitnessError.
func (w *Witness) Do(ctx context.Context, r *WitnessRequest) (*WitnessReply, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("protocol: witness %s: %w", r.Op, err)
	}
	m, err := w.NC.RequestWithContext(ctx, WitnessSubject(string(w.Unit)), body)
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

// ConsistencyProof asks for the proof that the tree of size from is a
// prefix of the tree of size to (pkg/witness.Proofs).
func (w *Witness) ConsistencyProof(ctx context.Context, from, to uint64) ([][]byte, error) {
	rep, err := w.Do(ctx, &WitnessRequest{Op: WitnessConsistency, From: from, To: to})
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
