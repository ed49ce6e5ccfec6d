package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// Signed statuses (issue #11): a recipient's agent signs its 01 (delivered)
// and every later status with the unit's key (container.SignStatus: the
// status and the SHA-256 of the container it is about, an attached CMS),
// so that an auditor can prove receipt by the recipient, not only routing
// by the hub. The hub checks the signature, archives it with the status
// (projection.EncodeStatus: one object, one write), records its digest in the index
// (index.StatusEntry.SignatureSHA256) and passes it to the sender with the
// status notice.

// What becomes of an unsigned status (Config.UnsignedStatuses).
const (
	// UnsignedFlag records an unsigned status as such (no signature
	// digest): the transition from agents that do not sign.
	UnsignedFlag = "flag"
	// UnsignedRefuse refuses it (status.unsigned).
	UnsignedRefuse = "refuse"
)

// statusSignature checks the unit's signature on a status report (the
// caller archives it with the status). It returns the signature's digest
// ("" for an unsigned status the configuration lets through), or the
// reason to refuse the status, or an error to retry on (the registry, a
// stale CRL).
//
// The signature must verify now against the hub's trust (chain, key usage,
// revocation) as a document signer's, be by the certificate the unit is
// registered with, sign exactly the status the message carries, and name
// the document's container: every code but 02, whose digest is what the
// recipient's agent received (a refusal on receipt may be of other bytes).
func (p *Pipeline) statusSignature(ctx context.Context, unit document.UnitID, rep *protocol.StatusReport, doc *accepted) (string, *reason.Reason, error) {
	refuse := func(c reason.Code, format string, args ...any) (string, *reason.Reason, error) {
		p.m.statusSigned.WithLabelValues("refused").Inc()
		return "", &reason.Reason{Code: c, Message: fmt.Sprintf(format, args...)}, nil
	}
	if len(rep.Signature) == 0 {
		if p.cfg.UnsignedStatuses == UnsignedRefuse {
			return refuse(reason.StatusUnsigned, "unit %s did not sign its status %s on %s; this hub requires signed statuses (an agent that signs them is needed)",
				unit, rep.Code, rep.DocumentID)
		}
		p.m.statusSigned.WithLabelValues("unsigned").Inc()
		return "", nil, nil
	}
	v := container.VerifyStatus(rep.Signature, container.Options{Trust: p.trust, At: p.now()})
	var transient reason.List
	for _, r := range v.Reasons {
		if r.Code.Transient() {
			transient = append(transient, r)
		}
	}
	switch {
	case len(transient) > 0:
		return "", nil, retry("pipeline: status signature of %s on %s: %v", unit, rep.DocumentID, transient)
	case !v.Valid:
		return refuse(reason.StatusSignature, "the signature does not verify: %v", v.Reasons)
	}
	if err := v.Statement.Matches(rep.Status); err != nil {
		return refuse(reason.StatusSignature, "%v", err)
	}
	if doc.sha256 != "" && v.Statement.ContainerSHA256 != doc.sha256 && rep.Code != document.StatusRefused {
		return refuse(reason.StatusSignature, "the signed status names container %s, document %s's is %s", v.Statement.ContainerSHA256, rep.DocumentID, doc.sha256)
	}
	ok, registered, err := p.units.UnitCert(ctx, unit, v.Signature.SignerSerial)
	switch {
	case err != nil:
		return "", nil, retry("pipeline: unit %s: %w", unit, err)
	case !ok:
		return refuse(reason.StatusSignature, "signed with certificate %s; unit %s is registered with certificate %s", v.Signature.SignerSerial, unit, registered)
	}
	p.m.statusSigned.WithLabelValues("signed").Inc()
	sum := sha256.Sum256(rep.Signature)
	return hex.EncodeToString(sum[:]), nil, nil
}

// signatureOf returns the archived signature of a recorded status whose
// digest is sum, for the notice to the sender: the one archived with the
// status (archived, from archiveStatus) when it is that one, else, for a
// status archived before signatures went into its object, the signature
// beside it.
func (p *Pipeline) signatureOf(ctx context.Context, st *document.Status, archived []byte, sum string) []byte {
	if sum == "" {
		return nil
	}
	if d := sha256.Sum256(archived); len(archived) > 0 && hex.EncodeToString(d[:]) == sum {
		return archived
	}
	b, _, err := p.arch.Get(ctx, projection.StatusSignatureKey(st))
	if err != nil {
		p.log.Warn("pipeline: the archived status signature cannot be read for the notice", "doc_id", st.DocumentID, "err", err)
		return nil
	}
	return b
}
