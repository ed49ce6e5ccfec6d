package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
)

// signedStatus is a queued status as the agent reports it: signed by the
// unit (container.SignStatus) over the status and the digest of the
// container it is about. The signature is made once, kept with the status
// (inbox.SetStatusSignature) and sent as it is on every attempt. A status
// whose container the agent does not know (a refusal queued before
// statuses were signed) goes unsigned; the hub records it as such, or
// refuses it (pipeline unsigned_statuses).
func (a *Agent) signedStatus(ctx context.Context, st *inbox.Status) (*protocol.StatusReport, error) {
	rep := &protocol.StatusReport{Status: st.Status, Signature: st.Signature}
	if len(rep.Signature) > 0 {
		return rep, nil
	}
	sha := st.ContainerSHA256
	if sha == "" && st.Code == document.StatusCancelled {
		if rec, err := a.spool.Get(ctx, st.DocumentID); err == nil {
			sha = rec.SHA256
		}
	}
	if sha == "" {
		a.log.Warn("status sent unsigned: the agent does not know the container it is about", "doc_id", st.DocumentID, "code", st.Code)
		return rep, nil
	}
	sig, err := container.SignStatus(st.Status, sha, a.sec.Signer)
	if err != nil {
		return nil, fmt.Errorf("sign status %s on %s: %w", st.Code, st.DocumentID, err)
	}
	if rep.Signature, err = a.inbox.SetStatusSignature(ctx, st.Seq, sha, sig); err != nil {
		return nil, err
	}
	return rep, nil
}

// checkStatusSignature checks a recipient's signature over its status on a
// document this unit sent, as the hub passed it on: it must verify against
// the agent's own trust, be by the reporting unit, sign exactly this status
// and name the container the unit sent (a refusal, 02, may name what the
// recipient received instead). It returns the problems, "" for none; a
// signature with problems is kept all the same, for the document system to
// see.
func (a *Agent) checkStatusSignature(ctx context.Context, st *document.Status, sig []byte) string {
	v := container.VerifyStatus(sig, container.Options{Trust: a.sec.Trust, At: time.Now()})
	problems := v.Reasons
	if v.Statement != nil {
		if err := v.Statement.Matches(*st); err != nil {
			problems.Add(reason.StatusSignature, err.Error())
		}
		if rec, err := a.spool.Get(ctx, st.DocumentID); err == nil && st.Code != document.StatusRefused && v.Statement.ContainerSHA256 != rec.SHA256 {
			problems.Add(reason.StatusSignature, fmt.Sprintf("the signed status names container %s, the one sent is %s", v.Statement.ContainerSHA256, rec.SHA256))
		}
	}
	if len(problems) == 0 {
		return ""
	}
	a.log.Warn("a recipient's signature over its status does not hold", "doc_id", st.DocumentID, "unit", st.Unit, "code", st.Code, "problems", problems.Error())
	return problems.Error()
}
