// Package audit is the audit bundle: everything that proves, without the
// hub, that a document was signed by its sender, accepted, logged and
// time-stamped, in one ZIP file (edx audit bundle), and its offline check
// (edx audit verify), which says what each piece proves.
//
// The bundle's files are the evidence as it was made, byte for byte, so
// that tools other than edx can check what they can:
//
//	README.txt                 what is inside, and the OpenSSL commands
//	bundle.json                the document, the log entry (origin, index), each file's SHA-256
//	container.asice            the signed container (ASiC-E, CMS over the manifest)
//	receipt.p7s                the hub's signed receipt (CMS, the receipt JSON inside)
//	log/entry.json             the log entry of the acceptance, as logged
//	log/inclusion.json         the entry's inclusion proof in the checkpoint (RFC 6962 hashes, hex)
//	log/checkpoint             the signed checkpoint (C2SP signed note), as time-stamped
//	log/checkpoint.tsr         the RFC 3161 token over SHA-256 of log/checkpoint
//	log/checkpoint.cosigned    the same checkpoint with the witnesses' cosignatures
//	log/previous/checkpoint    the time-stamped checkpoint before it (not holding the entry),
//	log/previous/checkpoint.tsr  its token, and
//	log/previous/consistency.json  the proof that its tree is a prefix of the checkpoint's
//	crl/<sha256>.crl           each CRL in force at acceptance that the entry names (DER)
//	status/<name>              the statuses archived for the document
package audit

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
)

// Version is the bundle format's version.
const Version = 1

// Bundle is what an audit bundle holds.
type Bundle struct {
	Document  document.ID
	Container []byte
	Receipt   []byte
	// Origin and Proof are the acceptance's log entry: the proof holds the
	// entry, its inclusion in a time-stamped checkpoint, the token, and the
	// previous time-stamped checkpoint.
	Origin string
	Proof  *evidence.Proof
	// Cosigned is Proof.Checkpoint with the cosignatures the hub collected.
	Cosigned []byte
	// CRLs are the CRLs the entry names, by the hex SHA-256 of their DER.
	CRLs map[string][]byte
	// Statuses are the document's archived statuses, by name.
	Statuses map[string][]byte
}

// Manifest is bundle.json.
type Manifest struct {
	Version  int               `json:"version"`
	Document document.ID       `json:"document"`
	Log      container.LogRef  `json:"log"`
	TreeSize uint64            `json:"tree_size"`
	Files    map[string]string `json:"files"` // name → hex SHA-256
}

type inclusion struct {
	Index    uint64   `json:"index"`
	TreeSize uint64   `json:"tree_size"`
	Hashes   []string `json:"hashes"`
}

type consistency struct {
	From   uint64   `json:"from"`
	To     uint64   `json:"to"`
	Hashes []string `json:"hashes"`
}

// Limits on a bundle read: a container is at most 200 MiB (the hub's
// limit); everything else is small.
const (
	MaxBundleSize = 256 << 20
	maxFiles      = 4096
	maxSmallFile  = 4 << 20
)

// Marshal writes the bundle as a ZIP.
func (b *Bundle) Marshal() ([]byte, error) {
	if b.Proof == nil || len(b.Container) == 0 || len(b.Receipt) == 0 {
		return nil, errors.New("audit: a bundle needs the container, the receipt and the log proof")
	}
	if len(b.Proof.Timestamp) == 0 {
		return nil, errors.New("audit: the log proof is not time-stamped yet")
	}
	cp, err := parseSize(b.Proof.Checkpoint)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"container.asice":    b.Container,
		"receipt.p7s":        b.Receipt,
		"log/entry.json":     b.Proof.Entry,
		"log/checkpoint":     b.Proof.Checkpoint,
		"log/checkpoint.tsr": b.Proof.Timestamp,
	}
	inc, _ := json.MarshalIndent(inclusion{Index: b.Proof.Index, TreeSize: cp, Hashes: hexes(b.Proof.Hashes)}, "", "  ")
	files["log/inclusion.json"] = append(inc, '\n')
	if len(b.Cosigned) > 0 {
		files["log/checkpoint.cosigned"] = b.Cosigned
	}
	if p := b.Proof.Previous; p != nil {
		from, err := parseSize(p.Checkpoint)
		if err != nil {
			return nil, err
		}
		c, _ := json.MarshalIndent(consistency{From: from, To: cp, Hashes: hexes(p.Consistency)}, "", "  ")
		files["log/previous/checkpoint"] = p.Checkpoint
		files["log/previous/checkpoint.tsr"] = p.Timestamp
		files["log/previous/consistency.json"] = append(c, '\n')
	}
	for d, der := range b.CRLs {
		files["crl/"+d+".crl"] = der
	}
	for n, data := range b.Statuses {
		if !validName(n) {
			return nil, fmt.Errorf("audit: status name %q", n)
		}
		files["status/"+n] = data
	}
	m := Manifest{Version: Version, Document: b.Document, Log: container.LogRef{Origin: b.Origin, Index: b.Proof.Index}, TreeSize: cp,
		Files: map[string]string{}}
	for n, data := range files {
		s := sha256.Sum256(data)
		m.Files[n] = hex.EncodeToString(s[:])
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	add := func(name string, data []byte) error {
		w, err := z.Create(name)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	if err := add("README.txt", []byte(readme(b.Document))); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := add("bundle.json", append(mb, '\n')); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := add(n, files[n]); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
	}
	if err := z.Close(); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return buf.Bytes(), nil
}

// Parse reads a bundle, within size limits, accepting only the files of the
// format; every file listed in bundle.json must be there with its digest.
func Parse(data []byte) (*Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("audit: bundle of %d bytes (max %d)", len(data), MaxBundleSize)
	}
	z, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("audit: not a bundle (ZIP): %w", err)
	}
	if len(z.File) > maxFiles {
		return nil, fmt.Errorf("audit: %d files in the bundle", len(z.File))
	}
	files := map[string][]byte{}
	for _, f := range z.File {
		if _, dup := files[f.Name]; dup {
			return nil, fmt.Errorf("audit: %s twice in the bundle", f.Name)
		}
		limit := int64(maxSmallFile)
		if f.Name == "container.asice" {
			limit = container.DefaultLimits.MaxSize
		}
		if f.UncompressedSize64 > uint64(limit) {
			return nil, fmt.Errorf("audit: %s of %d bytes", f.Name, f.UncompressedSize64)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("audit: %s: %w", f.Name, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, limit+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("audit: %s: %w", f.Name, err)
		}
		if int64(len(b)) > limit {
			return nil, fmt.Errorf("audit: %s over %d bytes", f.Name, limit)
		}
		files[f.Name] = b
	}
	var m Manifest
	if err := json.Unmarshal(files["bundle.json"], &m); err != nil {
		return nil, fmt.Errorf("audit: bundle.json: %w", err)
	}
	if m.Version != Version {
		return nil, fmt.Errorf("audit: bundle version %d (this edx reads %d)", m.Version, Version)
	}
	if err := m.Document.Validate(); err != nil {
		return nil, fmt.Errorf("audit: bundle.json: %w", err)
	}
	for n, want := range m.Files {
		b, ok := files[n]
		if !ok {
			return nil, fmt.Errorf("audit: bundle.json lists %s, which the bundle lacks", n)
		}
		s := sha256.Sum256(b)
		if hex.EncodeToString(s[:]) != want {
			return nil, fmt.Errorf("audit: %s does not have the SHA-256 bundle.json gives it", n)
		}
	}
	b := &Bundle{Document: m.Document, Origin: m.Log.Origin, Container: files["container.asice"], Receipt: files["receipt.p7s"],
		Cosigned: files["log/checkpoint.cosigned"], CRLs: map[string][]byte{}, Statuses: map[string][]byte{}}
	for n, data := range files {
		if _, listed := m.Files[n]; !listed && n != "bundle.json" && n != "README.txt" {
			return nil, fmt.Errorf("audit: %s is in the bundle but not in bundle.json", n)
		}
		switch {
		case strings.HasPrefix(n, "crl/"):
			d, ok := strings.CutSuffix(strings.TrimPrefix(n, "crl/"), ".crl")
			s := sha256.Sum256(data)
			if !ok || d != hex.EncodeToString(s[:]) {
				return nil, fmt.Errorf("audit: %s is not named by its SHA-256", n)
			}
			b.CRLs[d] = data
		case strings.HasPrefix(n, "status/"):
			name := strings.TrimPrefix(n, "status/")
			if !validName(name) {
				return nil, fmt.Errorf("audit: %s: bad name", n)
			}
			b.Statuses[name] = data
		}
	}
	var inc inclusion
	if err := json.Unmarshal(files["log/inclusion.json"], &inc); err != nil {
		return nil, fmt.Errorf("audit: log/inclusion.json: %w", err)
	}
	if inc.Index != m.Log.Index {
		return nil, fmt.Errorf("audit: log/inclusion.json is for entry %d, bundle.json names %d", inc.Index, m.Log.Index)
	}
	hs, err := unhex(inc.Hashes)
	if err != nil {
		return nil, fmt.Errorf("audit: log/inclusion.json: %w", err)
	}
	b.Proof = &evidence.Proof{Index: inc.Index, Entry: files["log/entry.json"], Checkpoint: files["log/checkpoint"], Hashes: hs,
		Timestamp: files["log/checkpoint.tsr"]}
	if pc, ok := files["log/previous/checkpoint"]; ok {
		var c consistency
		if err := json.Unmarshal(files["log/previous/consistency.json"], &c); err != nil {
			return nil, fmt.Errorf("audit: log/previous/consistency.json: %w", err)
		}
		ch, err := unhex(c.Hashes)
		if err != nil {
			return nil, fmt.Errorf("audit: log/previous/consistency.json: %w", err)
		}
		b.Proof.Previous = &evidence.Anchor{Checkpoint: pc, Timestamp: files["log/previous/checkpoint.tsr"], Consistency: ch}
	}
	for _, need := range []string{"container.asice", "receipt.p7s", "log/entry.json", "log/checkpoint", "log/checkpoint.tsr"} {
		if len(files[need]) == 0 {
			return nil, fmt.Errorf("audit: the bundle lacks %s", need)
		}
	}
	return b, nil
}

func validName(n string) bool {
	return n != "" && len(n) <= 255 && path.Base(n) == n && n != "." && n != ".." && !strings.ContainsAny(n, "\\/\x00")
}

// parseSize reads a checkpoint's tree size (its second line), unverified.
func parseSize(cp []byte) (uint64, error) {
	lines := strings.SplitN(string(cp), "\n", 3)
	if len(lines) < 3 {
		return 0, errors.New("audit: malformed checkpoint")
	}
	var n uint64
	if _, err := fmt.Sscan(lines[1], &n); err != nil {
		return 0, fmt.Errorf("audit: checkpoint size: %w", err)
	}
	return n, nil
}

func hexes(hs [][]byte) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = hex.EncodeToString(h)
	}
	return out
}

func unhex(ss []string) ([][]byte, error) {
	if len(ss) > 128 {
		return nil, fmt.Errorf("%d hashes", len(ss))
	}
	out := make([][]byte, len(ss))
	for i, s := range ss {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("hash %d is not a hex SHA-256", i)
		}
		out[i] = b
	}
	return out, nil
}

// OpenSSLRecipe is what OpenSSL alone checks in a bundle (bundle.zip), with
// the city's roots (roots.pem) and the TSA's (tsa-roots.pem) beside it: the
// README gives it, README.txt in every bundle too, and a test runs it.
const OpenSSLRecipe = `unzip -oq bundle.zip -d b && cd b
# 1. The TSA signed SHA-256 of the checkpoint, at the time it prints:
openssl ts -verify -token_in -in log/checkpoint.tsr -data log/checkpoint -CAfile ../tsa-roots.pem
openssl ts -reply -token_in -in log/checkpoint.tsr -token_out -text | grep '^Time stamp:'
# 2. The acceptance time (the entry's, the receipt's accepted_at), in Unix seconds:
AT=$(date -u -d "$(grep -o '"time":"[^"]*"' log/entry.json | cut -d'"' -f4)" +%s)
# 3. The CRLs in force then, named by the entry: their dates; with the roots, one store.
cp ../roots.pem store.pem
for f in crl/*.crl; do
  openssl crl -inform DER -in "$f" -noout -issuer -lastupdate -nextupdate
  openssl crl -inform DER -in "$f" >> store.pem
done
# 4. The sender's signature over the manifest, as of then, not revoked then:
mkdir c && (cd c && unzip -q ../container.asice)
openssl cms -verify -binary -inform DER -in c/META-INF/signature001.p7s -content c/META-INF/ASiCManifest.xml \
    -CAfile store.pem -purpose any -attime "$AT" -crl_check -out /dev/null
# 5. The hub's receipt, as of then: signed by the hub, naming this container and the entry.
openssl cms -verify -inform DER -in receipt.p7s -CAfile store.pem -purpose any -attime "$AT" -crl_check \
    -signer hub.pem -out receipt.json
openssl x509 -in hub.pem -noout -ext extendedKeyUsage | grep -x ' *1\.3\.6\.1\.4\.1\.32473\.7001\.3\.1'
grep -q "\"container_sha256\":\"$(sha256sum < container.asice | cut -d' ' -f1)\"" receipt.json
grep -q "\"index\":$(grep -o '"index": *[0-9]*' log/inclusion.json | grep -o '[0-9]*$')}" receipt.json
`

func readme(id document.ID) string {
	return `edx audit bundle of document ` + string(id) + `

Check it all, offline, as of its time-stamped time (bundle.zip is this file):

  edx audit verify bundle.zip --trust roots.pem --log-key hub-log.vkey [--tsa-roots tsa-roots.pem] \
      [--witness witnesses.vkeys --quorum N] [--crl newer.crl]

What OpenSSL alone checks, with the city's roots (roots.pem) and the TSA's
(tsa-roots.pem) beside bundle.zip (GNU date):

` + OpenSSLRecipe + `
The log proof (log/entry.json in log/checkpoint, which the hub's log key
signed; its consistency with log/previous/checkpoint) and the witnesses'
cosignatures are Merkle and Ed25519 note checks that OpenSSL does not do:
edx audit verify does them.
`
}
