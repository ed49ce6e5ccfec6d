package container

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"sync"
	"time"

	"github.com/smallstep/pkcs7"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// A CMS SignedData is read here, when it is DER of the shape edx's signers
// (and OpenSSL's) write, without pkcs7's BER-to-DER rewrite and with its
// certificates parsed once (parsedCerts): on the hub, reading a signature
// with pkcs7.Parse cost more than checking it (a status's signature: the
// rewrite 37%, the certificates 38%, reflection the rest).
//
// parseCMSDER declines (ok false) whatever it does not read exactly: BER,
// more or fewer than one signer, a signer named by its key identifier, CRLs
// or unsigned attributes in the SignedData, a digest other than SHA-256, a
// signature algorithm other than ECDSA or RSA with SHA-256. checkCMS then
// reads it with pkcs7 as before. verify checks what pkcs7's
// VerifyWithChainAtTime checks without a trust store, over the same bytes
// (the signed attributes re-encoded as pkcs7 does), and returns pkcs7's
// error types; TestCMSDERAgreesWithPKCS7 and FuzzCMSDER hold the two to the
// same answers.

// cmsFastPath is switched off by tests to compare with pkcs7's reading.
var cmsFastPath = true

// derAttribute has the shape of pkcs7's attribute, so that encoding a list
// of them gives the bytes pkcs7 verifies the signature over.
type derAttribute struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue `asn1:"set"`
}

type derSignedData struct {
	content   []byte
	certs     []*x509.Certificate
	issuer    []byte // the signer's issuer Name, DER
	serial    *big.Int
	digestAlg asn1.ObjectIdentifier
	sigAlg    x509.SignatureAlgorithm
	attrs     []derAttribute
	signature []byte
}

var (
	tagContext0 = casn1.Tag(0).Constructed().ContextSpecific()
	tagContext1 = casn1.Tag(1).Constructed().ContextSpecific()
)

func parseCMSDER(der []byte) (*derSignedData, bool) {
	if !wellFormed(der, 0) {
		return nil, false
	}
	s := cryptobyte.String(der)
	var ci, explicit, sd cryptobyte.String
	var ct asn1.ObjectIdentifier
	if !s.ReadASN1(&ci, casn1.SEQUENCE) || !s.Empty() ||
		!ci.ReadASN1ObjectIdentifier(&ct) || !ct.Equal(pkcs7.OIDSignedData) ||
		!ci.ReadASN1(&explicit, tagContext0) || !ci.Empty() ||
		!explicit.ReadASN1(&sd, casn1.SEQUENCE) || !explicit.Empty() {
		return nil, false
	}
	var version int64
	var digestAlgs, encap cryptobyte.String
	if !sd.ReadASN1Integer(&version) || !sd.ReadASN1(&digestAlgs, casn1.SET) || !sd.ReadASN1(&encap, casn1.SEQUENCE) {
		return nil, false
	}
	for !digestAlgs.Empty() {
		var alg cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !digestAlgs.ReadASN1(&alg, casn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
			return nil, false
		}
	}
	out := &derSignedData{}
	var eType asn1.ObjectIdentifier
	if !encap.ReadASN1ObjectIdentifier(&eType) {
		return nil, false
	}
	if !encap.Empty() {
		var eContent, octets cryptobyte.String
		if !encap.ReadASN1(&eContent, tagContext0) || !encap.Empty() ||
			!eContent.ReadASN1(&octets, casn1.OCTET_STRING) || !eContent.Empty() {
			return nil, false
		}
		out.content = octets
	}
	var certs cryptobyte.String
	var hasCerts bool
	if !sd.ReadOptionalASN1(&certs, &hasCerts, tagContext0) {
		return nil, false
	}
	for !certs.Empty() {
		var raw cryptobyte.String
		if !certs.ReadASN1Element(&raw, casn1.SEQUENCE) {
			return nil, false
		}
		c, err := parsedCert(raw)
		if err != nil {
			return nil, false
		}
		out.certs = append(out.certs, c)
	}
	var signers, si cryptobyte.String
	if sd.PeekASN1Tag(tagContext1) || !sd.ReadASN1(&signers, casn1.SET) || !sd.Empty() ||
		!signers.ReadASN1(&si, casn1.SEQUENCE) || !signers.Empty() {
		return nil, false
	}
	var siVersion int64
	var sid, issuer, digestAlg, sigAlg cryptobyte.String
	out.serial = new(big.Int)
	if !si.ReadASN1Integer(&siVersion) || !si.ReadASN1(&sid, casn1.SEQUENCE) ||
		!sid.ReadASN1Element(&issuer, casn1.SEQUENCE) || !sid.ReadASN1Integer(out.serial) || !sid.Empty() ||
		!si.ReadASN1(&digestAlg, casn1.SEQUENCE) || !digestAlg.ReadASN1ObjectIdentifier(&out.digestAlg) {
		return nil, false
	}
	out.issuer = issuer
	if !out.digestAlg.Equal(pkcs7.OIDDigestAlgorithmSHA256) || !emptyOrNull(digestAlg) {
		return nil, false
	}
	var attrs cryptobyte.String
	var hasAttrs bool
	if !si.ReadOptionalASN1(&attrs, &hasAttrs, tagContext0) {
		return nil, false
	}
	for !attrs.Empty() {
		var a, values cryptobyte.String
		var at derAttribute
		if !attrs.ReadASN1(&a, casn1.SEQUENCE) || !a.ReadASN1ObjectIdentifier(&at.Type) ||
			!a.ReadASN1Element(&values, casn1.SET) || !a.Empty() {
			return nil, false
		}
		if _, err := asn1.Unmarshal(values, &at.Value); err != nil {
			return nil, false
		}
		out.attrs = append(out.attrs, at)
	}
	var sigOID asn1.ObjectIdentifier
	var sig cryptobyte.String
	if !si.ReadASN1(&sigAlg, casn1.SEQUENCE) || !sigAlg.ReadASN1ObjectIdentifier(&sigOID) || !emptyOrNull(sigAlg) ||
		!si.ReadASN1(&sig, casn1.OCTET_STRING) || !si.Empty() {
		return nil, false
	}
	out.signature = sig
	switch {
	case sigOID.Equal(pkcs7.OIDDigestAlgorithmECDSASHA256):
		out.sigAlg = x509.ECDSAWithSHA256
	case sigOID.Equal(pkcs7.OIDEncryptionAlgorithmRSA), sigOID.Equal(pkcs7.OIDEncryptionAlgorithmRSASHA256):
		out.sigAlg = x509.SHA256WithRSA
	default:
		return nil, false
	}
	return out, true
}

// wellFormed reports whether der is one element whose constructed
// elements, at every depth, hold nothing but whole elements, each with a
// definite, shortest length: the structure pkcs7's BER reader would find
// and keep as it is. (Inside a certificate, Go's X.509 parser overlooks
// some stray bytes that pkcs7 refuses: the two readings must refuse the
// same.)
func wellFormed(der cryptobyte.String, depth int) bool {
	if depth > 32 {
		return false
	}
	var body cryptobyte.String
	var tag casn1.Tag
	if !der.ReadAnyASN1(&body, &tag) || !der.Empty() {
		return false
	}
	if tag&0x20 == 0 {
		return true
	}
	for !body.Empty() {
		var el cryptobyte.String
		if !body.ReadAnyASN1Element(&el, &tag) || !wellFormed(el, depth+1) {
			return false
		}
	}
	return true
}

// emptyOrNull reports whether an AlgorithmIdentifier's parameters are absent
// or NULL.
func emptyOrNull(params cryptobyte.String) bool {
	if params.Empty() {
		return true
	}
	var null cryptobyte.String
	return params.ReadASN1(&null, casn1.NULL) && null.Empty() && params.Empty()
}

// signer returns the certificate the signer names, or nil.
func (d *derSignedData) signer() *x509.Certificate {
	for _, c := range d.certs {
		if c.SerialNumber.Cmp(d.serial) == 0 && bytes.Equal(c.RawIssuer, d.issuer) {
			return c
		}
	}
	return nil
}

// attribute decodes the first value of the signed attribute oid into out.
func (d *derSignedData) attribute(oid asn1.ObjectIdentifier, out any) error {
	for _, a := range d.attrs {
		if a.Type.Equal(oid) {
			_, err := asn1.Unmarshal(a.Value.Bytes, out)
			return err
		}
	}
	return errors.New("pkcs7: attribute type not in attributes")
}

// verify checks the signature and the message digest, as pkcs7's
// VerifyWithChainAtTime(nil, at) does.
func (d *derSignedData) verify() error {
	ee := d.signer()
	if ee == nil {
		return errors.New("pkcs7: No certificate for signer")
	}
	signed := d.content
	if len(d.attrs) > 0 {
		var digest []byte
		if err := d.attribute(pkcs7.OIDAttributeMessageDigest, &digest); err != nil {
			return err
		}
		computed := sha256.Sum256(d.content)
		if subtle.ConstantTimeCompare(digest, computed[:]) != 1 {
			return &pkcs7.MessageDigestMismatchError{ExpectedDigest: digest, ActualDigest: computed[:]}
		}
		enc, err := asn1.Marshal(struct {
			A []derAttribute `asn1:"set"`
		}{A: d.attrs})
		if err != nil {
			return err
		}
		var set asn1.RawValue
		if _, err := asn1.Unmarshal(enc, &set); err != nil {
			return err
		}
		signed = set.Bytes
		var st time.Time
		if d.attribute(pkcs7.OIDAttributeSigningTime, &st) == nil && (st.After(ee.NotAfter) || st.Before(ee.NotBefore)) {
			return &pkcs7.SigningTimeNotValidError{SigningTime: st, NotBefore: ee.NotBefore, NotAfter: ee.NotAfter}
		}
	}
	return ee.CheckSignature(d.sigAlg, signed, d.signature)
}

// parsedCerts keeps the certificates signatures carried, parsed, by their
// DER: every signature of a unit carries the same few. At most
// maxParsedCerts, none larger than maxParsedCertSize (a unit's certificate
// is under 2 KiB), some 8 MiB of DER at worst; the map is emptied when
// full, so that certificates sent to fill it cost only their parsing.
var (
	parsedCertsMu sync.Mutex
	parsedCerts   = map[string]*x509.Certificate{}
)

const (
	maxParsedCerts    = 2048
	maxParsedCertSize = 4 << 10
)

// parsedCert returns der parsed, from parsedCerts when it was seen before.
// The certificate returned is shared: it must not be changed.
func parsedCert(der []byte) (*x509.Certificate, error) {
	parsedCertsMu.Lock()
	c, ok := parsedCerts[string(der)]
	parsedCertsMu.Unlock()
	if ok {
		return c, nil
	}
	c, err := x509.ParseCertificate(der)
	if err != nil || len(der) > maxParsedCertSize {
		return c, err
	}
	parsedCertsMu.Lock()
	if len(parsedCerts) >= maxParsedCerts {
		clear(parsedCerts)
	}
	parsedCerts[string(der)] = c
	parsedCertsMu.Unlock()
	return c, nil
}
