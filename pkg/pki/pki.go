// Package pki holds what edx needs of X.509: trust roots and CRLs, chain,
// key-usage and revocation checks at a chosen time, the binding between a
// certificate and a unit, PEM key loading, and a development CA.
//
// Subject convention. A unit's signing certificate carries the unit's
// identifier, exactly as in document.UnitID, in the subject attribute
// organizationIdentifier (OID 2.5.4.97, the attribute eIDAS uses for
// organisations), and the unit's name in CN and O. The hub's certificate
// carries organizationIdentifier "EDX-HUB" and, what actually makes it the
// hub's, the hub signer extended key usage (OIDExtKeyUsageHubSigner), which
// no unit certificate may carry. One attribute, one value: a certificate
// with none or several is bound to no unit.
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// OIDOrganizationIdentifier is the subject attribute that carries the unit id.
var OIDOrganizationIdentifier = asn1.ObjectIdentifier{2, 5, 4, 97}

// HubIdentifier is the organizationIdentifier of the hub's certificate.
const HubIdentifier = "EDX-HUB"

// Extended key usages accepted on a signing certificate when it lists any.
var (
	oidDocumentSigning   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}       // RFC 9336
	oidMSDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 3, 12} // Microsoft document signing
)

// Identifier returns the organizationIdentifier of cert's subject, or "" when
// it has none or more than one.
func Identifier(cert *x509.Certificate) string {
	var v string
	n := 0
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(OIDOrganizationIdentifier) {
			s, ok := atv.Value.(string)
			if !ok {
				return ""
			}
			v = s
			n++
		}
	}
	if n != 1 {
		return ""
	}
	return v
}

// UnitOf returns the unit a signing certificate is bound to.
func UnitOf(cert *x509.Certificate) (document.UnitID, error) {
	u := document.UnitID(Identifier(cert))
	if u == "" {
		return "", errors.New("pki: certificate names no unit (subject organizationIdentifier 2.5.4.97)")
	}
	if err := u.Validate(); err != nil {
		return "", fmt.Errorf("pki: certificate: %w", err)
	}
	return u, nil
}

// SubjectString renders a subject for people, naming organizationIdentifier
// instead of printing its OID and hex value.
func SubjectString(n pkix.Name) string {
	var parts []string
	for _, atv := range n.Names {
		v := fmt.Sprint(atv.Value)
		switch {
		case atv.Type.Equal(OIDOrganizationIdentifier):
			parts = append(parts, "organizationIdentifier="+v)
		case atv.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 3}):
			parts = append(parts, "CN="+v)
		case atv.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 10}):
			parts = append(parts, "O="+v)
		case atv.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 11}):
			parts = append(parts, "OU="+v)
		case atv.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 6}):
			parts = append(parts, "C="+v)
		default:
			parts = append(parts, atv.Type.String()+"="+v)
		}
	}
	if len(parts) == 0 {
		return n.String()
	}
	return strings.Join(parts, ", ")
}

// IsHub reports whether cert has the hub's subject (organizationIdentifier
// EDX-HUB). The subject alone proves nothing (a CA may write any subject):
// the hub's certificate is told by its extended key usage
// (IsHubReceiptSigner, Trust.CheckHub).
func IsHub(cert *x509.Certificate) bool { return Identifier(cert) == HubIdentifier }

// Trust is a set of trust roots, optional intermediates and CRLs. It is safe
// for concurrent use; CRLs loaded from files are read again when the files
// change (Refresh, Reload, Watch) while checks go on, and CRLs are fetched
// from the distribution points the certificates name (FetchCRLs,
// WatchDistributionPoints) when its owner asks.
type Trust struct {
	roots         *x509.CertPool
	rootCerts     []*x509.Certificate // the bundle's self-signed roots
	intermediates []*x509.Certificate // the bundle's CA certificates that are not roots

	crlMu    sync.RWMutex
	crls     []*crlEntry           // every CRL in force: added, from files, fetched
	added    []*crlEntry           // from AddCRL
	files    []*crlFile            // from LoadCRL, in order
	dps      map[string]*distPoint // CRL distribution points by URL, learned from certificates
	dpOrder  []string              // dps' URLs in the order learned
	crlGrace time.Duration         // how long past its nextUpdate a CRL still counts
	dpWake   chan struct{}         // a URL was learned: WatchDistributionPoints fetches it

	mu        sync.Mutex
	chains    map[[32]byte]cachedChain // verified chains by leaf fingerprint
	crlIssuer map[crlKey]bool          // whether a CRL's signature verifies against an issuer
}

// cachedChain is a chain already verified; it holds while the checked time
// lies inside every certificate's validity.
type cachedChain struct {
	chain             []*x509.Certificate
	notBefore, notAft time.Time
}

type crlKey struct {
	crl    *x509.RevocationList
	issuer [32]byte
}

const maxCachedChains = 1 << 16

// NewTrust builds a Trust from a PEM bundle of root certificates. Any
// non-self-signed CA certificate in the bundle is taken as an intermediate.
func NewTrust(rootsPEM []byte) (*Trust, error) {
	certs, err := ParseCertificates(rootsPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: trust roots: %w", err)
	}
	t := &Trust{roots: x509.NewCertPool(), chains: map[[32]byte]cachedChain{}, crlIssuer: map[crlKey]bool{},
		dps: map[string]*distPoint{}, dpWake: make(chan struct{}, 1)}
	for _, c := range certs {
		if !c.IsCA {
			return nil, fmt.Errorf("pki: trust roots: %q is not a CA certificate", c.Subject.CommonName)
		}
		if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			t.roots.AddCert(c)
			t.rootCerts = append(t.rootCerts, c)
		} else {
			t.intermediates = append(t.intermediates, c)
		}
	}
	if len(t.rootCerts) == 0 {
		return nil, errors.New("pki: trust roots: no self-signed root certificate in the bundle")
	}
	// The bundle's own distribution points: the CRLs that cover its
	// intermediates (and roots that name one), signed by a CA of the
	// bundle.
	for _, c := range certs {
		t.learn(c, nil)
	}
	return t, nil
}

// LoadTrust reads a PEM bundle of trust roots from a file.
func LoadTrust(path string) (*Trust, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return NewTrust(b)
}

// Roots returns the trust-root pool.
func (t *Trust) Roots() *x509.CertPool { return t.roots }

// Check verifies a document signer's certificate leaf at time at: its chain
// through intermediates (and the trust's own) to a root, validity of every
// certificate at that time, the signing key usage, the key algorithm and
// size, and revocation by any CRL in force. It returns the verified chain,
// leaf first, or the reasons. A certificate with the hub signer's extended
// key usage (OIDExtKeyUsageHubSigner) speaks for the hub and never signs a
// document.
//
// at must be a time the verifier trusts (now, or a trusted timestamp), never
// a signing-time the signer wrote.
func (t *Trust) Check(leaf *x509.Certificate, intermediates []*x509.Certificate, at time.Time) ([]*x509.Certificate, reason.List) {
	return t.check(leaf, intermediates, at, false)
}

// CheckHub is Check for a certificate that signs for the hub (receipts,
// checkpoints): the same chain, validity, key and revocation checks, and an
// extended key usage that is the hub signer's (IsHubReceiptSigner), or a
// legacy hub certificate (LegacyHubSigner) that is not revoked at time at.
// The subject proves nothing: a unit's certificate is refused whatever its
// subject says.
func (t *Trust) CheckHub(leaf *x509.Certificate, intermediates []*x509.Certificate, at time.Time) ([]*x509.Certificate, reason.List) {
	return t.check(leaf, intermediates, at, true)
}

func (t *Trust) check(leaf *x509.Certificate, intermediates []*x509.Certificate, at time.Time, hub bool) ([]*x509.Certificate, reason.List) {
	var rs reason.List
	if err := CheckKey(leaf); err != nil {
		rs.Add(reason.SignatureAlgorithm, err.Error())
	}
	if leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		rs.Add(reason.SignatureKeyUsage, "the certificate allows neither digitalSignature nor nonRepudiation")
	}
	switch {
	case leaf.IsCA:
		rs.Add(reason.SignatureKeyUsage, "a CA certificate cannot sign documents or receipts")
	case hub:
		if !IsHubReceiptSigner(leaf) && !LegacyHubSigner(leaf) {
			rs.Add(reason.SignatureKeyUsage, fmt.Sprintf(
				"the certificate does not carry the hub signer extended key usage %s: it does not speak for the hub", OIDExtKeyUsageHubSigner))
		}
	case hasHubEKU(leaf):
		rs.Add(reason.SignatureKeyUsage, fmt.Sprintf(
			"the certificate carries the hub signer extended key usage %s: it speaks for the hub and cannot sign documents", OIDExtKeyUsageHubSigner))
	case !ekuAllowsSigning(leaf):
		rs.Add(reason.SignatureKeyUsage, "the certificate's extended key usage does not allow document signing")
	}
	chain, err := t.chain(leaf, intermediates, at)
	if err != nil {
		var inv x509.CertificateInvalidError
		var ua x509.UnknownAuthorityError
		switch {
		case errors.As(err, &inv) && inv.Reason == x509.Expired:
			rs.Add(reason.SignatureExpired, fmt.Sprintf("a certificate in the chain is not valid at %s: %v", at.UTC().Format(time.RFC3339), err))
		case errors.As(err, &ua):
			rs.Add(reason.SignatureUntrustedRoot, "the signer's chain does not reach a trusted root: "+err.Error())
		default:
			rs.Add(reason.SignatureUntrustedRoot, "the signer's chain does not verify: "+err.Error())
		}
		return nil, rs
	}
	for i := 0; i+1 < len(chain); i++ {
		if r, ok := t.revoked(chain[i], chain[i+1], at); ok {
			rs = append(rs, r)
		}
	}
	return chain, rs
}

// chain returns a verified chain for leaf at time at, from the cache when a
// chain found earlier is valid at that time.
func (t *Trust) chain(leaf *x509.Certificate, intermediates []*x509.Certificate, at time.Time) ([]*x509.Certificate, error) {
	fp := sha256.Sum256(leaf.Raw)
	t.mu.Lock()
	cc, ok := t.chains[fp]
	t.mu.Unlock()
	if ok && !at.Before(cc.notBefore) && !at.After(cc.notAft) {
		return cc.chain, nil
	}
	pool := x509.NewCertPool()
	for _, c := range intermediates {
		pool.AddCert(c)
	}
	for _, c := range t.intermediates {
		pool.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         t.roots,
		Intermediates: pool,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, err
	}
	chain := chains[0]
	for i := 0; i+1 < len(chain); i++ {
		t.learn(chain[i], chain[i+1])
	}
	cc = cachedChain{chain: chain, notBefore: chain[0].NotBefore, notAft: chain[0].NotAfter}
	for _, c := range chain[1:] {
		if c.NotBefore.After(cc.notBefore) {
			cc.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(cc.notAft) {
			cc.notAft = c.NotAfter
		}
	}
	t.mu.Lock()
	if len(t.chains) >= maxCachedChains {
		clear(t.chains)
	}
	t.chains[fp] = cc
	t.mu.Unlock()
	return chain, nil
}

// revoked looks cert up in every CRL its issuer signed. When the issuer has
// CRLs but none is current at time at (each past its nextUpdate and the
// grace), the certificate's status is unknown: signature.crl_stale.
func (t *Trust) revoked(cert, issuer *x509.Certificate, at time.Time) (reason.Reason, bool) {
	t.crlMu.RLock()
	crls, grace := t.crls, t.crlGrace
	t.crlMu.RUnlock()
	var (
		have    bool
		current bool
		latest  time.Time // the latest nextUpdate among the issuer's CRLs
	)
	for _, ce := range crls {
		crl := ce.crl
		if !t.crlSignedBy(crl, issuer) {
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(cert.SerialNumber) == 0 && !e.RevocationTime.After(at) {
				return reason.Reason{Code: reason.SignatureRevoked, Message: fmt.Sprintf(
					"certificate %s (serial %s) was revoked at %s",
					cert.Subject.CommonName, cert.SerialNumber.Text(16), e.RevocationTime.UTC().Format(time.RFC3339))}, true
			}
		}
		have = true
		if crl.NextUpdate.IsZero() || !at.After(crl.NextUpdate.Add(grace)) {
			current = true
		}
		if crl.NextUpdate.After(latest) {
			latest = crl.NextUpdate
		}
	}
	if have && !current {
		return reason.Reason{Code: reason.SignatureCRLStale, Message: fmt.Sprintf(
			"the CRL of %s was due to be replaced at %s (nextUpdate) and no newer one is loaded: whether certificate %s (serial %s) is revoked is unknown at %s",
			issuer.Subject.CommonName, latest.UTC().Format(time.RFC3339), cert.Subject.CommonName, cert.SerialNumber.Text(16),
			at.UTC().Format(time.RFC3339))}, true
	}
	return reason.Reason{}, false
}

func (t *Trust) crlSignedBy(crl *x509.RevocationList, issuer *x509.Certificate) bool {
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return false
	}
	k := crlKey{crl, sha256.Sum256(issuer.Raw)}
	t.mu.Lock()
	ok, seen := t.crlIssuer[k]
	t.mu.Unlock()
	if seen {
		return ok
	}
	ok = crl.CheckSignatureFrom(issuer) == nil
	t.mu.Lock()
	if len(t.crlIssuer) >= maxCachedChains {
		clear(t.crlIssuer)
	}
	t.crlIssuer[k] = ok
	t.mu.Unlock()
	return ok
}

// hasHubEKU reports whether c lists the hub signer's extended key usage.
func hasHubEKU(c *x509.Certificate) bool {
	for _, u := range c.UnknownExtKeyUsage {
		if u.Equal(OIDExtKeyUsageHubSigner) {
			return true
		}
	}
	return false
}

func ekuAllowsSigning(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageAny || u == x509.ExtKeyUsageEmailProtection {
			return true
		}
	}
	for _, u := range c.UnknownExtKeyUsage {
		if u.Equal(oidDocumentSigning) || u.Equal(oidMSDocumentSigning) {
			return true
		}
	}
	return false
}

// CheckKey accepts RSA keys of 2048 bits or more and ECDSA P-256 keys.
func CheckKey(c *x509.Certificate) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits; at least 2048 required", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA curve %s; P-256 required", k.Curve.Params().Name)
		}
	default:
		return fmt.Errorf("key type %T; RSA or ECDSA P-256 required", c.PublicKey)
	}
	return nil
}

// ParseCertificates decodes every CERTIFICATE block of a PEM bundle.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var p *pem.Block
		p, data = pem.Decode(data)
		if p == nil {
			break
		}
		if p.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(p.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no CERTIFICATE in PEM data")
	}
	return out, nil
}

// EncodeCertificates returns certs as a PEM bundle.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// subjectFor builds a subject with the unit identifier convention.
func subjectFor(name, identifier string) pkix.Name {
	return pkix.Name{
		Country:      []string{"VN"},
		Organization: []string{name},
		CommonName:   name,
		ExtraNames:   []pkix.AttributeTypeAndValue{{Type: OIDOrganizationIdentifier, Value: identifier}},
	}
}
