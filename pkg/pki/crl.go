package pki

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// crlEntry is one CRL in force, with the SHA-256 of its DER (what names it
// in the archive and beside a decision) and where it came from.
type crlEntry struct {
	crl    *x509.RevocationList
	sha256 [32]byte
	path   string // the file it was read from
	url    string // the distribution point it was fetched from
}

func newCRLEntry(crl *x509.RevocationList) *crlEntry {
	return &crlEntry{crl: crl, sha256: sha256.Sum256(crl.Raw)}
}

// crlFile is a CRL loaded from a file, with what the file looked like when
// it was read, so that a change is seen by a stat alone.
type crlFile struct {
	path    string
	modTime time.Time
	size    int64
	readAt  time.Time // when it was read
	entry   *crlEntry
}

// racyWindow: a file whose modification time is this close to when it was
// read may have been written again within the file system's timestamp
// granularity, at the same size (a CRL's next number often is), so a stat
// cannot tell; it is read again until its time is safely older.
const racyWindow = 2 * time.Second

// parseCRL decodes a CRL, PEM or DER.
func parseCRL(data []byte) (*x509.RevocationList, error) {
	if p, _ := pem.Decode(data); p != nil {
		if p.Type != "X509 CRL" {
			return nil, fmt.Errorf("pki: crl: PEM block %q, want X509 CRL", p.Type)
		}
		data = p.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("pki: crl: %w", err)
	}
	return crl, nil
}

// AddCRL adds a CRL (PEM or DER). A CRL applies to a certificate only when
// its signature verifies against that certificate's issuer in the chain being
// checked, so a CRL from an unknown or forged issuer revokes nothing.
func (t *Trust) AddCRL(data []byte) error {
	crl, err := parseCRL(data)
	if err != nil {
		return err
	}
	t.crlMu.Lock()
	t.added = append(t.added, newCRLEntry(crl))
	t.rebuildLocked()
	t.crlMu.Unlock()
	return nil
}

// LoadCRL reads a CRL file into the trust and remembers the file: Refresh
// (and Watch) read it again when it changes, Reload always.
func (t *Trust) LoadCRL(path string) error {
	f, err := readCRLFile(path)
	if err != nil {
		return err
	}
	t.crlMu.Lock()
	defer t.crlMu.Unlock()
	for i, old := range t.files {
		if old.path == path {
			t.files[i] = f
			t.rebuildLocked()
			return nil
		}
	}
	t.files = append(t.files, f)
	t.rebuildLocked()
	return nil
}

func readCRLFile(path string) (*crlFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	crl, err := parseCRL(b)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	e := newCRLEntry(crl)
	e.path = path
	return &crlFile{path: path, modTime: fi.ModTime(), size: fi.Size(), readAt: time.Now(), entry: e}, nil
}

// rebuildLocked recomputes the CRLs in force; crlMu is held.
func (t *Trust) rebuildLocked() {
	crls := make([]*crlEntry, 0, len(t.added)+len(t.files)+len(t.dps))
	crls = append(crls, t.added...)
	for _, f := range t.files {
		crls = append(crls, f.entry)
	}
	for _, u := range t.dpOrder {
		if e := t.dps[u].entry; e != nil {
			crls = append(crls, e)
		}
	}
	t.crls = crls
	// Signature checks are cached by CRL; drop the replaced ones'.
	t.mu.Lock()
	clear(t.crlIssuer)
	t.mu.Unlock()
}

// Refresh reads again every CRL file whose modification time or size
// changed since it was read, and reports whether any did. A file that cannot
// be read or parsed keeps its previous CRL in force (revocations are never
// dropped for a broken file) and is reported in the error; it is tried
// again at the next call.
func (t *Trust) Refresh() (changed bool, err error) { return t.reload(false) }

// Reload reads every CRL file again, changed or not.
func (t *Trust) Reload() error {
	_, err := t.reload(true)
	return err
}

func (t *Trust) reload(all bool) (bool, error) {
	t.crlMu.RLock()
	files := append([]*crlFile(nil), t.files...)
	t.crlMu.RUnlock()
	var (
		errs    []error
		updates = map[string]*crlFile{}
	)
	for _, f := range files {
		if !all {
			fi, err := os.Stat(f.path)
			if err != nil {
				errs = append(errs, fmt.Errorf("pki: crl: %w", err))
				continue
			}
			if fi.ModTime().Equal(f.modTime) && fi.Size() == f.size && f.modTime.Before(f.readAt.Add(-racyWindow)) {
				continue
			}
		}
		nf, err := readCRLFile(f.path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !all && nf.entry.sha256 == f.entry.sha256 {
			// Read again only because its time was racy: the same CRL.
			t.crlMu.Lock()
			f.modTime, f.size, f.readAt = nf.modTime, nf.size, nf.readAt
			t.crlMu.Unlock()
			continue
		}
		if n, o := nf.entry.crl.Number, f.entry.crl.Number; n != nil && o != nil && n.Cmp(o) < 0 {
			errs = append(errs, fmt.Errorf("pki: crl %s: number %s is older than the %s in force; kept the one in force",
				f.path, n, o))
			continue
		}
		updates[f.path] = nf
	}
	if len(updates) > 0 {
		t.crlMu.Lock()
		for i, f := range t.files {
			if nf, ok := updates[f.path]; ok {
				t.files[i] = nf
			}
		}
		t.rebuildLocked()
		t.crlMu.Unlock()
	}
	return len(updates) > 0, errors.Join(errs...)
}

// Watch calls Refresh every interval until ctx is done, and tells report
// what each call found (report may be nil; it runs on Watch's goroutine).
func (t *Trust) Watch(ctx context.Context, interval time.Duration, report func(changed bool, err error)) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		changed, err := t.Refresh()
		if report != nil {
			report(changed, err)
		}
	}
}

// SetCRLGrace sets how long after its nextUpdate a CRL is still taken as
// current (default 0: a CRL is stale the moment its nextUpdate passes).
func (t *Trust) SetCRLGrace(d time.Duration) {
	t.crlMu.Lock()
	t.crlGrace = d
	t.crlMu.Unlock()
}

// CRLInfo describes a CRL in force.
type CRLInfo struct {
	Path       string    `json:"path,omitempty"` // the file it was read from
	URL        string    `json:"url,omitempty"`  // the distribution point it was fetched from
	Issuer     string    `json:"issuer"`
	Number     *big.Int  `json:"number,omitempty"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update,omitzero"`
	Revoked    int       `json:"revoked"`
	// SHA256 is the hex SHA-256 of the CRL's DER: its name in the archive
	// (crl/<sha256>.crl) and beside the decisions that relied on it.
	SHA256 string `json:"sha256"`
	// Stale: at the time CRLs was asked about, past NextUpdate and the
	// grace, with no newer CRL of the same issuer in force.
	Stale bool `json:"stale"`
	// DER is the CRL as its issuer signed it.
	DER []byte `json:"-"`
}

// CRLs describes the CRLs in force as of now.
func (t *Trust) CRLs(now time.Time) []CRLInfo {
	t.crlMu.RLock()
	defer t.crlMu.RUnlock()
	return t.describeLocked(t.crls, now)
}

// describeLocked describes entries as of now; crlMu is held.
func (t *Trust) describeLocked(entries []*crlEntry, now time.Time) []CRLInfo {
	current := map[string]bool{} // issuer → has a current CRL
	for _, e := range t.crls {
		if c := e.crl; c.NextUpdate.IsZero() || !now.After(c.NextUpdate.Add(t.crlGrace)) {
			current[string(c.RawIssuer)] = true
		}
	}
	out := make([]CRLInfo, 0, len(entries))
	for _, e := range entries {
		c := e.crl
		out = append(out, CRLInfo{Path: e.path, URL: e.url, Issuer: SubjectString(c.Issuer), Number: c.Number,
			ThisUpdate: c.ThisUpdate, NextUpdate: c.NextUpdate, Revoked: len(c.RevokedCertificateEntries),
			SHA256: hex.EncodeToString(e.sha256[:]), Stale: !current[string(c.RawIssuer)], DER: c.Raw})
	}
	return out
}

// CRLsFor lists the CRLs in force that cover chain (leaf first, as Check
// returns it): each CRL whose signature verifies against the issuer of a
// certificate of the chain, once, whatever the file or distribution point
// it came from. These are what a check of the chain relies on for
// revocation: the CRLs to archive and to name beside a decision, so that
// "valid at acceptance" can be shown later. Stale is as of now.
func (t *Trust) CRLsFor(chain []*x509.Certificate, now time.Time) []CRLInfo {
	t.crlMu.RLock()
	defer t.crlMu.RUnlock()
	var used []*crlEntry
	seen := map[[32]byte]bool{}
	for i := 0; i+1 < len(chain); i++ {
		for _, e := range t.crls {
			if !seen[e.sha256] && t.crlSignedBy(e.crl, chain[i+1]) {
				seen[e.sha256] = true
				used = append(used, e)
			}
		}
	}
	return t.describeLocked(used, now)
}

// StaleCRLs lists the CRLs in force that are stale as of now: checks of a
// certificate under their issuers fail with signature.crl_stale.
func (t *Trust) StaleCRLs(now time.Time) []CRLInfo {
	var out []CRLInfo
	for _, c := range t.CRLs(now) {
		if c.Stale {
			out = append(out, c)
		}
	}
	return out
}
