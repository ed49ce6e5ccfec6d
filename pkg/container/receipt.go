package container

import (
	"bytes"
	"encoding/json"
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
	Reasons   reason.List    `json:"reasons"`
}

// VerifyReceipt checks a hub receipt: its CMS signature, that the signer is a
// hub certificate chaining to the trust roots at opts.At, and, when
// containerSHA256 is not empty, that it names that container.
func VerifyReceipt(der []byte, containerSHA256 string, opts Options) *ReceiptReport {
	if opts.At.IsZero() {
		opts.At = time.Now()
	}
	out := &ReceiptReport{Reasons: reason.List{}}
	leaf, body, info, rs := checkCMS(der, nil, opts.Trust, opts.At)
	out.Signature = &info
	for _, r := range rs {
		out.Reasons.Add(reason.ReceiptInvalid, r.String())
	}
	if leaf != nil && !pki.IsHub(leaf) {
		out.Reasons.Add(reason.ReceiptInvalid, "the receipt is not signed by a hub certificate")
	}
	if body != nil {
		var rc Receipt
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&rc); err != nil || rc.Type != "edx.receipt" {
			out.Reasons.Add(reason.ReceiptInvalid, "the signed content is not an edx receipt")
		} else {
			out.Receipt = &rc
			if containerSHA256 != "" && rc.ContainerSHA256 != containerSHA256 {
				out.Reasons.Add(reason.ReceiptInvalid, fmt.Sprintf("the receipt names container %s, this one is %s", rc.ContainerSHA256, containerSHA256))
			}
		}
	}
	out.Valid = len(out.Reasons) == 0
	return out
}
