package edxml

import (
	"bufio"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edxhub/edx/pkg/document"
)

// File is a file to attach: its name (files/<Name>) and how to read it.
type File struct {
	Name string
	Open func() (io.ReadCloser, error)
}

// Write writes d and its files as a document packet. Attachments come in
// the order and with the metadata d's edxml_extra kept from an import, each
// found by its name (or its name and .zip, for one the sender zipped); files
// no kept attachment names follow, in the order given. An absent edxml_id is
// written as {from},{yyyy/MM/dd},{number}/{notation}; an in_reply_to
// without a kept ResponseFor as ResponseFor/DocumentId. d is not validated
// (a document imported from a peer may not be valid for edx and still be
// written back as it came): call Validate first where that matters.
func Write(w io.Writer, d *document.Document, files []File) error {
	ix, err := indexKept(packetSchema, d.EdXMLExtra)
	if err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"promulgated_at", d.PromulgatedAt}, {"due_date", d.DueDate}} {
		if _, ok := toWireDate(f.v); f.v != "" && !ok {
			return fmt.Errorf("edxml: %s %q: want a date YYYY-MM-DD", f.name, f.v)
		}
	}
	s := &docSource{d: d, ix: ix}
	if n := ix.max[messagePath+"/To"]; n > len(d.To) {
		return fmt.Errorf("edxml: edxml_extra: To[%d] kept but the document has %d recipients", n, len(d.To))
	}
	if err := s.schedule(files); err != nil {
		return err
	}
	return write(w, packetSchema, ix, s)
}

// write writes a packet of schema from src and the kept elements.
func write(w io.Writer, schema *elem, ix *keptIndex, src source) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	x := &writer{out: bw, ix: ix, src: src}
	x.str(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<edXML:edXML xmlns:edXML="` + Namespace + `">`)
	x.group(schema, rootPath, 0, 1)
	x.str("\n</edXML:edXML>\n")
	if x.err != nil {
		return x.err
	}
	if x.written != len(ix.all) {
		for _, k := range ix.all {
			if !k.done {
				return fmt.Errorf("edxml: edxml_extra[%d]: %s under %s is in no place the packet has", k.i, k.name, k.path)
			}
		}
	}
	return bw.Flush()
}

// source gives the writer what the document (or status) holds.
type source interface {
	// value returns a leaf's text and whether to write it.
	value(f field, rep int) (string, bool)
	// values returns a repeated leaf's texts.
	values(f field) []string
	// count returns how many times repeated group e is written under path;
	// kept is the highest index kept.
	count(e *elem, path string, kept int) int
	// special writes what only the source knows how to (attachment content,
	// the manifest's references) and reports whether it did; with a nil
	// writer it only reports whether it would write anything.
	special(w *writer, e *elem, path string, rep, depth int) bool
}

type writer struct {
	out     *bufio.Writer
	ix      *keptIndex
	src     source
	err     error
	written int
}

func (w *writer) str(s string) {
	if w.err == nil {
		_, w.err = w.out.WriteString(s)
	}
}

func (w *writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *writer) indent(depth int) {
	w.str("\n" + strings.Repeat("  ", depth))
}

func (w *writer) open(name string, depth int) {
	w.indent(depth)
	w.str("<edXML:" + name + ">")
}

func (w *writer) close(name string, depth int) {
	w.indent(depth)
	w.str("</edXML:" + name + ">")
}

// leaf writes <edXML:name>v</edXML:name>.
func (w *writer) leaf(path, name, v string, depth int) {
	if err := xmlText(v); err != nil {
		w.fail(fmt.Errorf("edxml: %s/%s: %w", path, name, err))
		return
	}
	w.indent(depth)
	w.str("<edXML:" + name + ">" + escapeText(v) + "</edXML:" + name + ">")
}

// group writes the children of the element at path, shaped e.
func (w *writer) group(e *elem, path string, rep, depth int) {
	for _, k := range e.kids {
		if k.alias || k.kind == kStatus || k.kind == kDocument || k.kind == kDrop {
			continue
		}
		switch k.kind {
		case kGroup:
			n := 1
			if k.repeat {
				n = w.src.count(k, path, w.ix.max[path+"/"+k.name])
			}
			for i := 1; i <= n; i++ {
				cpath, crep := path+"/"+k.name, rep
				if k.repeat {
					cpath += "[" + strconv.Itoa(i) + "]"
					crep = i
				}
				if !w.has(k, cpath, crep) {
					if k.repeat || k.always {
						w.indent(depth)
						w.str("<edXML:" + k.name + "/>")
					}
					continue
				}
				w.open(k.name, depth)
				w.group(k, cpath, crep, depth+1)
				w.close(k.name, depth)
			}
		case kContent:
			w.src.special(w, k, path, rep, depth)
		case kRaw:
			w.src.special(w, k, path, rep, depth)
			w.kept(path, k.name, depth)
		default:
			if k.field != fNone {
				if k.repeat {
					for _, v := range w.src.values(k.field) {
						w.leaf(path, k.name, v, depth)
					}
				} else if v, ok := w.src.value(k.field, rep); ok {
					w.leaf(path, k.name, v, depth)
				}
			}
			w.kept(path, k.name, depth)
		}
	}
	for _, k := range w.ix.at[path] {
		if kid, _ := e.kid(k.name); kid == nil || kid.alias {
			w.writeKept(k, depth)
		}
	}
}

// has reports whether the element at path, shaped e, has anything to write.
func (w *writer) has(e *elem, path string, rep int) bool {
	if w.ix.under[path] {
		return true
	}
	for _, k := range e.kids {
		if k.alias || k.kind == kStatus || k.kind == kDocument || k.kind == kDrop {
			continue
		}
		switch k.kind {
		case kGroup:
			if k.repeat {
				if w.src.count(k, path, w.ix.max[path+"/"+k.name]) > 0 {
					return true
				}
			} else if k.always || w.has(k, path+"/"+k.name, rep) {
				return true
			}
		case kContent:
			return true
		case kRaw:
			if w.src.special(nil, k, path, rep, 0) {
				return true
			}
		default:
			if k.field == fNone {
				continue
			}
			if k.repeat {
				if len(w.src.values(k.field)) > 0 {
					return true
				}
			} else if _, ok := w.src.value(k.field, rep); ok {
				return true
			}
		}
	}
	return false
}

// kept writes the kept elements named name under path.
func (w *writer) kept(path, name string, depth int) {
	for _, k := range w.ix.at[path] {
		if k.name == name {
			w.writeKept(k, depth)
		}
	}
}

func (w *writer) writeKept(k *kept, depth int) {
	if k.done {
		return
	}
	k.done = true
	w.written++
	var b strings.Builder
	k.n.write(&b, "edXML", "", depth)
	w.indent(depth)
	w.str(b.String())
}

// keptIndex indexes the kept elements of a document by the path they hang
// from.
type keptIndex struct {
	all   []*kept
	at    map[string][]*kept // by parent path
	max   map[string]int     // the highest index kept under a repeated element's path (without its index)
	under map[string]bool    // paths with kept elements at or below them
}

type kept struct {
	i    int
	path string
	name string
	n    *node
	done bool
}

// text returns the text of the kept leaf named name under path.
func (ix *keptIndex) text(path, name string) (string, bool) {
	for _, k := range ix.at[path] {
		if k.name == name {
			var b strings.Builder
			for _, t := range k.n.kids {
				if s, ok := t.(string); ok {
					b.WriteString(s)
				}
			}
			return b.String(), true
		}
	}
	return "", false
}

// indexKept checks each kept element against schema: it must hang from a
// known element, and not stand for a field the document holds.
func indexKept(schema *elem, extras []document.EdXMLExtra) (*keptIndex, error) {
	ix := &keptIndex{at: map[string][]*kept{}, max: map[string]int{}, under: map[string]bool{}}
	if len(extras) > document.MaxEdXMLExtra {
		return nil, fmt.Errorf("edxml: edxml_extra: more than %d elements", document.MaxEdXMLExtra)
	}
	for i, x := range extras {
		bad := func(format string, a ...any) error {
			return fmt.Errorf("edxml: edxml_extra[%d]: "+format, append([]any{i}, a...)...)
		}
		parent, err := ix.resolve(schema, x.Path)
		if err != nil {
			return nil, bad("%v", err)
		}
		n, err := parseKept(x.XML)
		if err != nil {
			return nil, bad("%v", err)
		}
		name := n.name.Local
		if kid, _ := parent.kid(name); kid != nil && !kid.alias {
			switch {
			case kid.kind == kRaw:
			case kid.kind == kGroup, kid.kind == kContent, kid.kind == kStatus, kid.kind == kDocument, kid.kind == kDrop, kid.mapped():
				return nil, bad("%s under %s is not kept: document.json holds it", name, x.Path)
			default:
				for _, t := range n.kids {
					if _, ok := t.(string); !ok || len(n.attr) > 0 {
						return nil, bad("%s under %s: want text only", name, x.Path)
					}
				}
			}
		}
		k := &kept{i: i, path: x.Path, name: name, n: n}
		ix.all = append(ix.all, k)
		ix.at[x.Path] = append(ix.at[x.Path], k)
		for p := x.Path; p != ""; p = p[:strings.LastIndexByte(p, '/')] {
			ix.under[p] = true
		}
	}
	return ix, nil
}

// resolve finds the element a path names in schema, noting the indices of
// repeated elements.
func (ix *keptIndex) resolve(schema *elem, path string) (*elem, error) {
	segs := strings.Split(path, "/")
	if len(segs) < 2 || segs[0] != "" || segs[1] != schema.name {
		return nil, fmt.Errorf("path %q: want /%s/…", path, schema.name)
	}
	e, at := schema, "/"+schema.name
	for _, s := range segs[2:] {
		name, idx := s, 0
		if i := strings.IndexByte(s, '['); i >= 0 && strings.HasSuffix(s, "]") {
			n, err := strconv.Atoi(s[i+1 : len(s)-1])
			if err != nil || n < 1 || n > 1<<20 || strconv.Itoa(n) != s[i+1:len(s)-1] {
				return nil, fmt.Errorf("path %q: bad index in %q", path, s)
			}
			name, idx = s[:i], n
		}
		k, _ := e.kid(name)
		if k == nil || k.alias || k.kind != kGroup || k.repeat != (idx > 0) {
			return nil, fmt.Errorf("path %q: %s is not an element kept elements hang from", path, s)
		}
		if idx > ix.max[at+"/"+name] {
			ix.max[at+"/"+name] = idx
		}
		e, at = k, at+"/"+s
	}
	return e, nil
}

// parseKept reads a kept element.
func parseKept(s string) (*node, error) {
	if len(s) > document.MaxEdXMLExtraBytes {
		return nil, fmt.Errorf("longer than %d bytes", document.MaxEdXMLExtraBytes)
	}
	dec := xml.NewDecoder(strings.NewReader(`<k xmlns="` + Namespace + `">` + s + `</k>`))
	dec.Strict = true
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var n *node
	depth := 0
	var stack []*node
	for {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not an XML element: %v", err)
		}
		switch t := t.(type) {
		case xml.StartElement:
			depth++
			if depth > 32 {
				return nil, errors.New("nested deeper than 32")
			}
			c := &node{name: t.Name}
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns" {
					continue
				}
				c.attr = append(c.attr, a)
			}
			if len(stack) == 0 {
				if n != nil {
					return nil, errors.New("more than one element")
				}
				n = c
			} else {
				p := stack[len(stack)-1]
				p.kids = append(p.kids, c)
			}
			stack = append(stack, c)
		case xml.EndElement:
			if len(stack) == 0 {
				if n == nil {
					return nil, errors.New("no element")
				}
				return n, nil
			}
			stack[len(stack)-1].trim()
			stack = stack[:len(stack)-1]
			depth--
		case xml.CharData:
			if len(stack) == 0 {
				if !blank(t) {
					return nil, errors.New("text outside the element")
				}
				continue
			}
			p := stack[len(stack)-1]
			if l := len(p.kids); l > 0 {
				if s, ok := p.kids[l-1].(string); ok {
					p.kids[l-1] = s + string(t)
					continue
				}
			}
			p.kids = append(p.kids, string(t))
		case xml.Directive:
			return nil, errors.New("a directive")
		}
	}
}

// xmlText reports a string XML 1.0 cannot carry.
func xmlText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xFFFE || r == 0xFFFF || r >= 0xD800 && r < 0xE000 {
			return fmt.Errorf("the character %U cannot be written in XML", r)
		}
	}
	return nil
}

// docSource writes a document.
type docSource struct {
	d    *document.Document
	ix   *keptIndex
	plan []planned
}

// planned is one attachment to write.
type planned struct {
	file File
	gen  bool // its metadata is made up here: no kept attachment names the file
}

func (s *docSource) schedule(files []File) error {
	byName := map[string]int{}
	for i, f := range files {
		if _, dup := byName[f.Name]; dup {
			return fmt.Errorf("edxml: file %q given twice", f.Name)
		}
		byName[f.Name] = i
	}
	used := make([]bool, len(files))
	for i := 1; i <= s.ix.max[attachmentPath]; i++ {
		name, _ := s.ix.text(attachmentPath+"["+strconv.Itoa(i)+"]", "AttachmentName")
		name = strings.TrimSpace(name)
		j := -1
		for _, zipped := range []bool{false, true} {
			f, err := fileName(i, name, zipped)
			if err != nil {
				return fmt.Errorf("edxml: attachment %d %q: %w", i, name, err)
			}
			if k, ok := byName[f]; ok && j < 0 {
				j = k
			}
		}
		if j < 0 {
			f, _ := fileName(i, name, false)
			return fmt.Errorf("edxml: attachment %d %q: no file %s", i, name, f)
		}
		if used[j] {
			return fmt.Errorf("edxml: attachment %d %q: file %s is another attachment's", i, name, files[j].Name)
		}
		used[j] = true
		s.plan = append(s.plan, planned{file: files[j]})
	}
	for i, f := range files {
		if !used[i] {
			s.plan = append(s.plan, planned{file: f, gen: true})
		}
	}
	return nil
}

func (s *docSource) value(f field, rep int) (string, bool) {
	d := s.d
	nonEmpty := func(v string) (string, bool) { return v, v != "" }
	switch f {
	case fFrom:
		return nonEmpty(string(Sender(d)))
	case fFromName:
		if d.Upstream != nil {
			return nonEmpty(d.Upstream.FromName)
		}
		return nonEmpty(d.FromName)
	case fTo:
		return nonEmpty(string(d.To[rep-1]))
	case fNumber:
		return nonEmpty(d.Number)
	case fNotation:
		return nonEmpty(d.Notation)
	case fPlace:
		return nonEmpty(d.PromulgatedPlace)
	case fPromulgated:
		return s.date(d.PromulgatedAt)
	case fType:
		if _, kept := s.ix.text(docTypePath, "Type"); kept {
			return "", false
		}
		return nonEmpty(d.Type)
	case fTypeName:
		return nonEmpty(d.TypeName)
	case fSubject:
		return nonEmpty(d.Subject)
	case fContent:
		return nonEmpty(d.Content)
	case fCompetence:
		return nonEmpty(d.Signer.Competence)
	case fPosition:
		return nonEmpty(d.Signer.Position)
	case fFullName:
		return nonEmpty(d.Signer.FullName)
	case fDue:
		return s.date(d.DueDate)
	case fPriority:
		return strconv.Itoa(int(d.Urgency)), true
	case fSphere:
		return nonEmpty(d.Sphere)
	case fPages:
		return strconv.Itoa(d.PageCount), d.PageCount != 0
	case fSteering:
		return nonEmpty(d.Steering)
	case fEdXMLID:
		if d.EdXMLID != "" {
			return d.EdXMLID, true
		}
		return nonEmpty(DocumentID(d))
	case fBusiness:
		return strconv.Itoa(int(d.BusinessType)), true
	case fReplyDoc:
		if rep == 1 && s.ix.max[responseForPath] == 0 {
			return nonEmpty(string(d.InReplyTo))
		}
	case fAttID, fAttName, fAttDesc, fAttType:
		p := s.plan[rep-1]
		if !p.gen {
			return "", false
		}
		switch f {
		case fAttID:
			return strconv.Itoa(rep), true
		case fAttName:
			return p.file.Name, true
		case fAttType:
			return mediaTypeOf(p.file.Name), true
		}
	}
	return "", false
}

func (s *docSource) date(v string) (string, bool) {
	w, ok := toWireDate(v) // checked by Write
	return w, ok
}

func (s *docSource) values(f field) []string {
	if f == fPlaces {
		return s.d.Places
	}
	return nil
}

func (s *docSource) count(e *elem, path string, kept int) int {
	switch path + "/" + e.name {
	case messagePath + "/To":
		return len(s.d.To)
	case attachmentPath:
		return len(s.plan)
	case responseForPath:
		if kept == 0 && s.d.InReplyTo != "" {
			return 1
		}
	}
	return kept
}

func (s *docSource) special(w *writer, e *elem, path string, rep, depth int) bool {
	switch {
	case e == referenceElem:
		for i := range s.plan {
			leaves := s.reference(i + 1)
			if len(leaves) == 0 {
				continue
			}
			if w == nil {
				return true // asked whether there is one
			}
			w.open("Reference", depth)
			for _, l := range leaves {
				w.leaf(path+"/Reference", l[0], l[1], depth+1)
			}
			w.close("Reference", depth)
		}
		return w != nil
	case e.kind == kContent:
		if w != nil {
			s.stream(w, path, s.plan[rep-1].file, depth)
		}
		return true
	}
	return false
}

// reference returns the leaves of the manifest's Reference to attachment
// i: what the attachment says of itself.
func (s *docSource) reference(i int) [][2]string {
	apath := attachmentPath + "[" + strconv.Itoa(i) + "]"
	var leaves [][2]string
	for _, k := range []struct {
		name string
		f    field
	}{{"ContentId", fAttID}, {"AttachmentName", fAttName}, {"Description", fAttDesc}, {"ContentType", fAttType}} {
		v, ok := s.value(k.f, i)
		if !ok {
			v, ok = s.ix.text(apath, k.name)
			if k.name != "Description" {
				v = strings.TrimSpace(v)
			}
		}
		if ok && v != "" {
			leaves = append(leaves, [2]string{k.name, v})
		}
	}
	return leaves
}

// stream writes a file's content as base64, as it reads it.
func (s *docSource) stream(w *writer, path string, f File, depth int) {
	if w.err != nil {
		return
	}
	r, err := f.Open()
	if err != nil {
		w.fail(fmt.Errorf("edxml: file %s: %w", f.Name, err))
		return
	}
	defer r.Close()
	w.indent(depth)
	w.str("<edXML:ContentTransferEncoded>")
	enc := base64.NewEncoder(base64.StdEncoding, w.out)
	if _, err := io.Copy(enc, r); err != nil {
		w.fail(fmt.Errorf("edxml: file %s: %w", f.Name, err))
		return
	}
	if err := enc.Close(); err != nil {
		w.fail(err)
		return
	}
	w.str("</edXML:ContentTransferEncoded>")
}

// DocumentID returns the edXML DocumentId of d as the national SDK forms
// it: {from},{yyyy/MM/dd},{number}/{notation}; "" without a sender or a
// valid promulgation date.
func DocumentID(d *document.Document) string {
	date, ok := toWireDate(d.PromulgatedAt)
	from := Sender(d)
	if from == "" || !ok {
		return ""
	}
	code := d.Number + "/" + d.Notation
	code = strings.Trim(code, "/")
	return string(from) + "," + date + "," + code
}

// Sender is the sender of d as edXML names it (From/OrganId): the unit
// outside the city for a document the city's gateway brought in from an
// upstream axis (document.Upstream), else d.From.
func Sender(d *document.Document) document.UnitID {
	if d.Upstream != nil && d.Upstream.From != "" {
		return d.Upstream.From
	}
	return d.From
}
