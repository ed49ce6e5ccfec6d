package audit

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/tsa"
	"github.com/edxhub/edx/pkg/witness"
)

// Options say what a bundle is checked against: nothing from the hub.
type Options struct {
	// Roots are the trust roots (PEM) of the senders' and the hub's
	// certificates.
	Roots []byte
	// TSARoots are the TSA's trust roots (PEM); default Roots.
	TSARoots []byte
	// CRLs are more CRLs (PEM or DER) to check revocation with, besides
	// the bundle's: a revocation dated after the time-stamp changes
	// nothing; one dated before it makes the document invalid.
	CRLs [][]byte
	// LogKeys verify the hub logs' checkpoints (note verifier keys); the
	// one named by the bundle's origin is used.
	LogKeys []note.Verifier
	// Witnesses and Quorum: when Witnesses are given, at least Quorum of
	// them must have cosigned the checkpoint.
	Witnesses []note.Verifier
	Quorum    int
	// Now is the verifier's clock (default time.Now): nothing is checked
	// at it but that the time-stamp is not in its future. Set it years
	// ahead: the answer is the same.
	Now time.Time
	// CRLGrace is how long past its nextUpdate a CRL still counted as
	// current at acceptance (default 1h, the hub's pki.crl_grace).
	CRLGrace time.Duration
}

// Check is one piece of the bundle and what it proves.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Proves string `json:"proves,omitempty"` // what it establishes, when OK
	Detail string `json:"detail,omitempty"` // why not, or more
}

// Report is what a bundle proves.
type Report struct {
	Valid    bool   `json:"valid"`
	Document string `json:"document"`
	Origin   string `json:"origin"`
	Index    uint64 `json:"index"`
	TreeSize uint64 `json:"tree_size"`
	// Accepted is the hub's acceptance time (the receipt's and the entry's);
	// After and Before bound it by the TSA's clock.
	Accepted time.Time `json:"accepted"`
	After    time.Time `json:"after,omitzero"`
	Before   time.Time `json:"before"`
	Signer   string    `json:"signer,omitempty"`
	Checks   []Check   `json:"checks"`
}

func (r *Report) add(name string, ok bool, proves, detail string) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Proves: proves, Detail: detail})
}

// clockSlack is how far the hub's acceptance time may lie after the TSA's
// time on the checkpoint holding it, beyond the token's accuracy: the
// TSA's genTime is whole seconds, the hub's milliseconds.
const clockSlack = time.Second

// Verify checks a bundle offline. The time everything is checked at is the
// acceptance time, which the TSA bounds: before its time on the checkpoint
// holding the entry, after its time on the previous one. The sender's
// certificate must be valid and unrevoked then (by the CRLs in force then,
// which the entry names and the bundle holds), the hub's when it signed
// the receipt; neither need be valid now.
func Verify(b *Bundle, o Options) (*Report, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	r := &Report{Document: string(b.Document), Origin: b.Origin, Index: b.Proof.Index}
	tsaRootsPEM := o.TSARoots
	if len(tsaRootsPEM) == 0 {
		tsaRootsPEM = o.Roots
	}
	tsaRoots := x509.NewCertPool()
	if !tsaRoots.AppendCertsFromPEM(tsaRootsPEM) {
		return nil, errors.New("audit: no TSA root certificate")
	}
	var logKey note.Verifier
	for _, k := range o.LogKeys {
		if k.Name() == b.Origin {
			logKey = k
		}
	}
	if logKey == nil {
		return nil, fmt.Errorf("audit: no log key for the log %q the bundle names (--log-key)", b.Origin)
	}

	// 1. The log and its time-stamps.
	cp, err := evidence.OpenCheckpoint(b.Proof.Checkpoint, b.Origin, logKey)
	if err == nil {
		err = evidence.VerifyInclusion(b.Proof.Entry, b.Proof.Index, b.Proof.Hashes, cp)
	}
	if err != nil {
		r.add("log", false, "", err.Error())
		return r, nil
	}
	r.TreeSize = cp.Size
	r.add("log", true, fmt.Sprintf("entry %d is in the tree of %d entries that the log %s signed (key %08x)", b.Proof.Index, cp.Size, b.Origin, logKey.KeyHash()), "")
	v, err := b.Proof.Verify(evidence.ProofOptions{Origin: b.Origin, LogKey: logKey, TSARoots: tsaRoots, RequireTimestamp: true})
	if err != nil {
		r.add("timestamp", false, "", err.Error())
		return r, nil
	}
	r.Before, r.After = v.Time, v.After
	d := sha256.Sum256(b.Proof.Checkpoint)
	info, err := tsa.VerifyToken(b.Proof.Timestamp, d[:], tsa.VerifyOptions{Roots: tsaRoots})
	if err != nil {
		r.add("timestamp", false, "", err.Error())
		return r, nil
	}
	if info.Time.After(o.Now) {
		r.add("timestamp", false, "", fmt.Sprintf("the time-stamp (%s) is later than now (%s)", info.Time.UTC().Format(time.RFC3339), o.Now.UTC().Format(time.RFC3339)))
		return r, nil
	}
	r.add("timestamp", true, fmt.Sprintf("the TSA %q attests that the checkpoint, so the entry, existed at %s (accuracy %s, policy %s)",
		info.Chain[0].Subject.CommonName, info.Time.UTC().Format(time.RFC3339), info.Accuracy, info.Policy), "")
	if v.Previous != nil {
		r.add("previous", true, fmt.Sprintf("the log's time-stamped checkpoint of %d entries, at %s, did not hold it yet: it was logged after that time",
			v.Previous.Size, v.After.UTC().Format(time.RFC3339)), "")
	} else {
		r.add("previous", true, "", "no earlier time-stamped checkpoint: the entry is in the log's first one; the TSA bounds its time from above only")
	}
	if len(o.Witnesses) > 0 {
		cos := b.Cosigned
		if len(cos) == 0 {
			cos = b.Proof.Checkpoint
		}
		if !bytes.HasPrefix(cos, noteBody(b.Proof.Checkpoint)) {
			r.add("witnesses", false, "", "the cosigned checkpoint is not the one time-stamped")
		} else if _, got, err := witness.VerifyQuorum(cos, b.Origin, logKey, o.Witnesses, o.Quorum); err != nil {
			r.add("witnesses", false, "", fmt.Sprintf("%v (cosigned by %s)", err, names(got)))
		} else {
			r.add("witnesses", true, fmt.Sprintf("%d of %d witnesses (%s) cosigned the checkpoint: the log showed them this tree, and every tree after it extends it",
				len(got), len(o.Witnesses), names(got)), "")
		}
	}

	// 2. The entry: the acceptance of this container.
	e := v.Entry
	sum := sha256.Sum256(b.Container)
	csha := hex.EncodeToString(sum[:])
	r.Accepted = e.Time
	var bad []string
	if e.Kind != evidence.Accepted {
		bad = append(bad, fmt.Sprintf("the entry records a %s decision, not an acceptance", e.Kind))
	}
	if e.Doc != string(b.Document) {
		bad = append(bad, fmt.Sprintf("the entry names document %s", e.Doc))
	}
	if e.Container != csha {
		bad = append(bad, fmt.Sprintf("the entry names container %s, the bundle's is %s", e.Container, csha))
	}
	if e.Time.After(v.Time.Add(info.Accuracy + clockSlack)) {
		bad = append(bad, fmt.Sprintf("the hub's time %s is after the TSA's %s", e.Time.Format(time.RFC3339Nano), v.Time.Format(time.RFC3339)))
	}
	if !v.After.IsZero() && e.Time.Before(v.After.Add(-clockSlack)) {
		bad = append(bad, fmt.Sprintf("the hub's time %s is before the previous time-stamp %s", e.Time.Format(time.RFC3339Nano), v.After.Format(time.RFC3339)))
	}
	for _, c := range e.CRLs {
		if _, ok := b.CRLs[c]; !ok {
			bad = append(bad, fmt.Sprintf("the entry names CRL %s, which the bundle lacks", c))
		}
	}
	if len(bad) > 0 {
		r.add("entry", false, "", strings.Join(bad, "; "))
		return r, nil
	}
	r.add("entry", true, fmt.Sprintf("the hub accepted container %s… of document %s from %s to %s at %s, a time the TSA bounds",
		csha[:16], e.Doc, e.Sender, strings.Join(e.Recipients, ", "), e.Time.UTC().Format(time.RFC3339Nano)), "")

	// 3. The container, at the acceptance time, with the CRLs in force then.
	trust, err := pki.NewTrust(o.Roots)
	if err != nil {
		return nil, fmt.Errorf("audit: trust roots: %w", err)
	}
	if o.CRLGrace == 0 {
		o.CRLGrace = time.Hour
	}
	trust.SetCRLGrace(o.CRLGrace)
	var crlText []string
	for _, dg := range slices.Sorted(maps.Keys(b.CRLs)) {
		der := b.CRLs[dg]
		if err := trust.AddCRL(der); err != nil {
			r.add("crl", false, "", fmt.Sprintf("crl/%s.crl: %v", dg, err))
			return r, nil
		}
		crl, _ := x509.ParseRevocationList(der)
		inForce := !crl.ThisUpdate.After(e.Time) && (crl.NextUpdate.IsZero() || !e.Time.After(crl.NextUpdate.Add(o.CRLGrace)))
		crlText = append(crlText, fmt.Sprintf("%s… by %s, %s to %s (%d revoked)%s", dg[:16], pki.SubjectString(crl.Issuer),
			crl.ThisUpdate.UTC().Format(time.RFC3339), crl.NextUpdate.UTC().Format(time.RFC3339), len(crl.RevokedCertificateEntries),
			map[bool]string{true: "", false: " NOT in force then"}[inForce]))
	}
	for i, c := range o.CRLs {
		if err := trust.AddCRL(c); err != nil {
			return nil, fmt.Errorf("audit: CRL %d: %w", i+1, err)
		}
	}
	if len(crlText) > 0 {
		r.add("crls", true, "the CRLs in force at acceptance, named by the entry: "+strings.Join(crlText, "; "), "")
	}
	_, rep := container.VerifyBytes(b.Container, container.DefaultLimits, container.Options{Trust: trust, At: e.Time})
	if !rep.Valid {
		r.add("container", false, "", rep.Reasons.Error())
	} else {
		s := rep.Signature
		r.Signer = s.SignerSubject
		if rep.DocumentID != b.Document || string(rep.From) != e.Sender || !sameUnits(rep.To, e.Recipients) {
			r.add("container", false, "", fmt.Sprintf("the container's metadata (%s from %s to %v) is not what the entry names", rep.DocumentID, rep.From, rep.To))
		} else {
			r.add("container", true, fmt.Sprintf("%s (serial %s, unit %s) signed the manifest, which covers every file; the chain to the roots was valid and not revoked at %s",
				s.SignerSubject, s.SignerSerial, rep.SignerUnit, e.Time.UTC().Format(time.RFC3339)), "")
		}
	}

	// 4. The receipt: the hub's signature on the acceptance, naming the entry.
	rr := container.VerifyReceipt(b.Receipt, csha, container.Options{Trust: trust, At: v.Time.Add(info.Accuracy + clockSlack)})
	switch {
	case !rr.Valid:
		r.add("receipt", false, "", rr.Reasons.Error())
	case rr.Receipt.Log == nil || rr.Receipt.Log.Origin != b.Origin || rr.Receipt.Log.Index != b.Proof.Index:
		r.add("receipt", false, "", fmt.Sprintf("the receipt names log entry %+v, not %s #%d", rr.Receipt.Log, b.Origin, b.Proof.Index))
	case !rr.Receipt.AcceptedAt.Equal(e.Time) || rr.Receipt.DocumentID != b.Document:
		r.add("receipt", false, "", fmt.Sprintf("the receipt says %s accepted at %s; the entry %s at %s", rr.Receipt.DocumentID,
			rr.Receipt.AcceptedAt.Format(time.RFC3339Nano), e.Doc, e.Time.Format(time.RFC3339Nano)))
	default:
		r.add("receipt", true, fmt.Sprintf("the hub (%s, certificate profile %s) signed the acceptance of this container at %s, naming log entry %s #%d",
			rr.Signature.SignerSubject, rr.HubProfile, rr.Receipt.AcceptedAt.UTC().Format(time.RFC3339Nano), b.Origin, b.Proof.Index), "")
	}

	// 5. The statuses the archive holds (the recipients' reports).
	if len(b.Statuses) > 0 {
		r.add("statuses", true, "", fmt.Sprintf("%d statuses archived for the document (as the hub recorded them; each is in the log as a status entry)", len(b.Statuses)))
	}
	r.Valid = true
	for _, c := range r.Checks {
		r.Valid = r.Valid && c.OK
	}
	return r, nil
}

// noteBody is a signed note up to its signatures (text and blank line).
func noteBody(n []byte) []byte {
	if i := bytes.Index(n, []byte("\n\n")); i >= 0 {
		return n[:i+2]
	}
	return n
}

func names(cs []witness.Cosignature) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func sameUnits[U ~string](a []U, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if string(a[i]) != b[i] {
			return false
		}
	}
	return true
}
