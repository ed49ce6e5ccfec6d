package service

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/audit"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
)

// Evidence reads the hubs' transparency logs (the hub implements it): its
// own, and the others' from their mirrors in the archive.
type Evidence interface {
	// Proof returns the evidence of entry index of the log origin: its
	// inclusion in the smallest time-stamped checkpoint that holds it
	// (with the token and the previous one), or, while none does, in the
	// newest checkpoint without a token. ErrUnavailable while no
	// published checkpoint holds it yet.
	Proof(ctx context.Context, origin string, index uint64) (*evidence.Proof, error)
	// Cosigned returns the checkpoint of size size of the log origin with
	// the witnesses' cosignatures kept for it.
	Cosigned(ctx context.Context, origin string, size uint64) ([]byte, error)
	// Info describes this hub's log (GET /api/v1/log).
	Info() any
}

// DocumentProof is a document's log evidence (GET
// /api/v1/documents/{id}/proof).
type DocumentProof struct {
	DocumentID document.ID `json:"document_id"`
	// Origin names the log the receipt names (one log per hub).
	Origin string `json:"origin"`
	// Proof is the acceptance's entry and its inclusion proof; Timestamp
	// is empty while the checkpoint awaits its time-stamp.
	Proof *evidence.Proof `json:"proof"`
	// Cosigned is the proof's checkpoint with its witnesses'
	// cosignatures (when time-stamped).
	Cosigned []byte `json:"cosigned,omitempty"`
}

// receiptLog reads a document's receipt and the log entry it names.
func (svc *Service) receiptLog(ctx context.Context, who *auth.Identity, id document.ID) ([]byte, *Document, *container.Receipt, error) {
	if svc.d.Evidence == nil {
		return nil, nil, nil, fmt.Errorf("%w: this hub keeps no transparency log", ErrNotFound)
	}
	b, d, err := svc.Receipt(ctx, who, id)
	if err != nil {
		return nil, nil, nil, err
	}
	rc := container.VerifyReceipt(b, d.ContainerSHA256, container.Options{Trust: svc.d.Trust, At: svc.now()}).Receipt
	if rc == nil {
		return nil, nil, nil, fmt.Errorf("%w: the archived receipt of %s is unreadable", ErrUnavailable, id)
	}
	if rc.Log == nil {
		return nil, nil, nil, fmt.Errorf("%w: document %s was accepted by a hub without a transparency log: its receipt names no entry", ErrNotFound, id)
	}
	return b, d, rc, nil
}

// Proof returns a document's log evidence, for those who may verify.
func (svc *Service) Proof(ctx context.Context, who *auth.Identity, id document.ID) (*DocumentProof, error) {
	_, _, rc, err := svc.receiptLog(ctx, who, id)
	if err != nil {
		return nil, err
	}
	p, err := svc.d.Evidence.Proof(ctx, rc.Log.Origin, rc.Log.Index)
	if err != nil {
		return nil, err
	}
	out := &DocumentProof{DocumentID: id, Origin: rc.Log.Origin, Proof: p}
	if len(p.Timestamp) > 0 {
		if size, err := checkpointSize(p.Checkpoint); err == nil {
			if out.Cosigned, err = svc.d.Evidence.Cosigned(ctx, rc.Log.Origin, size); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// ErrPending: the evidence asked for is not there yet, and will be (a log
// entry not yet in a published or time-stamped checkpoint). The API
// answers 503 with the reason and Retry-After.
var ErrPending = fmt.Errorf("%w: not yet", ErrUnavailable)

// ErrNotStamped: the document's entry is not in a time-stamped checkpoint
// yet (the hub time-stamps its log every tlog.timestamp_interval).
var ErrNotStamped = fmt.Errorf("%w: the document's log entry is not in a time-stamped checkpoint yet; try again after the log's time-stamp interval", ErrPending)

// Bundle returns a document's audit bundle (pkg/audit), for those who may
// read its content and verify: the container, the receipt, the log proof
// against a time-stamped checkpoint with its token and cosignatures, the
// CRLs the entry names, and the archived statuses.
func (svc *Service) Bundle(ctx context.Context, who *auth.Identity, id document.ID) ([]byte, error) {
	receipt, d, rc, err := svc.receiptLog(ctx, who, id)
	if err != nil {
		return nil, err
	}
	if !who.Can(auth.ReadContent) {
		return nil, fmt.Errorf("%w: the %s role sees metadata and reports, not content", ErrForbidden, who.User.Role)
	}
	p, err := svc.d.Evidence.Proof(ctx, rc.Log.Origin, rc.Log.Index)
	if err != nil {
		return nil, err
	}
	if len(p.Timestamp) == 0 {
		return nil, ErrNotStamped
	}
	b := &audit.Bundle{Document: id, Receipt: receipt, Origin: rc.Log.Origin, Proof: p, CRLs: map[string][]byte{}, Statuses: map[string][]byte{}}
	if size, err := checkpointSize(p.Checkpoint); err == nil {
		if b.Cosigned, err = svc.d.Evidence.Cosigned(ctx, rc.Log.Origin, size); err != nil {
			return nil, err
		}
	}
	if b.Container, err = svc.readAll(ctx, d.ArchiveKey); err != nil {
		return nil, err
	}
	e, err := evidence.ParseEntry(p.Entry)
	if err != nil {
		return nil, fmt.Errorf("%w: log entry %d: %v", ErrUnavailable, p.Index, err)
	}
	for _, c := range e.CRLs {
		der, _, err := svc.d.Archive.Get(ctx, projection.CRLKey(c))
		if err != nil {
			return nil, fmt.Errorf("crl %s: %w", c, err)
		}
		b.CRLs[c] = der
	}
	prefix := projection.StatusPrefix(id)
	for o, err := range svc.d.Archive.List(ctx, prefix) {
		if err != nil {
			return nil, err
		}
		data, _, err := svc.d.Archive.Get(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		b.Statuses[strings.TrimPrefix(o.Key, prefix)] = data
		// A signature archived with its status is also given on its own,
		// named as it was archived beside the status before, for OpenSSL.
		if k, err := projection.ParseKey(o.Key); err == nil && k.Kind == projection.KindStatus {
			if _, sig, err := projection.DecodeStatus(data); err == nil && sig != nil {
				st := document.Status{DocumentID: id, Unit: k.Unit, Code: k.Code, Time: k.At}
				b.Statuses[strings.TrimPrefix(projection.StatusSignatureKey(&st), prefix)] = sig
			}
		}
	}
	return b.Marshal()
}

// checkpointSize reads a checkpoint's tree size (its second line),
// unverified: the client verifies.
func checkpointSize(cp []byte) (uint64, error) {
	lines := strings.SplitN(string(cp), "\n", 3)
	if len(lines) < 3 {
		return 0, errors.New("malformed checkpoint")
	}
	var n uint64
	_, err := fmt.Sscan(lines[1], &n)
	return n, err
}

// LogInfo describes this hub's log (GET /api/v1/log), or ErrNotFound on a
// hub without one.
func (svc *Service) LogInfo() (any, error) {
	if svc.d.Evidence == nil {
		return nil, fmt.Errorf("%w: this hub keeps no transparency log", ErrNotFound)
	}
	return svc.d.Evidence.Info(), nil
}
