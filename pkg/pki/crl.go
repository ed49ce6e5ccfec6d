package pki

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// crlFile is a CRL loaded from a file, with what the file looked like when
// it was read, so that a change is seen by a stat alone.
type crlFile struct {
	path    string
	modTime time.Time
	size    int64
	crl     *x509.RevocationList
}

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
	t.added = append(t.added, crl)
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
	return &crlFile{path: path, modTime: fi.ModTime(), size: fi.Size(), crl: crl}, nil
}

// rebuildLocked recomputes the CRLs in force; crlMu is held.
func (t *Trust) rebuildLocked() {
	crls := make([]*x509.RevocationList, 0, len(t.added)+len(t.files))
	crls = append(crls, t.added...)
	for _, f := range t.files {
		crls = append(crls, f.crl)
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
			if fi.ModTime().Equal(f.modTime) && fi.Size() == f.size {
				continue
			}
		}
		nf, err := readCRLFile(f.path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if nf.crl.Number != nil && f.crl.Number != nil && nf.crl.Number.Cmp(f.crl.Number) < 0 {
			errs = append(errs, fmt.Errorf("pki: crl %s: number %s is older than the %s in force; kept the one in force",
				f.path, nf.crl.Number, f.crl.Number))
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
	Path       string    `json:"path,omitempty"` // empty for a CRL added from bytes
	Issuer     string    `json:"issuer"`
	Number     *big.Int  `json:"number,omitempty"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update,omitzero"`
	Revoked    int       `json:"revoked"`
	// Stale: at the time CRLs was asked about, past NextUpdate and the
	// grace, with no newer CRL of the same issuer in force.
	Stale bool `json:"stale"`
}

// CRLs describes the CRLs in force as of now.
func (t *Trust) CRLs(now time.Time) []CRLInfo {
	t.crlMu.RLock()
	defer t.crlMu.RUnlock()
	current := map[string]bool{} // issuer → has a current CRL
	for _, c := range t.crls {
		if c.NextUpdate.IsZero() || !now.After(c.NextUpdate.Add(t.crlGrace)) {
			current[string(c.RawIssuer)] = true
		}
	}
	paths := map[*x509.RevocationList]string{}
	for _, f := range t.files {
		paths[f.crl] = f.path
	}
	out := make([]CRLInfo, 0, len(t.crls))
	for _, c := range t.crls {
		out = append(out, CRLInfo{Path: paths[c], Issuer: SubjectString(c.Issuer), Number: c.Number,
			ThisUpdate: c.ThisUpdate, NextUpdate: c.NextUpdate, Revoked: len(c.RevokedCertificateEntries),
			Stale: !current[string(c.RawIssuer)]})
	}
	return out
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
