package container

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// oidSigningCertificateV2 is the ESS signing-certificate-v2 attribute (RFC 5035).
var oidSigningCertificateV2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47}

// essCertIDv2 with the default hash algorithm (SHA-256) left out, as DER requires.
type essCertIDv2 struct {
	CertHash []byte
}

type signingCertificateV2 struct {
	Certs []essCertIDv2
}

// SignDetached makes a DER CMS SignedData over content, detached, with SHA-256
// and the signed attributes content-type, message-digest, signing-time and
// ESS signing-certificate-v2; the signer's chain is included.
func SignDetached(content []byte, s *pki.Signer) ([]byte, error) {
	return sign(content, s, true)
}

func sign(content []byte, s *pki.Signer, detached bool) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return nil, fmt.Errorf("container: sign: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	h := sha256.Sum256(s.Cert().Raw)
	cfg := pkcs7.SignerInfoConfig{ExtraSignedAttributes: []pkcs7.Attribute{{
		Type:  oidSigningCertificateV2,
		Value: signingCertificateV2{Certs: []essCertIDv2{{CertHash: h[:]}}},
	}}}
	// The chain is checked once per signer (signedChains), not at every
	// signature as AddSignerChain would: an agent signs each document and
	// status with the same chain, and the check cost as much as the
	// signature. Without parents the issuer named is the leaf's own
	// RawIssuer, the same bytes as its checked issuer's subject.
	if err := checkSignerChain(s.Chain); err != nil {
		return nil, fmt.Errorf("container: sign: %w", err)
	}
	if err := sd.AddSignerChain(s.Cert(), s.Key, nil, cfg); err != nil {
		return nil, fmt.Errorf("container: sign: %w", err)
	}
	for _, c := range s.Chain[1:] {
		sd.AddCertificate(c)
	}
	if detached {
		sd.Detach()
	}
	der, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("container: sign: %w", err)
	}
	return der, nil
}

// signedChains remembers the signer chains checkSignerChain found linked
// (by the leaf's and its parents' pointers: a Signer's chain is parsed
// once and kept), at most maxSignedChains of them.
var (
	signedChainsMu sync.Mutex
	signedChains   = map[*x509.Certificate][]*x509.Certificate{}
)

const maxSignedChains = 4096

// checkSignerChain checks that each certificate of chain is signed by the
// next, as pkcs7's AddSignerChain does, once per chain.
func checkSignerChain(chain []*x509.Certificate) error {
	if len(chain) < 2 {
		return nil
	}
	signedChainsMu.Lock()
	seen, ok := signedChains[chain[0]]
	signedChainsMu.Unlock()
	if ok && slices.Equal(seen, chain) {
		return nil
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("the certificate %q is not signed by the next in its chain: %w", chain[i].Subject, err)
		}
	}
	signedChainsMu.Lock()
	if len(signedChains) >= maxSignedChains {
		clear(signedChains)
	}
	signedChains[chain[0]] = slices.Clone(chain)
	signedChainsMu.Unlock()
	return nil
}

// SignatureInfo describes a CMS signature and its signer.
type SignatureInfo struct {
	DigestAlgorithm string     `json:"digest_algorithm"`
	SigningTime     *time.Time `json:"signing_time,omitempty"` // as claimed by the signer
	SignerSubject   string     `json:"signer_subject,omitempty"`
	SignerSerial    string     `json:"signer_serial,omitempty"`
	SignerIssuer    string     `json:"signer_issuer,omitempty"`
	SignerNotBefore time.Time  `json:"signer_not_before"`
	SignerNotAfter  time.Time  `json:"signer_not_after"`
	Identifier      string     `json:"identifier,omitempty"` // unit id or EDX-HUB
	Chain           []string   `json:"chain,omitempty"`      // verified chain subjects, leaf first
	SigningCertRef  bool       `json:"signing_cert_ref"`     // ESS signing-certificate-v2 present and matching
	CheckedAt       time.Time  `json:"checked_at"`           // the time the chain was checked at
	// CRLs are the hex SHA-256 digests of the CRLs in force that the
	// chain's revocation was checked against (pki.Trust.CRLsFor): the
	// evidence to keep beside the decision.
	CRLs []string `json:"crls,omitempty"`
}

// checkCMS verifies a CMS signature over content (detached when content is
// non-nil; else the content is taken from the SignedData) and its signer's
// chain at time at, as a document signer or, with hub, as the hub
// (pki.Trust.CheckHub). It returns the signer, the signed content and what
// it saw.
func checkCMS(der, content []byte, trust *pki.Trust, at time.Time, hub bool) (*x509.Certificate, []byte, SignatureInfo, reason.List) {
	var rs reason.List
	info := SignatureInfo{CheckedAt: at.UTC()}
	sd, err := readSignedData(der)
	if err != nil {
		rs.Add(reason.SignatureMalformed, "not a CMS SignedData: "+err.Error())
		return nil, nil, info, rs
	}
	if content != nil {
		sd.content = content
	}
	if sd.signers != 1 {
		rs.Add(reason.SignatureSignerCount, fmt.Sprintf("%d signers, want exactly one", sd.signers))
		return nil, nil, info, rs
	}
	leaf := sd.leaf
	if leaf == nil {
		rs.Add(reason.SignatureMalformed, "the signer's certificate is not in the signature")
		return nil, nil, info, rs
	}
	info.SignerSubject = pki.SubjectString(leaf.Subject)
	info.SignerSerial = leaf.SerialNumber.Text(16)
	info.SignerIssuer = pki.SubjectString(leaf.Issuer)
	info.SignerNotBefore, info.SignerNotAfter = leaf.NotBefore.UTC(), leaf.NotAfter.UTC()
	info.Identifier = pki.Identifier(leaf)
	if sd.digestAlg.Equal(pkcs7.OIDDigestAlgorithmSHA256) {
		info.DigestAlgorithm = "SHA-256"
	} else {
		info.DigestAlgorithm = sd.digestAlg.String()
		rs.Add(reason.SignatureAlgorithm, "digest algorithm "+info.DigestAlgorithm+", SHA-256 required")
	}
	if !sd.hasAttrs {
		rs.Add(reason.SignatureMalformed, "no signed attributes")
		return leaf, nil, info, rs
	}
	var st time.Time
	if err := sd.attribute(pkcs7.OIDAttributeSigningTime, &st); err == nil {
		st = st.UTC()
		info.SigningTime = &st
	}
	var ct asn1.ObjectIdentifier
	if err := sd.attribute(pkcs7.OIDAttributeContentType, &ct); err != nil || !ct.Equal(pkcs7.OIDData) {
		rs.Add(reason.SignatureMalformed, "the content-type attribute is missing or not id-data")
	}
	var scv2 signingCertificateV2
	if err := sd.attribute(oidSigningCertificateV2, &scv2); err == nil {
		h := sha256.Sum256(leaf.Raw)
		if len(scv2.Certs) == 0 || !bytes.Equal(scv2.Certs[0].CertHash, h[:]) {
			rs.Add(reason.SignatureSigningCertRef, "ESS signing-certificate-v2 does not name the signer's certificate")
		} else {
			info.SigningCertRef = true
		}
	}
	// The signature and message digest only: the library's own chain check
	// is not used. Passing no trust store, it cannot be misled by the
	// signing-time attribute into accepting an expired signer.
	if err := sd.verify(at); err != nil {
		var ste *pkcs7.SigningTimeNotValidError
		if errors.As(err, &ste) {
			rs.Add(reason.SignatureExpired, "the claimed signing time lies outside the signer's validity")
		} else {
			rs.Add(reason.SignatureInvalid, "the signature does not verify: "+err.Error())
		}
	}
	var inter []*x509.Certificate
	for _, c := range sd.certs {
		if c != leaf {
			inter = append(inter, c)
		}
	}
	if trust == nil {
		rs.Add(reason.SignatureUntrustedRoot, "no trust roots configured")
		return leaf, sd.content, info, rs
	}
	check := trust.Check
	if hub {
		check = trust.CheckHub
	}
	chain, crs := check(leaf, inter, at)
	rs = append(rs, crs...)
	for _, c := range chain {
		info.Chain = append(info.Chain, pki.SubjectString(c.Subject))
	}
	for _, c := range trust.CRLsFor(chain, at) {
		info.CRLs = append(info.CRLs, c.SHA256)
	}
	return leaf, sd.content, info, rs
}

// signedData is what checkCMS reads of a CMS SignedData, by parseCMSDER or,
// where it declines, by pkcs7.
type signedData struct {
	signers   int
	leaf      *x509.Certificate // the only signer's certificate, or nil
	digestAlg asn1.ObjectIdentifier
	hasAttrs  bool
	certs     []*x509.Certificate
	content   []byte
	attribute func(oid asn1.ObjectIdentifier, out any) error
	verify    func(at time.Time) error // signature and message digest over content
}

func readSignedData(der []byte) (*signedData, error) {
	if cmsFastPath {
		if d, ok := parseCMSDER(der); ok {
			sd := &signedData{signers: 1, leaf: d.signer(), digestAlg: d.digestAlg, hasAttrs: len(d.attrs) > 0,
				certs: d.certs, content: d.content, attribute: d.attribute}
			sd.verify = func(time.Time) error {
				d.content = sd.content
				return d.verify()
			}
			return sd, nil
		}
	}
	p7, err := parseCMS(der)
	if err != nil {
		return nil, err
	}
	sd := &signedData{signers: len(p7.Signers), leaf: p7.GetOnlySigner(), certs: p7.Certificates, content: p7.Content,
		attribute: p7.UnmarshalSignedAttribute}
	if len(p7.Signers) == 1 {
		sd.digestAlg = p7.Signers[0].DigestAlgorithm.Algorithm
		sd.hasAttrs = len(p7.Signers[0].AuthenticatedAttributes) > 0
	}
	sd.verify = func(at time.Time) error {
		p7.Content = sd.content
		return p7.VerifyWithChainAtTime(nil, at)
	}
	return sd, nil
}

// signedContent returns the content of an attached CMS SignedData, unchecked,
// or nil.
func signedContent(der []byte) []byte {
	sd, err := readSignedData(der)
	if err != nil {
		return nil
	}
	return sd.content
}

func parseCMS(der []byte) (p7 *pkcs7.PKCS7, err error) {
	defer func() {
		if r := recover(); r != nil { // the ASN.1 parser is not our code: contain it
			p7, err = nil, fmt.Errorf("unparsable: %v", r)
		}
	}()
	return pkcs7.Parse(der)
}
