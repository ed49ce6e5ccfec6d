package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// CRL distribution points. A Trust learns the distribution point URLs
// (http and https only) of the certificates in its bundle and of every
// chain it verifies, and fetches their CRLs when its owner asks (FetchCRLs,
// or WatchDistributionPoints in the background): each fetched CRL must
// verify against an issuer known for the URL (the CA that issued a
// certificate naming it, or a CA of the bundle) and is then in force like
// a CRL file, until its nextUpdate, when it is fetched again. A fetch never
// blocks a check: a URL not fetched yet, or failing, leaves the CRLs in
// force as they are (a fetched CRL is kept until a newer one replaces it,
// so its revocations are never dropped; past its nextUpdate and the grace
// it is stale, as a file would be).
//
// Only chains that verify to a trusted root teach URLs: what a signer
// writes into an untrusted certificate makes no request.

// Limits on what certificates can make a Trust fetch.
const (
	maxDPURL      = 2048 // bytes of one URL
	maxDPsPerCert = 4    // URLs taken from one certificate
	maxDPs        = 256  // URLs one Trust remembers
	maxDPIssuers  = 8    // issuers remembered for one URL
	maxRedirects  = 3
)

// oidDeltaCRLIndicator marks a delta CRL, which lists changes only: it is
// not a CRL in force on its own.
var oidDeltaCRLIndicator = asn1.ObjectIdentifier{2, 5, 29, 27}

// FetchConfig bounds fetching CRLs from distribution points.
type FetchConfig struct {
	// Disabled stops fetching; the URLs are still learned.
	Disabled bool `yaml:"disabled"`
	// Timeout of one request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxBytes is the largest CRL taken (default 10 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// Retry is how long after a failure a URL is tried again (default 5m).
	Retry time.Duration `yaml:"retry"`
	// MaxAge is how long a CRL without a nextUpdate is kept before it is
	// fetched again (default 24h).
	MaxAge time.Duration `yaml:"max_age"`
	// Client makes the requests (default: a client with Timeout that
	// follows at most 3 redirects, to http and https URLs only).
	Client *http.Client `yaml:"-"`
	// Now is the clock (default time.Now).
	Now func() time.Time `yaml:"-"`
}

// SetDefaults fills what is not set.
func (c *FetchConfig) SetDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 10 << 20
	}
	if c.Retry == 0 {
		c.Retry = 5 * time.Minute
	}
	if c.MaxAge == 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.Timeout, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s URL", req.URL.Scheme)
			}
			return nil
		}}
	}
}

// Validate checks a defaulted configuration.
func (c *FetchConfig) Validate() error {
	var errs []error
	if c.Timeout < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("timeout %s: want at least 10ms", c.Timeout))
	}
	if c.MaxBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("max_bytes %d: want at least 1024", c.MaxBytes))
	}
	if c.Retry < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("retry %s: want at least 10ms", c.Retry))
	}
	if c.MaxAge < time.Second {
		errs = append(errs, fmt.Errorf("max_age %s: want at least 1s", c.MaxAge))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pki: crl_fetch: %w", err)
	}
	return nil
}

// distPoint is one CRL distribution point: where its CRL comes from, who
// may sign it, the CRL in force from it and when to fetch it again.
type distPoint struct {
	url      string
	issuers  []*x509.Certificate // the issuers of the certificates that named it
	entry    *crlEntry           // the CRL in force from it, nil before the first success
	next     time.Time           // when it is due (zero: at once)
	fetched  time.Time           // the last success
	tried    time.Time           // the last attempt
	err      error               // the last attempt's error, nil after a success
	failures int                 // attempts failed in a row
}

// learn records the CRL distribution points of cert, whose CRL issuer is
// issuer (nil when unknown: a CA of the bundle is looked for at fetch).
func (t *Trust) learn(cert, issuer *x509.Certificate) {
	if len(cert.CRLDistributionPoints) == 0 {
		return
	}
	added := false
	t.crlMu.Lock()
	for i, u := range cert.CRLDistributionPoints {
		if i == maxDPsPerCert {
			break
		}
		if !fetchableURL(u) {
			continue
		}
		dp, ok := t.dps[u]
		if !ok {
			if len(t.dps) >= maxDPs {
				continue
			}
			dp = &distPoint{url: u}
			t.dps[u] = dp
			t.dpOrder = append(t.dpOrder, u)
			added = true
		}
		if issuer != nil && len(dp.issuers) < maxDPIssuers && !containsCert(dp.issuers, issuer) {
			dp.issuers = append(dp.issuers, issuer)
		}
	}
	t.crlMu.Unlock()
	if added {
		select {
		case t.dpWake <- struct{}{}:
		default:
		}
	}
}

func fetchableURL(u string) bool {
	if len(u) > maxDPURL {
		return false
	}
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != ""
}

func containsCert(cs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range cs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// FetchResult is what fetching one distribution point did.
type FetchResult struct {
	URL string
	// SHA256 is the hex SHA-256 of the CRL in force from the URL after the
	// attempt ("" when there is none yet).
	SHA256 string
	// Changed: a CRL new to this URL is in force.
	Changed bool
	// Err is why the attempt failed; the CRL in force from the URL, if
	// any, stays.
	Err error
}

// FetchCRLs fetches the CRL of every distribution point due at cfg.Now():
// one never fetched, one whose CRL reached its nextUpdate (or MaxAge
// without one), one whose last attempt failed Retry ago. A CRL is taken
// only when it parses, is a complete CRL (not a delta), is not older than
// the one in force from the URL, and its signature verifies against an
// issuer known for the URL. It returns what each attempt did; cfg must be
// defaulted (SetDefaults).
func (t *Trust) FetchCRLs(ctx context.Context, cfg FetchConfig) []FetchResult {
	if cfg.Disabled {
		return nil
	}
	now := cfg.Now()
	type job struct {
		url     string
		issuers []*x509.Certificate
		old     *crlEntry
	}
	var jobs []job
	t.crlMu.RLock()
	for _, u := range t.dpOrder {
		dp := t.dps[u]
		if now.Before(dp.next) {
			continue
		}
		jobs = append(jobs, job{url: u, issuers: append(append([]*x509.Certificate(nil), dp.issuers...), t.caCerts()...), old: dp.entry})
	}
	t.crlMu.RUnlock()
	var out []FetchResult
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		e, err := fetchCRL(ctx, cfg, j.url, j.issuers, j.old)
		res := FetchResult{URL: j.url, Err: err}
		t.crlMu.Lock()
		dp := t.dps[j.url]
		dp.tried, dp.err = now, err
		if err != nil {
			dp.failures++
			dp.next = now.Add(cfg.Retry)
		} else {
			dp.failures, dp.fetched = 0, now
			if dp.entry == nil || dp.entry.sha256 != e.sha256 {
				dp.entry, res.Changed = e, true
				t.rebuildLocked()
			}
			switch nu := dp.entry.crl.NextUpdate; {
			case nu.IsZero():
				dp.next = now.Add(cfg.MaxAge)
			case nu.After(now):
				dp.next = nu
			default: // served already past its nextUpdate
				dp.next = now.Add(cfg.Retry)
			}
		}
		if dp.entry != nil {
			res.SHA256 = hex.EncodeToString(dp.entry.sha256[:])
		}
		t.crlMu.Unlock()
		out = append(out, res)
	}
	return out
}

// caCerts is every CA certificate of the bundle.
func (t *Trust) caCerts() []*x509.Certificate {
	return append(append([]*x509.Certificate(nil), t.rootCerts...), t.intermediates...)
}

// fetchCRL gets one CRL and checks it before use.
func fetchCRL(ctx context.Context, cfg FetchConfig, u string, issuers []*x509.Certificate, old *crlEntry) (*crlEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("pki: crl %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/pkix-crl")
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pki: crl %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pki: crl %s: HTTP %s", u, resp.Status)
	}
	if resp.ContentLength > cfg.MaxBytes {
		return nil, fmt.Errorf("pki: crl %s: %d bytes, more than the %d allowed", u, resp.ContentLength, cfg.MaxBytes)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, cfg.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("pki: crl %s: %w", u, err)
	}
	if int64(len(b)) > cfg.MaxBytes {
		return nil, fmt.Errorf("pki: crl %s: more than the %d bytes allowed", u, cfg.MaxBytes)
	}
	crl, err := parseCRL(b)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, u)
	}
	for _, ext := range crl.Extensions {
		if ext.Id.Equal(oidDeltaCRLIndicator) {
			return nil, fmt.Errorf("pki: crl %s: a delta CRL, not a complete one", u)
		}
	}
	signed := false
	for _, is := range issuers {
		if bytes.Equal(crl.RawIssuer, is.RawSubject) && crl.CheckSignatureFrom(is) == nil {
			signed = true
			break
		}
	}
	if !signed {
		return nil, fmt.Errorf("pki: crl %s: issued by %s, and its signature verifies against no issuer known for this URL",
			u, SubjectString(crl.Issuer))
	}
	if old != nil {
		oc := old.crl
		if bytes.Equal(oc.RawIssuer, crl.RawIssuer) && (crl.ThisUpdate.Before(oc.ThisUpdate) ||
			crl.Number != nil && oc.Number != nil && crl.Number.Cmp(oc.Number) < 0) {
			return nil, fmt.Errorf("pki: crl %s: number %v of %s is older than the %v of %s in force; kept the one in force",
				u, crl.Number, crl.ThisUpdate.UTC().Format(time.RFC3339), oc.Number, oc.ThisUpdate.UTC().Format(time.RFC3339))
		}
	}
	e := newCRLEntry(crl)
	e.url = u
	return e, nil
}

// WatchDistributionPoints calls FetchCRLs every interval, and at once when
// a check learns a new URL, until ctx is done; report (which may be nil)
// gets what each call did when it did anything. It runs on the caller's
// goroutine.
func (t *Trust) WatchDistributionPoints(ctx context.Context, interval time.Duration, cfg FetchConfig, report func([]FetchResult)) {
	cfg.SetDefaults()
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		if rs := t.FetchCRLs(ctx, cfg); len(rs) > 0 && report != nil && ctx.Err() == nil {
			report(rs)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		case <-t.dpWake:
		}
	}
}

// DistributionPoint describes a CRL distribution point a Trust knows.
type DistributionPoint struct {
	URL      string    `json:"url"`
	SHA256   string    `json:"sha256,omitempty"` // of the CRL in force from it
	Fetched  time.Time `json:"fetched,omitzero"`
	Tried    time.Time `json:"tried,omitzero"`
	Next     time.Time `json:"next,omitzero"`
	Error    string    `json:"error,omitempty"` // the last attempt's
	Failures int       `json:"failures"`        // in a row
}

// DistributionPoints lists the distribution points learned so far.
func (t *Trust) DistributionPoints() []DistributionPoint {
	t.crlMu.RLock()
	defer t.crlMu.RUnlock()
	out := make([]DistributionPoint, 0, len(t.dpOrder))
	for _, u := range t.dpOrder {
		dp := t.dps[u]
		d := DistributionPoint{URL: u, Fetched: dp.fetched, Tried: dp.tried, Next: dp.next, Failures: dp.failures}
		if dp.entry != nil {
			d.SHA256 = hex.EncodeToString(dp.entry.sha256[:])
		}
		if dp.err != nil {
			d.Error = dp.err.Error()
		}
		out = append(out, d)
	}
	return out
}
