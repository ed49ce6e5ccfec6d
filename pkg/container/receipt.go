package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// ReceiptVersion is the version of the receipt body this code writes. Later
// versions add fields (a timestamp token, a transparency-log inclusion
// proof); readers ignore fields they do not know.
const ReceiptVersion = 1

// Receipt is what the hub signs when it accepts a document: proof that the
// container with this digest was accepted and archived under this key at
// this time.
type Receipt struct {
	Version         int               `json:"version"`
	Type            string            `json:"type"` // "edx.receipt"
	DocumentID      document.ID       `json:"document_id"`
	From            document.UnitID   `json:"from"`
	To              []document.UnitID `json:"to"`
	ContainerSHA256 string            `json:"container_sha256"`
	ContainerSize   int64             `json:"container_size"`
	ArchiveKey      string            `json:"archive_key"`
	AcceptedAt      time.Time         `json:"accepted_at"`
}

// SignReceipt returns the receipt as an attached DER CMS SignedData (the
// receipt JSON inside), signed by the hub.
func SignReceipt(r *Receipt, hub *pki.Signer) ([]byte, error) {
	if r.Version == 0 {
		r.Version = ReceiptVersion
	}
	r.Type = "edx.receipt"
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("container: receipt: %w", err)
	}
	return sign(body, hub, false)
}

// ReceiptReport is the result of checking a receipt.
type ReceiptReport struct {
	Valid     bool           `json:"valid"`
	Receipt   *Receipt       `json:"receipt,omitempty"`
	Signature *SignatureInfo `json:"signature,omitempty"`
	// HubProfile is how the signer's certificate speaks for the hub:
	// "hub-signer" (the hub signer extended key usage), "legacy" (a
	// subject-only hub certificate issued before pki.HubProfileSince, valid
	// for receipts accepted before its retirement), or "" (it does not).
	HubProfile string      `json:"hub_profile,omitempty"`
	Reasons    reason.List `json:"reasons"`
}

// maxReceiptSkew is how far in the future of the verifier's clock a
// receipt's acceptance time may lie (clocks differ a little).
const maxReceiptSkew = 5 * time.Minute

// VerifyReceipt checks a hub receipt: its CMS signature, that the signer's
// certificate speaks for the hub (the hub signer extended key usage, which
// no unit certificate carries: pki.Trust.CheckHub; a forged subject counts
// for nothing), and, when containerSHA256 is not empty, that it names that
// container. The hub's chain (validity, revocation) is checked as of the
// receipt's accepted_at, the time the hub signed it: a receipt stays valid
// after the hub's certificate expires or is replaced, and one signed after
// the certificate was revoked is not. opts.At is the verifier's clock (now
// when zero): a receipt accepted after it (beyond a few minutes' skew) is
// invalid.
//
// accepted_at is the hub's own statement: a stolen hub key could backdate a
// receipt. A trusted timestamp on the receipt (planned) removes that trust.
func VerifyReceipt(der []byte, containerSHA256 string, opts Options) *ReceiptReport {
	if opts.At.IsZero() {
		opts.At = time.Now()
	}
	out := &ReceiptReport{Reasons: reason.List{}}
	at := opts.At
	if rc, err := decodeReceipt(signedContent(der)); err == nil && !rc.AcceptedAt.IsZero() {
		if rc.AcceptedAt.After(opts.At.Add(maxReceiptSkew)) {
			out.Reasons.Add(reason.ReceiptInvalid, fmt.Sprintf("the receipt says it was accepted at %s, later than now (%s)",
				rc.AcceptedAt.UTC().Format(time.RFC3339), opts.At.UTC().Format(time.RFC3339)))
		} else {
			at = rc.AcceptedAt
		}
	}
	leaf, body, info, rs := checkCMS(der, nil, opts.Trust, at, true)
	out.Signature = &info
	for _, r := range rs {
		if r.Code.Transient() {
			out.Reasons = append(out.Reasons, r) // the receipt may be fine: the verifier cannot tell yet
			continue
		}
		out.Reasons.Add(reason.ReceiptInvalid, r.String())
	}
	switch {
	case leaf == nil:
	case pki.IsHubReceiptSigner(leaf):
		out.HubProfile = "hub-signer"
	case pki.LegacyHubSigner(leaf):
		out.HubProfile = "legacy"
	case opts.Trust == nil: // else CheckHub said why
		out.Reasons.Add(reason.ReceiptInvalid, fmt.Sprintf(
			"the receipt is not signed by a hub certificate (extended key usage %s)", pki.OIDExtKeyUsageHubSigner))
	}
	if body != nil {
		rc, err := decodeReceipt(body)
		if err != nil {
			out.Reasons.Add(reason.ReceiptInvalid, "the signed content is not an edx receipt")
		} else {
			out.Receipt = rc
			if containerSHA256 != "" && rc.ContainerSHA256 != containerSHA256 {
				out.Reasons.Add(reason.ReceiptInvalid, fmt.Sprintf("the receipt names container %s, this one is %s", rc.ContainerSHA256, containerSHA256))
			}
		}
	}
	out.Valid = len(out.Reasons) == 0
	return out
}

func decodeReceipt(body []byte) (*Receipt, error) {
	if body == nil {
		return nil, errors.New("no content")
	}
	var rc Receipt
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&rc); err != nil {
		return nil, err
	}
	if rc.Type != "edx.receipt" {
		return nil, fmt.Errorf("type %q", rc.Type)
	}
	return &rc, nil
}
