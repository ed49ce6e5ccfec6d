// Package containertest crafts containers the way a careless or hostile
// sender could, signed validly, for the tests of every package that opens
// containers: flat zip bombs, entries whose headers lie about their sizes,
// payload names the builder refuses.
package containertest

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"hash/crc32"
	"net/url"
	"strings"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/pki"
)

// Entry is one file of a crafted container.
type Entry struct {
	Name string // path in the ZIP, e.g. files/x.pdf
	Data []byte
	// Zeros, when Data is nil: this many zero bytes, deflated once however
	// many entries repeat them.
	Zeros  int64
	Stored bool // stored rather than deflated
	// Declared, when not zero, is the uncompressed size the headers claim
	// (a lie, unless it is the true size).
	Declared int64
	Unlisted bool // left out of the manifest
}

// FlatBomb is a signed container of n payload entries of size zero bytes
// each (files/z0000.txt …): each entry small and well under a per-entry
// ratio check, the whole n×size.
func FlatBomb(meta []byte, s *pki.Signer, n int, size int64) ([]byte, error) {
	es := make([]Entry, n)
	for i := range es {
		es[i] = Entry{Name: fmt.Sprintf("files/z%04d.txt", i), Zeros: size}
	}
	return Craft(meta, s, es...)
}

type body struct {
	raw    []byte // as written
	size   int64  // inflated
	crc    uint32
	sha    [32]byte
	method uint16
}

// Craft writes a container: mimetype, a manifest listing document.json and
// every listed entry, its CMS signature by s (nil: a junk signature),
// document.json (meta), then the entries in order. Every entry is written
// with sizes in its local header.
func Craft(meta []byte, s *pki.Signer, entries ...Entry) ([]byte, error) {
	zeros := map[[2]int64]*body{}
	bodies := make([]*body, len(entries))
	for i, e := range entries {
		key := [2]int64{e.Zeros, 0}
		if e.Stored {
			key[1] = 1
		}
		if e.Data == nil && zeros[key] != nil {
			bodies[i] = zeros[key]
			continue
		}
		data := e.Data
		if data == nil {
			data = make([]byte, e.Zeros)
		}
		b, err := encode(data, e.Stored)
		if err != nil {
			return nil, err
		}
		bodies[i] = b
		if e.Data == nil {
			zeros[key] = b
		}
	}
	var man bytes.Buffer
	man.WriteString(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>` + "\n")
	man.WriteString(`<asic:ASiCManifest xmlns:asic="http://uri.etsi.org/02918/v1.2.1#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#">`)
	man.WriteString(`<asic:SigReference URI="` + container.SignaturePath + `" MimeType="application/pkcs7-signature"/>`)
	ref := func(name string, sum [32]byte) {
		seg := strings.Split(name, "/")
		for i := range seg {
			seg[i] = url.PathEscape(seg[i])
		}
		man.WriteString(`<asic:DataObjectReference URI="`)
		xml.EscapeText(&man, []byte(strings.Join(seg, "/")))
		man.WriteString(`" MimeType="application/octet-stream"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>`)
		man.WriteString(base64.StdEncoding.EncodeToString(sum[:]))
		man.WriteString("</ds:DigestValue></asic:DataObjectReference>\n")
	}
	ref(container.MetadataPath, sha256.Sum256(meta))
	for i, e := range entries {
		if !e.Unlisted {
			ref(e.Name, bodies[i].sha)
		}
	}
	man.WriteString("</asic:ASiCManifest>\n")
	sig := []byte("not a signature")
	if s != nil {
		var err error
		if sig, err = container.SignDetached(man.Bytes(), s); err != nil {
			return nil, err
		}
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	put := func(name string, b *body, declared int64) error {
		fh := &zip.FileHeader{Name: name, Method: b.method, CRC32: b.crc, CompressedSize64: uint64(len(b.raw)),
			UncompressedSize64: uint64(b.size), CreatorVersion: 20, ReaderVersion: 20}
		if declared != 0 {
			fh.UncompressedSize64 = uint64(declared)
		}
		w, err := zw.CreateRaw(fh)
		if err != nil {
			return err
		}
		_, err = w.Write(b.raw)
		return err
	}
	for _, x := range []struct {
		name   string
		data   []byte
		stored bool
	}{{container.MimetypePath, []byte(container.Mimetype), true}, {container.ManifestPath, man.Bytes(), false},
		{container.SignaturePath, sig, true}, {container.MetadataPath, meta, false}} {
		b, err := encode(x.data, x.stored)
		if err != nil {
			return nil, err
		}
		if err := put(x.name, b, 0); err != nil {
			return nil, err
		}
	}
	for i, e := range entries {
		if err := put(e.Name, bodies[i], e.Declared); err != nil {
			return nil, fmt.Errorf("containertest: %s: %w", e.Name, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func encode(data []byte, stored bool) (*body, error) {
	b := &body{raw: data, size: int64(len(data)), crc: crc32.ChecksumIEEE(data), sha: sha256.Sum256(data), method: zip.Store}
	if stored {
		return b, nil
	}
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		return nil, err
	}
	fw.Write(data)
	if err := fw.Close(); err != nil {
		return nil, err
	}
	b.raw, b.method = buf.Bytes(), zip.Deflate
	return b, nil
}
