// Package container builds, opens and verifies edx's signed container: a ZIP
// in the ASiC-E layout (ETSI EN 319 162-1) holding document.json and the
// payload files, an ASiCManifest listing every file with its SHA-256, and one
// detached CMS signature (SHA-256, signed attributes content-type,
// message-digest, signing-time and ESS signing-certificate-v2) over the
// manifest. It is the only package that imports the PKCS#7 library.
//
// Layout:
//
//	mimetype                     application/vnd.etsi.asic-e+zip, first, stored
//	META-INF/ASiCManifest.xml    one DataObjectReference per file
//	META-INF/signature001.p7s    CMS SignedData, DER, detached, over the manifest
//	document.json                the metadata (package document)
//	files/<name>                 the payload files
package container

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"mime"
	"path"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// Names inside a container.
const (
	Mimetype      = "application/vnd.etsi.asic-e+zip"
	MimetypePath  = "mimetype"
	ManifestPath  = "META-INF/ASiCManifest.xml"
	SignaturePath = "META-INF/signature001.p7s"
	MetadataPath  = "document.json"
	FilesDir      = "files/"
)

// File is a payload file.
type File struct {
	Name      string // base name, e.g. "quyet-dinh.pdf"; stored as files/<Name>
	MediaType string // detected from the extension when empty
	Data      []byte
}

// Unsigned is a container whose manifest is ready to be signed by any CMS
// signer (edx's own, a token, or openssl cms -sign).
type Unsigned struct {
	Manifest []byte // META-INF/ASiCManifest.xml, the bytes to sign
	meta     []byte
	files    []File
}

// Prepare checks metadata and files and builds the manifest. meta is the
// exact document.json bytes; they are stored unchanged.
func Prepare(meta []byte, files []File) (*Unsigned, error) {
	doc, err := document.Parse(meta)
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if err := doc.Validate(); err != nil {
		return nil, fmt.Errorf("container: document.json: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("container: no payload file")
	}
	refs := []Reference{{Name: MetadataPath, MediaType: "application/json", SHA256: sha256.Sum256(meta)}}
	seen := map[string]bool{}
	out := make([]File, len(files))
	for i, f := range files {
		if err := CheckFileName(f.Name); err != nil {
			return nil, fmt.Errorf("container: file %q: %w", f.Name, err)
		}
		if seen[strings.ToLower(f.Name)] {
			return nil, fmt.Errorf("container: file %q given twice", f.Name)
		}
		seen[strings.ToLower(f.Name)] = true
		if f.MediaType == "" {
			f.MediaType = MediaTypeOf(f.Name)
		}
		out[i] = f
		refs = append(refs, Reference{Name: FilesDir + f.Name, MediaType: f.MediaType, SHA256: sha256.Sum256(f.Data)})
	}
	return &Unsigned{Manifest: marshalManifest(refs), meta: meta, files: out}, nil
}

// Seal writes the ZIP with the given DER CMS signature over u.Manifest.
//
// Every entry's local header carries its CRC-32 and sizes, with no data
// descriptor and no extra field: mimetype's content begins at byte 38, as
// ASiC (ETSI EN 319 162-1) and file(1) expect, and streaming readers such as
// Java's ZipInputStream (the EU's DSS validator) read every entry. Deflated
// entries are compressed into a buffer first, and stored when deflating
// does not shrink them.
func (u *Unsigned) Seal(signature []byte) ([]byte, error) {
	size := len(u.Manifest) + len(signature) + len(u.meta) + 1024
	for _, f := range u.files {
		size += len(f.Data) + 128 + 2*len(f.Name)
	}
	var buf bytes.Buffer
	buf.Grow(size)
	zw := zip.NewWriter(&buf)
	var scratch bytes.Buffer
	put := func(name string, data []byte, method uint16) error {
		fh := &zip.FileHeader{Name: name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(data),
			UncompressedSize64: uint64(len(data)), CompressedSize64: uint64(len(data)),
			CreatorVersion: 20, ReaderVersion: 20, ModifiedDate: modDate, ModifiedTime: 0}
		body := data
		if method == zip.Deflate && len(data) > 0 {
			scratch.Reset()
			fw := deflater(&scratch)
			if _, err := fw.Write(data); err != nil {
				return err
			}
			if err := fw.Close(); err != nil {
				return err
			}
			if scratch.Len() < len(data) {
				fh.Method, fh.CompressedSize64, body = zip.Deflate, uint64(scratch.Len()), scratch.Bytes()
			}
		}
		if !isASCII(name) {
			fh.Flags |= 0x800 // the name is UTF-8
		}
		w, err := zw.CreateRaw(fh)
		if err != nil {
			return err
		}
		_, err = w.Write(body)
		return err
	}
	if err := put(MimetypePath, []byte(Mimetype), zip.Store); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if err := put(ManifestPath, u.Manifest, zip.Deflate); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if err := put(SignaturePath, signature, zip.Store); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if err := put(MetadataPath, u.meta, zip.Deflate); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	for _, f := range u.files {
		if err := put(FilesDir+f.Name, f.Data, methodFor(f.MediaType)); err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	return buf.Bytes(), nil
}

// modDate is every entry's MS-DOS date, 2000-01-01 00:00 (fixed: containers
// are reproducible).
const modDate = (2000-1980)<<9 | 1<<5 | 1

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// Build makes a signed container: Prepare, sign the manifest with s, Seal.
func Build(meta []byte, files []File, s *pki.Signer) ([]byte, error) {
	u, err := Prepare(meta, files)
	if err != nil {
		return nil, err
	}
	sig, err := SignDetached(u.Manifest, s)
	if err != nil {
		return nil, err
	}
	return u.Seal(sig)
}

var flatePool sync.Pool

// pooledFlate returns its writer to the pool when closed.
type pooledFlate struct{ *flate.Writer }

func (p pooledFlate) Close() error {
	err := p.Writer.Close()
	flatePool.Put(p.Writer)
	return err
}

// deflater compresses at flate.BestSpeed with pooled writers: containers
// are mostly already-compressed PDFs and office files, so a higher level buys
// little and costs much.
func deflater(w io.Writer) io.WriteCloser {
	if fw, ok := flatePool.Get().(*flate.Writer); ok {
		fw.Reset(w)
		return pooledFlate{fw}
	}
	fw, _ := flate.NewWriter(w, flate.BestSpeed) // fails only for a bad level
	return pooledFlate{fw}
}

// methodFor stores already-compressed formats and deflates the rest.
func methodFor(mediaType string) uint16 {
	switch {
	case mediaType == "application/pdf", strings.HasPrefix(mediaType, "image/jpeg"), strings.HasPrefix(mediaType, "image/png"),
		strings.HasPrefix(mediaType, "application/zip"), strings.Contains(mediaType, "openxmlformats"),
		strings.HasPrefix(mediaType, "video/"), strings.HasPrefix(mediaType, "audio/"):
		return zip.Store
	}
	return zip.Deflate
}

var mediaTypes = map[string]string{
	".pdf":  "application/pdf",
	".doc":  "application/msword",
	".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	".xls":  "application/vnd.ms-excel",
	".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	".odt":  "application/vnd.oasis.opendocument.text",
	".xml":  "application/xml",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
	".jpg":  "image/jpeg",
	".jpeg": "image/jpeg",
	".png":  "image/png",
	".tif":  "image/tiff",
	".tiff": "image/tiff",
	".zip":  "application/zip",
}

// MediaTypeOf guesses a media type from a file name.
func MediaTypeOf(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := mediaTypes[ext]; ok {
		return t
	}
	if t := mime.TypeByExtension(ext); t != "" {
		return t
	}
	return "application/octet-stream"
}
