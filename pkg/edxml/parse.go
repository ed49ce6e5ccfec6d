package edxml

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// handler receives what the walker reads from the known elements.
type handler interface {
	// begin is called at the start of a known group element; rep is the
	// index of the element when it repeats (1-based), else its repeating
	// ancestor's.
	begin(e *elem, rep int, path string) error
	// set receives a leaf's text (trimmed unless the leaf keeps it); keep
	// says whether the leaf is also kept in edxml_extra.
	set(f field, rep int, path, v string) (keep bool, err error)
	// raw receives a known element kept whole; keep says whether to keep it
	// as it is (else the handler keeps it itself, or drops it).
	raw(e *elem, path string, key []int, n *node) (keep bool)
	// content streams an attachment's content.
	content(rep int, path string) error
}

// parser walks a packet with a schema; it keeps what the schema does not
// map in extras.
type parser struct {
	dec    *xml.Decoder
	in     *input
	lim    Limits
	h      handler
	depth  int
	elems  int
	extras []extra
	size   int // bytes of extras
}

type extra struct {
	key  []int // sort key: the writer's order
	path string
	xml  string
}

func newParser(r io.Reader, lim Limits, h handler) *parser {
	lim = lim.withDefaults()
	in := newInput(r, lim.MaxPacket, int64(lim.MaxText)+4096)
	dec := xml.NewDecoder(in)
	dec.Strict = true
	dec.CharsetReader = func(label string, r io.Reader) (io.Reader, error) {
		switch strings.ToLower(label) {
		case "utf8", "utf-8", "us-ascii", "ascii":
			return r, nil // the same bytes: the decoder keeps reading input
		}
		return nil, fmt.Errorf("encoding %q: edXML is UTF-8", label)
	}
	return &parser{dec: dec, in: in, lim: lim, h: h}
}

// token returns the next token, within the limits; a directive (DOCTYPE,
// ENTITY) is an error.
func (p *parser) token(path string) (xml.Token, error) {
	p.in.mark = p.in.n
	t, err := p.dec.Token()
	if err != nil {
		return nil, p.readErr(path, err)
	}
	switch t := t.(type) {
	case xml.StartElement:
		p.depth++
		p.elems++
		if p.depth > p.lim.MaxDepth {
			return nil, errf(reason.EdXMLLimit, path, "elements nested deeper than %d", p.lim.MaxDepth)
		}
		if p.elems > p.lim.MaxElements {
			return nil, errf(reason.EdXMLLimit, path, "more than %d elements", p.lim.MaxElements)
		}
		if len(t.Attr) > p.lim.MaxAttrs {
			return nil, errf(reason.EdXMLLimit, path+"/"+t.Name.Local, "more than %d attributes", p.lim.MaxAttrs)
		}
		if !ncName(t.Name.Local) {
			return nil, errf(reason.EdXMLMalformed, path, "the element name %q is not a namespace-well-formed XML name", clip(t.Name.Local, 40))
		}
		for _, a := range t.Attr {
			if !ncName(a.Name.Local) {
				return nil, errf(reason.EdXMLMalformed, path+"/"+t.Name.Local, "the attribute name %q is not a namespace-well-formed XML name", clip(a.Name.Local, 40))
			}
		}
	case xml.EndElement:
		p.depth--
	case xml.Directive:
		return nil, errf(reason.EdXMLDTD, path, "a DOCTYPE or entity declaration (<!%s): not allowed in a packet", clip(string(t), 20))
	}
	return t, nil
}

// ncName says whether a name, its prefix taken off by the decoder, is a
// name without a colon (XML Namespaces' NCName): the decoder leaves ":",
// "a:" or ":b" whole in Local, and written back with a prefix such a name
// would not read again.
func ncName(s string) bool { return s != "" && !strings.Contains(s, ":") }

func (p *parser) readErr(path string, err error) error {
	switch {
	case errors.Is(err, errPacketTooLarge):
		return errf(reason.EdXMLTooLarge, path, "packet larger than %d bytes", p.lim.MaxPacket)
	case errors.Is(err, errTokenTooLarge):
		return errf(reason.EdXMLLimit, path, "a text, tag or comment longer than %d bytes", p.lim.MaxText)
	case err == io.EOF:
		return io.EOF // only outside the root: the decoder reports an open element as a syntax error
	}
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		return &Error{Code: reason.EdXMLMalformed, Path: path, Msg: "not well-formed XML", Err: fmt.Errorf("line %d: %s", se.Line, se.Msg)}
	}
	return &Error{Code: reason.EdXMLMalformed, Path: path, Msg: "unreadable", Err: err}
}

// root reads up to the root element and returns its start tag.
func (p *parser) root() (xml.StartElement, error) {
	for {
		t, err := p.token("")
		if err == io.EOF {
			return xml.StartElement{}, errf(reason.EdXMLMalformed, "", "no root element")
		}
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := t.(type) {
		case xml.StartElement:
			return t, nil
		case xml.CharData:
			if !blank(t) {
				return xml.StartElement{}, errf(reason.EdXMLMalformed, "", "text before the root element")
			}
		}
	}
}

// end reads what follows the root element: nothing but space, comments and
// processing instructions.
func (p *parser) end() error {
	for {
		t, err := p.token("")
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch t := t.(type) {
		case xml.StartElement:
			return errf(reason.EdXMLMalformed, "/"+t.Name.Local, "a second root element")
		case xml.CharData:
			if !blank(t) {
				return errf(reason.EdXMLMalformed, "", "text after the root element")
			}
		}
	}
}

// walk reads the children of the element at path, shaped e, up to its end
// tag. key is the element's sort key, rep its repeat index.
func (p *parser) walk(e *elem, path string, key []int, rep int) error {
	var seen map[*elem]int
	for {
		t, err := p.token(path)
		if err != nil {
			return err
		}
		switch t := t.(type) {
		case xml.EndElement:
			return nil
		case xml.CharData:
			if !blank(t) {
				return errf(reason.EdXMLMalformed, path, "unexpected text %q", clip(string(t), 40))
			}
		case xml.StartElement:
			k, pos := e.kid(t.Name.Local)
			if k == nil {
				n, err := p.capture(t, path+"/"+t.Name.Local, new(int))
				if err != nil {
					return err
				}
				if err := p.keep(path, append(slices.Clip(key), pos), n); err != nil {
					return err
				}
				continue
			}
			if seen == nil {
				seen = map[*elem]int{}
			}
			seen[k]++
			idx := seen[k]
			if !k.repeat && idx > 1 && k.canon != "." {
				return errf(reason.EdXMLField, path+"/"+k.name, "appears twice")
			}
			cpath, ckey, crep := path+"/"+k.segment(), append(slices.Clip(key), pos), rep
			if k.repeat {
				cpath += "[" + strconv.Itoa(idx) + "]"
				ckey = append(ckey, idx)
				crep = idx
			}
			if k.canon == "." {
				cpath, ckey = path, key
			}
			if err := p.child(k, t, path, cpath, key, ckey, pos, crep); err != nil {
				return err
			}
		}
	}
}

func (p *parser) child(k *elem, t xml.StartElement, path, cpath string, key, ckey []int, pos, rep int) error {
	switch k.kind {
	case kGroup:
		if err := p.h.begin(k, rep, cpath); err != nil {
			return err
		}
		return p.walk(k, cpath, ckey, rep)
	case kText, kDate, kTime, kInt:
		v, err := p.text(cpath, k.keep)
		if err != nil {
			return err
		}
		keep := k.field == fNone
		if !keep {
			if keep, err = p.h.set(k.field, rep, cpath, v); err != nil {
				return err
			}
		}
		if !keep || v == "" {
			return nil
		}
		switch k.kind {
		case kDate:
			if d, ok := parseDate(v); ok {
				v = d.Format(wireDate)
			}
		case kTime:
			if d, ok := parseTime(v); ok {
				v = d.Format(wireTime)
			}
		}
		return p.add(path, append(slices.Clip(key), pos), "<"+k.name+">"+escapeText(v)+"</"+k.name+">")
	case kRaw, kDrop:
		n, err := p.capture(t, cpath, new(int))
		if err != nil {
			return err
		}
		if k.kind == kDrop && n.empty() {
			return nil
		}
		if k.kind == kDrop || p.h.raw(k, path, append(slices.Clip(key), pos), n) {
			return p.keep(path, append(slices.Clip(key), pos), n)
		}
		return nil
	case kContent:
		if err := p.h.content(rep, cpath); err != nil {
			return err
		}
		// The end tag (the content was read past the decoder).
		for {
			t, err := p.token(cpath)
			if err != nil {
				return err
			}
			switch t := t.(type) {
			case xml.EndElement:
				return nil
			case xml.StartElement:
				return errf(reason.EdXMLMalformed, cpath+"/"+t.Name.Local, "an element inside attachment content")
			case xml.CharData:
				if !blank(t) {
					return errf(reason.EdXMLBase64, cpath, "attachment %d: text after the content", rep)
				}
			}
		}
	case kStatus:
		return &Error{Code: reason.EdXMLMalformed, Path: cpath, Msg: "a status packet", Err: ErrStatusPacket}
	case kDocument:
		return &Error{Code: reason.EdXMLMalformed, Path: cpath, Msg: "a document packet", Err: ErrDocumentPacket}
	}
	return fmt.Errorf("edxml: internal: kind %d", k.kind)
}

// text reads a leaf's text up to its end tag.
func (p *parser) text(path string, keep bool) (string, error) {
	var b strings.Builder
	for {
		t, err := p.token(path)
		if err != nil {
			return "", err
		}
		switch t := t.(type) {
		case xml.EndElement:
			if keep {
				return b.String(), nil
			}
			return strings.TrimSpace(b.String()), nil
		case xml.CharData:
			if b.Len()+len(t) > p.lim.MaxText {
				return "", errf(reason.EdXMLLimit, path, "text longer than %d bytes", p.lim.MaxText)
			}
			b.Write(t)
		case xml.StartElement:
			return "", errf(reason.EdXMLMalformed, path+"/"+t.Name.Local, "an element where text is expected")
		}
	}
}

// keep records an element kept whole.
func (p *parser) keep(path string, key []int, n *node) error {
	return p.add(path, key, n.canonical())
}

func (p *parser) add(path string, key []int, x string) error {
	p.size += len(x) + len(path)
	if p.size > p.lim.MaxExtra || len(p.extras) >= document.MaxEdXMLExtra {
		return errf(reason.EdXMLLimit, path, "more than %d bytes or %d elements without a document.json field", p.lim.MaxExtra, document.MaxEdXMLExtra)
	}
	// What is kept must write back as it is read: a name the decoder
	// took with its prefix ("SOAP-ENV:9ody") may not be an XML name
	// without it ("9ody").
	if _, err := parseKept(x); err != nil {
		return errf(reason.EdXMLMalformed, path, "an element that cannot be kept as it is: %v", err)
	}
	p.extras = append(p.extras, extra{key: key, path: path, xml: x})
	return nil
}

// sorted returns the kept elements in the writer's order.
func (p *parser) sorted() []document.EdXMLExtra {
	slices.SortStableFunc(p.extras, func(a, b extra) int { return slices.Compare(a.key, b.key) })
	if len(p.extras) == 0 {
		return nil
	}
	out := make([]document.EdXMLExtra, len(p.extras))
	for i, x := range p.extras {
		out[i] = document.EdXMLExtra{Path: x.path, XML: x.xml}
	}
	return out
}

// node is an element read whole.
type node struct {
	name xml.Name
	attr []xml.Attr
	kids []any // *node or string
}

func (n *node) empty() bool { return len(n.attr) == 0 && len(n.kids) == 0 }

// textOf returns the text of n's child named local, trimmed.
func (n *node) textOf(local string) (string, bool) {
	for _, k := range n.kids {
		if c, ok := k.(*node); ok && c.name.Local == local {
			var b strings.Builder
			for _, t := range c.kids {
				if s, ok := t.(string); ok {
					b.WriteString(s)
				}
			}
			return strings.TrimSpace(b.String()), true
		}
	}
	return "", false
}

// capture reads an element whole, from its start tag t; comments and
// processing instructions are dropped, and so is space between elements.
func (p *parser) capture(t xml.StartElement, path string, used *int) (*node, error) {
	n := &node{name: t.Name}
	for _, a := range t.Attr {
		if a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns" {
			continue // declarations: written again where needed
		}
		n.attr = append(n.attr, a)
	}
	for {
		tok, err := p.token(path)
		if err != nil {
			return nil, err
		}
		switch tok := tok.(type) {
		case xml.EndElement:
			n.trim()
			return n, nil
		case xml.CharData:
			*used += len(tok)
			if p.size+*used > p.lim.MaxExtra {
				return nil, errf(reason.EdXMLLimit, path, "more than %d bytes without a document.json field", p.lim.MaxExtra)
			}
			if l := len(n.kids); l > 0 {
				if s, ok := n.kids[l-1].(string); ok {
					n.kids[l-1] = s + string(tok)
					continue
				}
			}
			n.kids = append(n.kids, string(tok))
		case xml.StartElement:
			c, err := p.capture(tok, path+"/"+tok.Name.Local, used)
			if err != nil {
				return nil, err
			}
			n.kids = append(n.kids, c)
		}
	}
}

// trim drops space between child elements; text-only content stays as is.
func (n *node) trim() {
	hasElem := false
	for _, k := range n.kids {
		if _, ok := k.(*node); ok {
			hasElem = true
			break
		}
	}
	if !hasElem {
		return
	}
	out := n.kids[:0]
	for _, k := range n.kids {
		if s, ok := k.(string); ok && strings.TrimSpace(s) == "" {
			continue
		}
		out = append(out, k)
	}
	n.kids = out
}

// canonical writes n as kept in document.json: elements of the edXML
// namespace (or of none) unprefixed, others with their namespace declared,
// attributes sorted.
func (n *node) canonical() string {
	var b strings.Builder
	n.write(&b, "", Namespace, -1)
	return b.String()
}

// write serialises n. prefix is the edXML prefix ("" when the edXML
// namespace is the default one), def the default namespace in scope, indent
// the depth for indentation (-1: none).
func (n *node) write(b *strings.Builder, prefix, def string, indent int) {
	ns := normNS(n.name.Space)
	b.WriteByte('<')
	var decl string
	switch {
	case ns == Namespace && prefix != "":
		b.WriteString(prefix + ":")
	case ns != def:
		decl = ns
		def = ns
	}
	b.WriteString(n.name.Local)
	if decl != "" {
		b.WriteString(` xmlns="` + escapeAttr(decl) + `"`)
	}
	attrs := slices.Clone(n.attr)
	slices.SortFunc(attrs, func(a, c xml.Attr) int {
		return strings.Compare(a.Name.Space+" "+a.Name.Local, c.Name.Space+" "+c.Name.Local)
	})
	for i, a := range attrs {
		b.WriteByte(' ')
		switch s := a.Name.Space; {
		case s == "":
		case s == "http://www.w3.org/XML/1998/namespace" || s == "xml":
			b.WriteString("xml:")
		case normNS(s) == Namespace && prefix != "":
			b.WriteString(prefix + ":")
		default:
			p := "a" + strconv.Itoa(i)
			b.WriteString(`xmlns:` + p + `="` + escapeAttr(normNS(s)) + `" ` + p + ":")
		}
		b.WriteString(a.Name.Local + `="` + escapeAttr(a.Value) + `"`)
	}
	if len(n.kids) == 0 {
		b.WriteString("/>")
		return
	}
	b.WriteByte('>')
	mixed := false
	for _, k := range n.kids {
		if _, ok := k.(string); ok {
			mixed = true
		}
	}
	for _, k := range n.kids {
		switch k := k.(type) {
		case string:
			b.WriteString(escapeText(k))
		case *node:
			if indent >= 0 && !mixed {
				newline(b, indent+1)
				k.write(b, prefix, def, indent+1)
			} else {
				k.write(b, prefix, def, -1)
			}
		}
	}
	if indent >= 0 && !mixed {
		newline(b, indent)
	}
	b.WriteString("</")
	if ns == Namespace && prefix != "" {
		b.WriteString(prefix + ":")
	}
	b.WriteString(n.name.Local + ">")
}

func newline(b *strings.Builder, depth int) {
	b.WriteByte('\n')
	for i := 0; i < depth; i++ {
		b.WriteString("  ")
	}
}

// normNS maps the namespaces peers put edXML elements in to Namespace: the
// right one, none, or an undeclared edXML prefix.
func normNS(s string) string {
	if s == "" || strings.EqualFold(s, "edXML") || s == Namespace {
		return Namespace
	}
	return s
}

func blank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// escapeText escapes text content; a carriage return is kept as a reference
// (a reader would turn it into a line feed).
func escapeText(s string) string {
	if !strings.ContainsAny(s, "&<>\r") {
		return s
	}
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\r", "&#xD;")
	return r.Replace(s)
}

func escapeAttr(s string) string {
	if !strings.ContainsAny(s, "&<>\"\r\n\t") {
		return s
	}
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "\r", "&#xD;", "\n", "&#xA;", "\t", "&#x9;")
	return r.Replace(s)
}
