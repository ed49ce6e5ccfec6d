package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// KeyType selects the algorithm of a generated key.
type KeyType string

const (
	ECDSAP256 KeyType = "p256"
	RSA2048   KeyType = "rsa2048"
	RSA3072   KeyType = "rsa3072"
)

// GenerateKey makes a new private key of type kt.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case ECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("pki: unknown key type %q (want p256, rsa2048 or rsa3072)", kt)
}

// CA is a development certificate authority: a city root and an issuing CA
// that signs unit certificates, the hub's certificate and the CRL. Files in
// its directory:
//
//	roots.pem               the trust bundle auditors and agents need (the root)
//	ca/root.key.pem         the root key (0600)
//	ca/issuing.key.pem      the issuing CA key (0600)
//	ca/issuing.cert.pem     the issuing CA certificate
//	ca/lock                 serialises writers of the CRL (edx pki revoke, a running hub)
//	ca/crl-url              the CRL distribution point written into what it issues (SetCRLURL)
//	crl.pem                 the issuing CA's current CRL (nextUpdate CRLValidity after its thisUpdate)
//	hub.key.pem, hub.cert.pem   the hub's receipt-signing key and chain
//	hub-<serial>.cert.pem   hub certificates replaced by RotateHub (kept for reference)
//	units/<ID>.key.pem, units/<ID>.cert.pem   unit keys (0600) and chains
//
// Every end-entity certificate it issues names the issuing CA's CRL as its
// CRL distribution point when a URL is set (a hub running with the CA
// serves it at /pki/crl.der). The hub's certificates carry the hub signer
// profile (OIDExtKeyUsageHubSigner); a unit's never does.
type CA struct {
	Dir        string
	Root       *x509.Certificate
	Issuing    *x509.Certificate
	issuingKey crypto.Signer
	rootKey    crypto.Signer
	crlURL     string
}

// Validity periods of what the development CA issues.
const (
	// CRLValidity is how long a CRL it signs is current (its nextUpdate).
	// A hub running with the CA signs it again when less than half is
	// left (RefreshCRL); edx pki revoke signs a new one at once.
	CRLValidity = 7 * 24 * time.Hour
	// HubValidity is the life of a hub certificate: receipts are checked
	// as of their acceptance, so a long-lived hub key is no weaker for old
	// receipts, and RotateHub replaces it before it ends.
	HubValidity = 10 * 365 * 24 * time.Hour
)

// Paths inside a CA directory.
func (ca *CA) RootsPath() string            { return filepath.Join(ca.Dir, "roots.pem") }
func (ca *CA) CRLPath() string              { return filepath.Join(ca.Dir, "crl.pem") }
func (ca *CA) HubKeyPath() string           { return filepath.Join(ca.Dir, "hub.key.pem") }
func (ca *CA) HubCertPath() string          { return filepath.Join(ca.Dir, "hub.cert.pem") }
func (ca *CA) UnitKeyPath(u string) string  { return filepath.Join(ca.Dir, "units", u+".key.pem") }
func (ca *CA) UnitCertPath(u string) string { return filepath.Join(ca.Dir, "units", u+".cert.pem") }

// InitCA creates a development CA in dir, with the hub's certificate. It
// refuses to overwrite an existing CA.
func InitCA(dir, city string) (*CA, error) { return InitCAWith(dir, CAOptions{City: city}) }

// InitCAAt is InitCA with the CA's and the hub's certificates valid from
// notBefore (zero: an hour ago): for receipts and test archives dated
// before today.
func InitCAAt(dir, city string, notBefore time.Time) (*CA, error) {
	return InitCAWith(dir, CAOptions{City: city, NotBefore: notBefore})
}

// CAOptions describe a development CA to create.
type CAOptions struct {
	City string // default "Thành phố Hồ Chí Minh"
	// NotBefore is the start of the CA's and the hub's certificates (zero:
	// an hour ago).
	NotBefore time.Time
	// CRLURL is the CRL distribution point written into every certificate
	// it issues, the hub's included (see SetCRLURL); empty for none.
	CRLURL string
}

// InitCAWith creates a development CA in dir as o describes, with the hub's
// certificate. It refuses to overwrite an existing CA.
func InitCAWith(dir string, o CAOptions) (*CA, error) {
	city, notBefore := o.City, o.NotBefore
	if city == "" {
		city = "Thành phố Hồ Chí Minh"
	}
	if err := checkCRLURL(o.CRLURL); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "root.key.pem")); err == nil {
		return nil, fmt.Errorf("pki: a CA already exists in %s", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "ca"), 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "units"), 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	now := notBefore
	if now.IsZero() {
		now = time.Now().Add(-time.Hour)
	}
	rootKey, err := GenerateKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	root, err := createCert(&x509.Certificate{
		Subject:               pkix.Name{Country: []string{"VN"}, Organization: []string{city}, CommonName: "edx Root CA — " + city},
		NotBefore:             now,
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}, nil, rootKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	issKey, err := GenerateKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	iss, err := createCert(&x509.Certificate{
		Subject:               pkix.Name{Country: []string{"VN"}, Organization: []string{city}, CommonName: "edx Issuing CA — " + city},
		NotBefore:             now,
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}, root, issKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	ca := &CA{Dir: dir, Root: root, Issuing: iss, issuingKey: issKey, rootKey: rootKey}
	if o.CRLURL != "" {
		if err := ca.SetCRLURL(o.CRLURL); err != nil {
			return nil, err
		}
	}
	if err := writeKey(filepath.Join(dir, "ca", "root.key.pem"), rootKey); err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, "ca", "issuing.key.pem"), issKey); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "ca", "root.cert.pem"), EncodeCertificates(root), 0o644); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "ca", "issuing.cert.pem"), EncodeCertificates(iss), 0o644); err != nil {
		return nil, err
	}
	if err := writeFile(ca.RootsPath(), EncodeCertificates(root), 0o644); err != nil {
		return nil, err
	}
	if err := ca.writeCRL(nil); err != nil {
		return nil, err
	}
	hubKey, err := GenerateKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	if _, err := ca.issueHub(hubKey, city, now, 0); err != nil {
		return nil, err
	}
	return ca, nil
}

// issueHub issues a hub certificate for key, valid for validity (default
// HubValidity, and never past the issuing CA's end), and writes the key and
// chain to hub.key.pem and hub.cert.pem.
func (ca *CA) issueHub(key crypto.Signer, city string, nb time.Time, validity time.Duration) (*x509.Certificate, error) {
	if validity <= 0 {
		validity = HubValidity
	}
	na := nb.Add(validity)
	if na.After(ca.Issuing.NotAfter) {
		na = ca.Issuing.NotAfter
	}
	hub, err := ca.Issue(IssueRequest{Identifier: HubIdentifier, Name: "edx hub — " + city, Key: key.Public(), NotBefore: nb, NotAfter: na}) // the hub signer profile
	if err != nil {
		return nil, err
	}
	if err := writeKey(ca.HubKeyPath(), key); err != nil {
		return nil, err
	}
	if err := writeFile(ca.HubCertPath(), EncodeCertificates(hub, ca.Issuing), 0o644); err != nil {
		return nil, err
	}
	return hub, nil
}

// RotateHub gives the hub a new key and certificate (valid for validity,
// default HubValidity), with the hub signer profile. The old certificate is
// kept as hub-<serial>.cert.pem; the old key is overwritten. Receipts signed
// with the old key stay valid: each carries its certificate chain and is
// checked as of its acceptance. The hub signs with the new key from its next
// start, and then retires an old subject-only certificate (EnsureHubProfile).
func (ca *CA) RotateHub(validity time.Duration) (*x509.Certificate, error) {
	old, err := readCert(ca.HubCertPath())
	if err != nil {
		return nil, err
	}
	city := ""
	if len(old.Subject.Organization) > 0 {
		city = old.Subject.Organization[0]
	}
	city = strings.TrimPrefix(city, "edx hub — ")
	b, err := os.ReadFile(ca.HubCertPath())
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if err := writeFile(filepath.Join(ca.Dir, "hub-"+old.SerialNumber.Text(16)+".cert.pem"), b, 0o644); err != nil {
		return nil, err
	}
	key, err := GenerateKey(ECDSAP256)
	if err != nil {
		return nil, err
	}
	return ca.issueHub(key, city, time.Now().Add(-time.Hour), validity)
}

// OpenCA loads a CA that InitCA made.
func OpenCA(dir string) (*CA, error) {
	ca := &CA{Dir: dir}
	var err error
	if ca.rootKey, err = readKey(filepath.Join(dir, "ca", "root.key.pem")); err != nil {
		return nil, err
	}
	if ca.issuingKey, err = readKey(filepath.Join(dir, "ca", "issuing.key.pem")); err != nil {
		return nil, err
	}
	if ca.Root, err = readCert(filepath.Join(dir, "ca", "root.cert.pem")); err != nil {
		return nil, err
	}
	if ca.Issuing, err = readCert(filepath.Join(dir, "ca", "issuing.cert.pem")); err != nil {
		return nil, err
	}
	switch b, err := os.ReadFile(ca.crlURLPath()); {
	case err == nil:
		ca.crlURL = strings.TrimSpace(string(b))
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("pki: %w", err)
	}
	return ca, nil
}

func (ca *CA) crlURLPath() string { return filepath.Join(ca.Dir, "ca", "crl-url") }

// CRLURL returns the CRL distribution point the CA writes into the
// certificates it issues ("" for none).
func (ca *CA) CRLURL() string { return ca.crlURL }

// SetCRLURL sets the CRL distribution point (an http:// or https:// URL
// where the issuing CA's CRL is served, DER) written into every certificate
// the CA issues from now on, and keeps it in the CA directory; empty
// removes it. Certificates issued before keep the URL they have.
func (ca *CA) SetCRLURL(u string) error {
	if err := checkCRLURL(u); err != nil {
		return err
	}
	if u == ca.crlURL {
		if _, err := os.Stat(ca.crlURLPath()); err == nil || u == "" {
			return nil
		}
	}
	if u == "" {
		if err := os.Remove(ca.crlURLPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pki: %w", err)
		}
	} else if err := writeFile(ca.crlURLPath(), []byte(u+"\n"), 0o644); err != nil {
		return err
	}
	ca.crlURL = u
	return nil
}

func checkCRLURL(u string) error {
	if u == "" {
		return nil
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || len(u) > maxDPURL {
		return fmt.Errorf("pki: CRL URL %q: want an http:// or https:// URL of at most %d bytes", u, maxDPURL)
	}
	return nil
}

func (ca *CA) distributionPoints() []string {
	if ca.crlURL == "" {
		return nil
	}
	return []string{ca.crlURL}
}

// IssueRequest describes a certificate the CA issues.
type IssueRequest struct {
	Identifier string           // the unit id, or HubIdentifier
	Name       string           // the unit's name
	Key        crypto.PublicKey // the subject's public key
	NotBefore  time.Time        // default: an hour ago
	NotAfter   time.Time        // default: NotBefore + 2 years
	KeyUsage   x509.KeyUsage    // default: digitalSignature | nonRepudiation
	// ExtKeyUsage lists extended key usages for a unit's certificate (for
	// example RFC 9336 documentSigning, 1.3.6.1.5.5.7.3.36); none by
	// default. The hub signer's (OIDExtKeyUsageHubSigner) is refused: it is
	// the hub's alone. A hub certificate takes none: it gets the hub signer
	// profile.
	ExtKeyUsage []asn1.ObjectIdentifier
}

// Issue signs an end-entity certificate with the issuing CA. A certificate
// for HubIdentifier gets the hub signer profile (OIDExtKeyUsageHubSigner,
// alone and critical); a unit's certificate can never carry that usage.
func (ca *CA) Issue(r IssueRequest) (*x509.Certificate, error) {
	return issue(ca.Issuing, ca.issuingKey, ca.distributionPoints(), r)
}

// issue signs r with an issuing CA's certificate and key; dps are the CRL
// distribution points written into the certificate (none when empty).
func issue(issuer *x509.Certificate, key crypto.Signer, dps []string, r IssueRequest) (*x509.Certificate, error) {
	var extra []pkix.Extension
	if r.Identifier == HubIdentifier {
		if len(r.ExtKeyUsage) > 0 {
			return nil, errors.New("pki: issue: a hub certificate has the hub signer profile and no other extended key usage")
		}
		ext, err := ekuExtension(OIDExtKeyUsageHubSigner)
		if err != nil {
			return nil, err
		}
		extra = append(extra, ext)
	} else {
		if err := document.UnitID(r.Identifier).Validate(); err != nil {
			return nil, fmt.Errorf("pki: issue: %w", err)
		}
		for _, u := range r.ExtKeyUsage {
			if u.Equal(OIDExtKeyUsageHubSigner) {
				return nil, fmt.Errorf("pki: issue: the extended key usage %s is the hub's alone: a unit's certificate cannot carry it", u)
			}
		}
	}
	if r.Name == "" {
		return nil, errors.New("pki: issue: a name is required")
	}
	if r.NotBefore.IsZero() {
		r.NotBefore = time.Now().Add(-time.Hour)
	}
	if r.NotAfter.IsZero() {
		r.NotAfter = r.NotBefore.AddDate(2, 0, 0)
	}
	if r.KeyUsage == 0 {
		r.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	}
	return createCert(&x509.Certificate{
		Subject:               subjectFor(r.Name, r.Identifier),
		NotBefore:             r.NotBefore,
		NotAfter:              r.NotAfter,
		KeyUsage:              r.KeyUsage,
		UnknownExtKeyUsage:    r.ExtKeyUsage,
		BasicConstraintsValid: true,
		CRLDistributionPoints: dps,
		ExtraExtensions:       extra,
	}, issuer, r.Key, key)
}

// IssueUnit makes a key of type kt and a certificate for unit, writes them to
// units/<ID>.key.pem (0600) and units/<ID>.cert.pem (leaf then issuing CA),
// and returns the paths. An existing key is never overwritten.
func (ca *CA) IssueUnit(unit document.UnitID, name string, kt KeyType) (keyPath, certPath string, err error) {
	if err := unit.Validate(); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	keyPath, certPath = ca.UnitKeyPath(string(unit)), ca.UnitCertPath(string(unit))
	if _, err := os.Stat(keyPath); err == nil {
		return "", "", fmt.Errorf("pki: %s already has a key at %s", unit, keyPath)
	}
	key, err := GenerateKey(kt)
	if err != nil {
		return "", "", err
	}
	cert, err := ca.Issue(IssueRequest{Identifier: string(unit), Name: name, Key: key.Public()})
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return "", "", err
	}
	if err := writeFile(certPath, EncodeCertificates(cert, ca.Issuing), 0o644); err != nil {
		return "", "", err
	}
	return keyPath, certPath, nil
}

// Revoke adds serial to the issuing CA's CRL and signs a new crl.pem (with
// a new number and nextUpdate); a serial already revoked changes nothing.
func (ca *CA) Revoke(serial *big.Int, at time.Time) error { return ca.revoke(serial, at, 0) }

// CRL entry reason codes (RFC 5280 section 5.3.1) the CA writes.
const (
	ReasonSuperseded = 4 // a certificate replaced in good standing
)

func (ca *CA) revoke(serial *big.Int, at time.Time, reasonCode int) error {
	unlock, err := lockFile(filepath.Join(ca.Dir, "ca", "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	crl, err := ca.currentCRL()
	if err != nil {
		return err
	}
	entries := crl.RevokedCertificateEntries
	for _, e := range entries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return nil
		}
	}
	entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: at, ReasonCode: reasonCode})
	return ca.writeCRL(entries)
}

// RefreshCRL signs the CRL again, with the same entries, when less than
// minLeft remains before its nextUpdate (or it cannot be read), and reports
// whether it did. A hub running with the development CA calls it so that
// the CRL never goes stale.
func (ca *CA) RefreshCRL(now time.Time, minLeft time.Duration) (bool, error) {
	unlock, err := lockFile(filepath.Join(ca.Dir, "ca", "lock"))
	if err != nil {
		return false, err
	}
	defer unlock()
	crl, err := ca.currentCRL()
	if err != nil {
		return false, err
	}
	if crl.NextUpdate.Sub(now) >= minLeft {
		return false, nil
	}
	return true, ca.writeCRL(crl.RevokedCertificateEntries)
}

// CRL returns the current CRL as PEM.
func (ca *CA) CRL() ([]byte, error) { return os.ReadFile(ca.CRLPath()) }

func (ca *CA) currentCRL() (*x509.RevocationList, error) {
	b, err := os.ReadFile(ca.CRLPath())
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	p, _ := pem.Decode(b)
	if p == nil {
		return nil, errors.New("pki: crl.pem holds no PEM block")
	}
	return x509.ParseRevocationList(p.Bytes)
}

func (ca *CA) writeCRL(entries []x509.RevocationListEntry) error {
	var number int64 = 1
	if old, err := ca.currentCRL(); err == nil && old.Number != nil {
		number = old.Number.Int64() + 1
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                now.Add(-time.Minute),
		NextUpdate:                now.Add(CRLValidity),
		RevokedCertificateEntries: entries,
	}, ca.Issuing, ca.issuingKey)
	if err != nil {
		return fmt.Errorf("pki: crl: %w", err)
	}
	return writeFile(ca.CRLPath(), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644)
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	ski := sha1.Sum(pubDER)
	tmpl.SubjectKeyId = ski[:]
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("pki: create certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

func writeKey(path string, key crypto.Signer) error {
	b, err := EncodePrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return writeFile(path, b, 0o600)
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return k, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	cs, err := ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return cs[0], nil
}

// writeFile writes atomically: a temporary file, fsync, rename.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
