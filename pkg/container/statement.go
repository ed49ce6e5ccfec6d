package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// Statements are small JSON documents a unit's agent signs with the unit's
// key, as an attached DER CMS SignedData (the JSON inside, SHA-256, the same
// signed attributes as a container's signature): one file that OpenSSL
// alone verifies and prints,
//
//	openssl cms -verify -in status.p7s -inform DER -CAfile roots.pem -purpose any
//
// Attached rather than detached: the statement is small, and an auditor
// holds one self-contained file per statement, not a pair to keep together.

// Statement types.
const (
	// TypeStatus is a unit's statement of a status it reports on a
	// document (StatusStatement).
	TypeStatus = "edx.status"
	// TypeWitnessKey is a unit's statement of the key its agent cosigns
	// the hub's log with (WitnessKeyStatement).
	TypeWitnessKey = "edx.witness-key"
)

// StatementVersion is the version of the statements this code writes.
const StatementVersion = 1

// maxStatement bounds a signed statement (a status within its field limits
// is a few KiB, its signature and chain a few more).
const maxStatement = 32 << 10

// StatusStatement is what a unit signs for each status it reports: the
// status itself (document, unit, code, time, and the free text a recipient
// gave) and the SHA-256 of the container it is about, so that the statement
// proves which bytes the unit received, not only that the hub routed some.
type StatusStatement struct {
	Version         int                 `json:"version"`
	Type            string              `json:"type"`
	DocumentID      document.ID         `json:"document_id"`
	ContainerSHA256 string              `json:"container_sha256"`
	Unit            document.UnitID     `json:"unit"`
	Code            document.StatusCode `json:"code"`
	Time            time.Time           `json:"time"`
	Description     string              `json:"description,omitempty"`
	Officer         *document.Officer   `json:"officer,omitempty"`
}

// NewStatusStatement is the statement of st about the container with the
// given digest.
func NewStatusStatement(st document.Status, containerSHA256 string) StatusStatement {
	return StatusStatement{Version: StatementVersion, Type: TypeStatus, DocumentID: st.DocumentID, ContainerSHA256: containerSHA256,
		Unit: st.Unit, Code: st.Code, Time: st.Time.UTC(), Description: st.Description, Officer: st.Officer}
}

// Status is the status the statement reports.
func (s *StatusStatement) Status() document.Status {
	return document.Status{DocumentID: s.DocumentID, Unit: s.Unit, Time: s.Time, Code: s.Code, Description: s.Description, Officer: s.Officer}
}

// Matches reports how st differs from the status the statement signs: nil
// when they are the same status (the same document, unit, code, time to
// the nanosecond, description and officer).
func (s *StatusStatement) Matches(st document.Status) error {
	var diff []string
	if s.DocumentID != st.DocumentID {
		diff = append(diff, "document_id")
	}
	if s.Unit != st.Unit {
		diff = append(diff, "unit")
	}
	if s.Code != st.Code {
		diff = append(diff, "code")
	}
	if !s.Time.Equal(st.Time) {
		diff = append(diff, "time")
	}
	if s.Description != st.Description {
		diff = append(diff, "description")
	}
	if (s.Officer == nil) != (st.Officer == nil) || s.Officer != nil && *s.Officer != *st.Officer {
		diff = append(diff, "officer")
	}
	if len(diff) > 0 {
		return fmt.Errorf("the signed status differs from the status reported in %s", strings.Join(diff, ", "))
	}
	return nil
}

// SignStatus signs the statement of st about the container with the digest
// containerSHA256 (hex) with the unit's key: an attached DER CMS
// SignedData.
func SignStatus(st document.Status, containerSHA256 string, s *pki.Signer) ([]byte, error) {
	if !validSHA256(containerSHA256) {
		return nil, fmt.Errorf("container: sign status: container digest %q: want 64 lower-case hex digits", containerSHA256)
	}
	body, err := json.Marshal(NewStatusStatement(st, containerSHA256))
	if err != nil {
		return nil, fmt.Errorf("container: sign status: %w", err)
	}
	return sign(body, s, false)
}

// StatusSignature is the result of checking a signed status.
type StatusSignature struct {
	Valid     bool             `json:"valid"`
	Statement *StatusStatement `json:"statement,omitempty"`
	Signature *SignatureInfo   `json:"signature,omitempty"`
	Reasons   reason.List      `json:"reasons"`
}

// VerifyStatus checks a signed status: its CMS signature, the signer's
// chain at opts.At (now when zero) as a document signer's (key usage,
// revocation), that the content is a status statement whose fields are
// valid, and that the signer's certificate names the unit that reports the
// status. Transient reasons (a stale CRL) say the check must be made again
// later. Whether the statement is the status a message carried, and the
// certificate the one registered for the unit, is the caller's to check.
func VerifyStatus(der []byte, opts Options) *StatusSignature {
	out := &StatusSignature{Reasons: reason.List{}}
	var st StatusStatement
	info, rs := verifyStatement(der, opts, TypeStatus, &st, func() document.UnitID { return st.Unit })
	out.Signature, out.Reasons = info, append(out.Reasons, rs...)
	if st.Type == TypeStatus {
		out.Statement = &st
		s := st.Status()
		if err := s.Validate(); err != nil {
			out.Reasons.Add(reason.StatusInvalid, "the signed status: "+err.Error())
		}
		if !validSHA256(st.ContainerSHA256) {
			out.Reasons.Add(reason.StatusInvalid, "the signed status names no container digest")
		}
	}
	out.Valid = len(out.Reasons) == 0
	return out
}

// WitnessKeyStatement is what a unit signs to register the key its agent
// cosigns the hub's transparency log with (a C2SP cosignature/v1 verifier
// key, pkg/witness): kept with the unit's record, it shows an auditor that
// the witness is the unit's, not one the hub made up.
type WitnessKeyStatement struct {
	Version int             `json:"version"`
	Type    string          `json:"type"`
	Unit    document.UnitID `json:"unit"`
	Key     string          `json:"witness_key"`
	Time    time.Time       `json:"time"`
}

// SignWitnessKey signs the statement that unit's witness key is vkey.
func SignWitnessKey(unit document.UnitID, vkey string, at time.Time, s *pki.Signer) ([]byte, error) {
	body, err := json.Marshal(WitnessKeyStatement{Version: StatementVersion, Type: TypeWitnessKey, Unit: unit, Key: vkey, Time: at.UTC()})
	if err != nil {
		return nil, fmt.Errorf("container: sign witness key: %w", err)
	}
	return sign(body, s, false)
}

// VerifyWitnessKey checks a signed witness key statement as VerifyStatus
// checks a status: signature, chain at opts.At, and a certificate that
// names the statement's unit.
func VerifyWitnessKey(der []byte, opts Options) (*WitnessKeyStatement, *SignatureInfo, reason.List) {
	var st WitnessKeyStatement
	info, rs := verifyStatement(der, opts, TypeWitnessKey, &st, func() document.UnitID { return st.Unit })
	if st.Type != TypeWitnessKey {
		return nil, info, rs
	}
	if st.Key == "" || len(st.Key) > 512 {
		rs.Add(reason.SignatureMalformed, "the statement names no witness key")
	}
	return &st, info, rs
}

// verifyStatement checks an attached CMS statement of type typ, decoding
// its content into into, and that the signer's certificate names unit().
func verifyStatement(der []byte, opts Options, typ string, into any, unit func() document.UnitID) (*SignatureInfo, reason.List) {
	if opts.At.IsZero() {
		opts.At = time.Now()
	}
	var rs reason.List
	if len(der) > maxStatement {
		rs.Add(reason.SignatureMalformed, fmt.Sprintf("a signed statement of %d bytes (at most %d)", len(der), maxStatement))
		return nil, rs
	}
	leaf, body, info, crs := checkCMS(der, nil, opts.Trust, opts.At, false)
	rs = append(rs, crs...)
	if body == nil {
		if leaf != nil {
			rs.Add(reason.SignatureMalformed, "the signature holds no statement (detached)")
		}
		return &info, rs
	}
	if err := decodeStatement(body, typ, into); err != nil {
		rs.Add(reason.SignatureMalformed, "the signed content is not an edx "+typ+" statement: "+err.Error())
		return &info, rs
	}
	if leaf != nil {
		u, err := pki.UnitOf(leaf)
		switch {
		case err != nil:
			rs.Add(reason.SignatureNoUnit, err.Error())
		case u != unit():
			rs.Add(reason.SignatureUnitMismatch, fmt.Sprintf("the statement is unit %s's, the certificate is unit %s's", unit(), u))
		}
	}
	return &info, rs
}

// decodeStatement reads a statement of type typ and version
// StatementVersion; unknown fields are refused (a signer cannot slip in
// what the verifier would not show).
func decodeStatement(body []byte, typ string, into any) error {
	var head struct {
		Version int    `json:"version"`
		Type    string `json:"type"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return err
	}
	if head.Type != typ {
		return fmt.Errorf("type %q", head.Type)
	}
	if head.Version != StatementVersion {
		return fmt.Errorf("version %d (this program reads %d)", head.Version, StatementVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func validSHA256(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// TypeLogKey is a hub's statement of the key of its transparency log
// (LogKeyStatement).
const TypeLogKey = "edx.log-key"

// LogKeyStatement is what a hub signs, with its receipt certificate (the
// hub signer profile, pki.OIDExtKeyUsageHubSigner), to say which key signs
// its transparency log: an agent that was not given the key of a hub's log
// (a hub that joined the cluster after the unit was registered) learns it
// from this statement alone, checked against its trust roots.
type LogKeyStatement struct {
	Version int    `json:"version"`
	Type    string `json:"type"`
	// Origin is the log's origin; Key its note verifier key, whose name is
	// the origin.
	Origin string    `json:"origin"`
	Key    string    `json:"log_key"`
	Time   time.Time `json:"time"`
}

// SignLogKey signs the statement that the log origin is signed by vkey.
func SignLogKey(origin, vkey string, at time.Time, hub *pki.Signer) ([]byte, error) {
	body, err := json.Marshal(LogKeyStatement{Version: StatementVersion, Type: TypeLogKey, Origin: origin, Key: vkey, Time: at.UTC()})
	if err != nil {
		return nil, fmt.Errorf("container: sign log key: %w", err)
	}
	return sign(body, hub, false)
}

// VerifyLogKey checks a hub's log key statement: its CMS signature, and
// that the signer's certificate speaks for the hub (the hub signer
// extended key usage, pki.Trust.CheckHub), its chain valid at opts.At; and
// that the key it names is named for the origin it names.
func VerifyLogKey(der []byte, opts Options) (*LogKeyStatement, *SignatureInfo, reason.List) {
	if opts.At.IsZero() {
		opts.At = time.Now()
	}
	var rs reason.List
	if len(der) > maxStatement {
		rs.Add(reason.SignatureMalformed, fmt.Sprintf("a signed statement of %d bytes (at most %d)", len(der), maxStatement))
		return nil, nil, rs
	}
	leaf, body, info, crs := checkCMS(der, nil, opts.Trust, opts.At, true)
	rs = append(rs, crs...)
	if leaf != nil && !pki.IsHubReceiptSigner(leaf) { // not a legacy hub certificate either: statements are new
		rs.Add(reason.SignatureInvalid, fmt.Sprintf("the statement is not signed by a hub certificate (extended key usage %s)", pki.OIDExtKeyUsageHubSigner))
	}
	if body == nil {
		rs.Add(reason.SignatureMalformed, "the signature holds no statement")
		return nil, &info, rs
	}
	var st LogKeyStatement
	if err := decodeStatement(body, TypeLogKey, &st); err != nil {
		rs.Add(reason.SignatureMalformed, "the signed content is not an edx "+TypeLogKey+" statement: "+err.Error())
		return nil, &info, rs
	}
	if name, _, ok := strings.Cut(st.Key, "+"); st.Origin == "" || !ok || name != st.Origin || len(st.Key) > 512 {
		rs.Add(reason.SignatureMalformed, fmt.Sprintf("the statement names log key %q for origin %q", st.Key, st.Origin))
	}
	return &st, &info, rs
}
