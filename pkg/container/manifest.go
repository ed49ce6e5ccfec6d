package container

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net/url"
	"strings"
)

// XML names of the ASiC manifest (ETSI EN 319 162-1).
const (
	nsASiC          = "http://uri.etsi.org/02918/v1.2.1#"
	nsDSig          = "http://www.w3.org/2000/09/xmldsig#"
	digestSHA256URI = "http://www.w3.org/2001/04/xmlenc#sha256"
)

// Reference is one DataObjectReference of the manifest: a file of the
// container, its media type and SHA-256.
type Reference struct {
	Name      string // path in the container, e.g. files/quyet-dinh.pdf
	MediaType string
	SHA256    [32]byte
}

type xmlManifest struct {
	XMLName xml.Name       `xml:"ASiCManifest"`
	SigRef  xmlSigRef      `xml:"SigReference"`
	Refs    []xmlReference `xml:"DataObjectReference"`
}

type xmlSigRef struct {
	URI      string `xml:"URI,attr"`
	MimeType string `xml:"MimeType,attr"`
}

type xmlReference struct {
	URI      string `xml:"URI,attr"`
	MimeType string `xml:"MimeType,attr"`
	Method   struct {
		Algorithm string `xml:"Algorithm,attr"`
	} `xml:"DigestMethod"`
	Value string `xml:"DigestValue"`
}

// escapeURI percent-encodes each path segment of a container name.
func escapeURI(name string) string {
	seg := strings.Split(name, "/")
	for i, s := range seg {
		seg[i] = url.PathEscape(s)
	}
	return strings.Join(seg, "/")
}

// marshalManifest writes the manifest deterministically.
func marshalManifest(refs []Reference) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>` + "\n")
	b.WriteString(`<asic:ASiCManifest xmlns:asic="` + nsASiC + `" xmlns:ds="` + nsDSig + `">` + "\n")
	b.WriteString(`  <asic:SigReference URI="` + SignaturePath + `" MimeType="application/pkcs7-signature"/>` + "\n")
	for _, r := range refs {
		b.WriteString(`  <asic:DataObjectReference URI="`)
		xml.EscapeText(&b, []byte(escapeURI(r.Name)))
		b.WriteString(`" MimeType="`)
		xml.EscapeText(&b, []byte(r.MediaType))
		b.WriteString(`">` + "\n")
		b.WriteString(`    <ds:DigestMethod Algorithm="` + digestSHA256URI + `"/>` + "\n")
		b.WriteString(`    <ds:DigestValue>` + base64.StdEncoding.EncodeToString(r.SHA256[:]) + `</ds:DigestValue>` + "\n")
		b.WriteString("  </asic:DataObjectReference>\n")
	}
	b.WriteString("</asic:ASiCManifest>\n")
	return b.Bytes()
}

// parseManifest reads an ASiC manifest; every reference must use SHA-256 and
// name a file once.
func parseManifest(data []byte) ([]Reference, error) {
	var m xmlManifest
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.XMLName.Space != nsASiC {
		return nil, fmt.Errorf("manifest: root element in namespace %q, want %q", m.XMLName.Space, nsASiC)
	}
	if m.SigRef.URI != SignaturePath {
		return nil, fmt.Errorf("manifest: SigReference %q, want %q", m.SigRef.URI, SignaturePath)
	}
	seen := map[string]bool{}
	refs := make([]Reference, 0, len(m.Refs))
	for _, x := range m.Refs {
		name, err := url.PathUnescape(x.URI)
		if err != nil {
			return nil, fmt.Errorf("manifest: URI %q: %w", x.URI, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("manifest: %q listed twice", name)
		}
		seen[name] = true
		if x.Method.Algorithm != digestSHA256URI {
			return nil, fmt.Errorf("manifest: %q: digest method %q, want SHA-256", name, x.Method.Algorithm)
		}
		d, err := base64.StdEncoding.DecodeString(strings.TrimSpace(x.Value))
		if err != nil || len(d) != 32 {
			return nil, fmt.Errorf("manifest: %q: digest value is not a base64 SHA-256", name)
		}
		r := Reference{Name: name, MediaType: x.MimeType}
		copy(r.SHA256[:], d)
		refs = append(refs, r)
	}
	return refs, nil
}
