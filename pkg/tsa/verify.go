// Package tsa holds RFC 3161 time-stamping for edx: a client that asks one
// or more time-stamping authorities for a token over a digest, the check of
// such a token (the TSA's chain to given roots, its critical timeStamping
// extended key usage, the ESS signing-certificate binding, the message
// imprint), and a development TSA (Server) that the embedded hub runs.
//
// The hub time-stamps its transparency log's checkpoints; agents, the CLI and
// auditors check the tokens. A token is the DER TimeStampToken (a CMS
// SignedData over a TSTInfo) that OpenSSL reads with
//
//	openssl ts -verify -token_in -in TOKEN -data FILE -CAfile roots.pem [-untrusted chain.pem]
package tsa

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/digitorus/pkcs7"
	"github.com/digitorus/timestamp"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/edxhub/edx/pkg/pki"
)

// MaxTokenSize bounds a token (and a TSA's answer): real ones are a few KiB
// with the TSA's chain.
const MaxTokenSize = 256 << 10

var (
	oidSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidTSTInfo           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4}
	oidSigningCert       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 12}
	oidSigningCertV2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47}
	oidSHA256            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	errNotTimeStampToken = errors.New("tsa: not a time-stamp token (CMS SignedData over a TSTInfo)")
)

// Info is what a verified token says.
type Info struct {
	Time     time.Time     // genTime
	Accuracy time.Duration // 0 when the TSA states none
	Policy   asn1.ObjectIdentifier
	Serial   *big.Int
	Nonce    *big.Int            // nil when the request had none
	Hash     crypto.Hash         // of the message imprint
	Chain    []*x509.Certificate // the TSA's verified chain, leaf first
}

// VerifyOptions tune VerifyToken.
type VerifyOptions struct {
	// Roots are the trust anchors the TSA must chain to. Required.
	Roots *x509.CertPool
	// Intermediates are extra untrusted certificates (openssl's -untrusted):
	// the TSA's own certificate when the token does not carry it, or CAs
	// between it and a root.
	Intermediates []*x509.Certificate
	// At is the time at which the TSA's chain must be valid. Zero means the
	// token's own genTime: the TSA was entitled to sign when it signed, which
	// is what an auditor checks long after the TSA's certificate expired.
	At time.Time
	// Policy, when set, is the TSA policy the token must name.
	Policy asn1.ObjectIdentifier
}

// Verify checks that token is a time-stamp token over digest (a SHA-256,
// SHA-384 or SHA-512 digest of the stamped data) from a TSA chaining to
// roots, whose chain is valid at at (zero: at the token's genTime), and
// returns the genTime.
func Verify(token, digest []byte, roots *x509.CertPool, at time.Time) (time.Time, error) {
	info, err := VerifyToken(token, digest, VerifyOptions{Roots: roots, At: at})
	if err != nil {
		return time.Time{}, err
	}
	return info.Time, nil
}

// VerifyToken is Verify with options, returning all the token says.
func VerifyToken(token, digest []byte, opts VerifyOptions) (*Info, error) {
	if opts.Roots == nil {
		return nil, errors.New("tsa: verify: no trust roots")
	}
	if len(token) == 0 || len(token) > MaxTokenSize {
		return nil, fmt.Errorf("tsa: verify: token of %d bytes (want 1 to %d)", len(token), MaxTokenSize)
	}
	if err := checkEncapsulatedType(token); err != nil {
		return nil, err
	}
	p7, err := parsePKCS7(token)
	if err != nil {
		return nil, fmt.Errorf("tsa: verify: %w", err)
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("tsa: verify: %d signers (want 1)", len(p7.Signers))
	}
	p7.Certificates = append(p7.Certificates, opts.Intermediates...)
	leaf := p7.GetOnlySigner()
	if leaf == nil {
		return nil, errors.New("tsa: verify: the TSA's certificate is neither in the token nor among the intermediates")
	}
	if !pki.IsTimeStamping(leaf) {
		return nil, fmt.Errorf("tsa: verify: the signer %q is not a time-stamping authority (RFC 3161 wants one critical extended key usage, timeStamping)", leaf.Subject.CommonName)
	}
	if err := checkSigningCertificate(p7, leaf); err != nil {
		return nil, err
	}
	ts, err := timestamp.Parse(token)
	if err != nil {
		return nil, fmt.Errorf("tsa: verify: tstinfo: %w", err)
	}
	switch ts.HashAlgorithm {
	case crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		return nil, fmt.Errorf("tsa: verify: message imprint hashed with %v (want SHA-256, SHA-384 or SHA-512)", ts.HashAlgorithm)
	}
	if !bytes.Equal(ts.HashedMessage, digest) {
		return nil, errors.New("tsa: verify: the token stamps another digest")
	}
	if opts.Policy != nil && !ts.Policy.Equal(opts.Policy) {
		return nil, fmt.Errorf("tsa: verify: policy %s (want %s)", ts.Policy, opts.Policy)
	}
	at := opts.At
	if at.IsZero() {
		at = ts.Time
	}
	inter := x509.NewCertPool()
	for _, c := range p7.Certificates {
		inter.AddCert(c)
	}
	vo := x509.VerifyOptions{
		Roots:         opts.Roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping},
	}
	// VerifyWithOpts checks the signature over the signed attributes, the
	// message-digest attribute over the TSTInfo, and the chain.
	if err := p7.VerifyWithOpts(vo); err != nil {
		return nil, fmt.Errorf("tsa: verify: %w", err)
	}
	chains, err := leaf.Verify(vo)
	if err != nil {
		return nil, fmt.Errorf("tsa: verify: %w", err)
	}
	return &Info{
		Time:     ts.Time,
		Accuracy: ts.Accuracy,
		Policy:   ts.Policy,
		Serial:   ts.SerialNumber,
		Nonce:    ts.Nonce,
		Hash:     ts.HashAlgorithm,
		Chain:    chains[0],
	}, nil
}

// checkEncapsulatedType requires a DER ContentInfo holding a SignedData
// whose encapsulated content is a TSTInfo (RFC 3161 section 2.4.2): a CMS
// signature over anything else is not a time-stamp, whatever it contains.
func checkEncapsulatedType(token []byte) error {
	s := cryptobyte.String(token)
	var ci, content, sd, eci cryptobyte.String
	var oid asn1.ObjectIdentifier
	var version int64
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !s.Empty() ||
		!ci.ReadASN1ObjectIdentifier(&oid) || !oid.Equal(oidSignedData) ||
		!ci.ReadASN1(&content, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!content.ReadASN1(&sd, cbasn1.SEQUENCE) ||
		!sd.ReadASN1Integer(&version) ||
		!sd.SkipASN1(cbasn1.SET) ||
		!sd.ReadASN1(&eci, cbasn1.SEQUENCE) ||
		!eci.ReadASN1ObjectIdentifier(&oid) {
		return errNotTimeStampToken
	}
	if !oid.Equal(oidTSTInfo) {
		return fmt.Errorf("tsa: verify: the token's content type is %s, not TSTInfo", oid)
	}
	return nil
}

// checkSigningCertificate requires the ESS signing-certificate attribute
// (v2 per RFC 5816, or v1 with SHA-1 per RFC 3161) and that its first
// certificate identifier names the signer: the binding that stops a
// certificate substitution.
func checkSigningCertificate(p7 *pkcs7.PKCS7, leaf *x509.Certificate) error {
	var raw asn1.RawValue
	if err := p7.UnmarshalSignedAttribute(oidSigningCertV2, &raw); err == nil {
		return matchESSCertID(raw.FullBytes, leaf, true)
	}
	if err := p7.UnmarshalSignedAttribute(oidSigningCert, &raw); err == nil {
		return matchESSCertID(raw.FullBytes, leaf, false)
	}
	return errors.New("tsa: verify: the token has no ESS signing-certificate attribute")
}

func matchESSCertID(der []byte, leaf *x509.Certificate, v2 bool) error {
	bad := errors.New("tsa: verify: malformed ESS signing-certificate attribute")
	s := cryptobyte.String(der)
	var sc, certs, id cryptobyte.String
	if !s.ReadASN1(&sc, cbasn1.SEQUENCE) || !sc.ReadASN1(&certs, cbasn1.SEQUENCE) || !certs.ReadASN1(&id, cbasn1.SEQUENCE) {
		return bad
	}
	var h crypto.Hash = crypto.SHA1
	if v2 {
		h = crypto.SHA256 // the DEFAULT of ESSCertIDv2.hashAlgorithm
		if id.PeekASN1Tag(cbasn1.SEQUENCE) {
			var alg cryptobyte.String
			var oid asn1.ObjectIdentifier
			if !id.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
				return bad
			}
			switch {
			case oid.Equal(oidSHA256):
				h = crypto.SHA256
			case oid.Equal(oidSHA384):
				h = crypto.SHA384
			case oid.Equal(oidSHA512):
				h = crypto.SHA512
			default:
				return fmt.Errorf("tsa: verify: ESS certificate hash algorithm %s not supported", oid)
			}
		}
	}
	var certHash []byte
	if !id.ReadASN1Bytes(&certHash, cbasn1.OCTET_STRING) {
		return bad
	}
	var want []byte
	switch h {
	case crypto.SHA1:
		s := sha1.Sum(leaf.Raw)
		want = s[:]
	case crypto.SHA256:
		s := sha256.Sum256(leaf.Raw)
		want = s[:]
	case crypto.SHA384:
		s := sha512.Sum384(leaf.Raw)
		want = s[:]
	case crypto.SHA512:
		s := sha512.Sum512(leaf.Raw)
		want = s[:]
	}
	if !bytes.Equal(certHash, want) {
		return errors.New("tsa: verify: the ESS signing-certificate attribute names another certificate than the signer's")
	}
	return nil
}

// parsePKCS7 is pkcs7.Parse, whose BER reader panics on some malformed
// input (an index out of range, found by FuzzVerifyToken): a hostile token
// is an error, never a crash.
func parsePKCS7(b []byte) (p7 *pkcs7.PKCS7, err error) {
	defer func() {
		if r := recover(); r != nil {
			p7, err = nil, fmt.Errorf("malformed token: %v", r)
		}
	}()
	return pkcs7.Parse(b)
}
