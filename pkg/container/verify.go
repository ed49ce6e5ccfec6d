package container

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// FileCheck is the report on one file of the container.
type FileCheck struct {
	Name      string `json:"name"`
	MediaType string `json:"media_type"`
	Size      int    `json:"size"`
	SHA256    string `json:"sha256"`
	OK        bool   `json:"ok"`
}

// Report is the result of verifying a container.
type Report struct {
	Valid           bool               `json:"valid"`
	ContainerSHA256 string             `json:"container_sha256"`
	Size            int                `json:"size"`
	DocumentID      document.ID        `json:"document_id,omitempty"`
	From            document.UnitID    `json:"from,omitempty"`
	To              []document.UnitID  `json:"to,omitempty"`
	Subject         string             `json:"subject,omitempty"`
	SignerUnit      document.UnitID    `json:"signer_unit,omitempty"`
	Files           []FileCheck        `json:"files"`
	Signature       *SignatureInfo     `json:"signature,omitempty"`
	Problems        []document.Problem `json:"metadata_problems,omitempty"`
	Reasons         reason.List        `json:"reasons"`
}

// Options say what to trust and when.
type Options struct {
	Trust *pki.Trust
	// At is the time the signer's chain is checked at: now at ingest, a
	// trusted timestamp later. Never the signer's own signing-time claim.
	At time.Time
}

// VerifyBytes opens and verifies a container from untrusted bytes; structural
// failures are reported like any other.
func VerifyBytes(data []byte, lim Limits, opts Options) (*Container, *Report) {
	sum := sha256.Sum256(data)
	c, err := Open(data, lim)
	if err != nil {
		r := &Report{ContainerSHA256: hex.EncodeToString(sum[:]), Size: len(data), Files: []FileCheck{}}
		var rs reason.List
		if !errors.As(err, &rs) {
			rs = reason.List{{Code: reason.ContainerMalformed, Message: err.Error()}}
		}
		r.Reasons = rs
		return nil, r
	}
	return c, Verify(c, opts)
}

// Verify checks an opened container: every file against the manifest, the
// metadata, the CMS signature over the manifest, the signer's chain, key
// usage and revocation at opts.At, and that the signer's certificate belongs
// to the sending unit.
func Verify(c *Container, opts Options) *Report {
	if opts.At.IsZero() {
		opts.At = time.Now()
	}
	sum := sha256.Sum256(c.Raw)
	r := &Report{ContainerSHA256: hex.EncodeToString(sum[:]), Size: len(c.Raw), Files: []FileCheck{}}
	var rs reason.List

	listed := map[string]bool{}
	for _, ref := range c.Refs {
		listed[ref.Name] = true
		e := c.Entry(ref.Name)
		if e == nil {
			rs.Add(reason.ContainerMissingFile, fmt.Sprintf("%q is in the manifest but not in the container", ref.Name))
			continue
		}
		fc := FileCheck{Name: e.Name, MediaType: ref.MediaType, Size: int(e.Size), SHA256: hex.EncodeToString(e.SHA256[:]), OK: e.SHA256 == ref.SHA256}
		if !fc.OK {
			rs.Add(reason.ContainerDigestMismatch, fmt.Sprintf("%q does not match its manifest digest", ref.Name))
		}
		r.Files = append(r.Files, fc)
	}
	nfiles := 0
	for _, e := range c.Entries {
		if !listed[e.Name] {
			rs.Add(reason.ContainerUnlistedFile, fmt.Sprintf("%q is not in the manifest", e.Name))
		}
		if strings.HasPrefix(e.Name, FilesDir) {
			nfiles++
		}
	}
	if nfiles == 0 {
		rs.Add(reason.ContainerNoFiles, "the container holds no payload file")
	}

	d := c.Meta
	r.DocumentID, r.From, r.To, r.Subject = d.ID, d.From, d.To, d.Subject
	if err := d.Validate(); err != nil {
		var ps document.Problems
		if errors.As(err, &ps) {
			r.Problems = ps
			for _, p := range ps {
				if p.Field == "confidentiality" {
					rs.Add(reason.MetadataClassified, p.Message)
				}
			}
		}
		rs.Add(reason.MetadataInvalid, err.Error())
	}

	leaf, _, info, srs := checkCMS(c.Signature, c.Manifest, opts.Trust, opts.At, false)
	r.Signature = &info
	rs = append(rs, srs...)
	if leaf != nil {
		u, err := pki.UnitOf(leaf)
		switch {
		case err != nil:
			rs.Add(reason.SignatureNoUnit, err.Error())
		case u != d.From:
			rs.Add(reason.SignatureUnitMismatch, fmt.Sprintf("the certificate belongs to unit %s, the document is from %s", u, d.From))
		default:
			r.SignerUnit = u
		}
	}
	r.Reasons = rs
	if r.Reasons == nil {
		r.Reasons = reason.List{}
	}
	r.Valid = len(rs) == 0
	return r
}
