package edxml

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// AddTrace records a hop in d's trace list (a TraceHeader with organ and
// t), as an axis does when it passes a packet on.
func AddTrace(d *document.Document, organ document.UnitID, t time.Time) {
	n := 0
	for _, x := range d.EdXMLExtra {
		if i, ok := indexIn(x.Path, tracePath+"/TraceHeader"); ok && i > n {
			n = i
		}
	}
	p := tracePath + "/TraceHeader[" + strconv.Itoa(n+1) + "]"
	d.EdXMLExtra = append(d.EdXMLExtra,
		document.EdXMLExtra{Path: p, XML: "<OrganId>" + escapeText(string(organ)) + "</OrganId>"},
		document.EdXMLExtra{Path: p, XML: "<Timestamp>" + t.In(vietnam).Format(wireTime) + "</Timestamp>"},
	)
	sortKept(d.EdXMLExtra)
}

// SetResponseFor names the document d answers as its sender knows it,
// replacing any ResponseFor kept from an import. (in_reply_to holds edx's
// id of that document; a peer knows it by its edXML DocumentId.)
func SetResponseFor(d *document.Document, r ResponseFor) {
	out := d.EdXMLExtra[:0]
	for _, x := range d.EdXMLExtra {
		if _, ok := indexIn(x.Path, responseForPath); !ok {
			out = append(out, x)
		}
	}
	p := responseForPath + "[1]"
	date, _ := toWireDate(r.PromulgationDate)
	for _, f := range []struct{ name, v string }{{"OrganId", r.OrganID}, {"Code", r.Code}, {"PromulgationDate", date}, {"DocumentId", r.DocumentID}} {
		if f.v != "" {
			out = append(out, document.EdXMLExtra{Path: p, XML: "<" + f.name + ">" + escapeText(f.v) + "</" + f.name + ">"})
		}
	}
	d.EdXMLExtra = out
	sortKept(d.EdXMLExtra)
}

// ResponseFors returns the documents d answers as kept from an import.
func ResponseFors(d *document.Document) []ResponseFor {
	var out []ResponseFor
	for _, x := range d.EdXMLExtra {
		i, ok := indexIn(x.Path, responseForPath)
		if !ok {
			continue
		}
		for len(out) < i {
			out = append(out, ResponseFor{})
		}
		n, err := parseKept(x.XML)
		if err != nil {
			continue
		}
		v := ""
		for _, t := range n.kids {
			if s, ok := t.(string); ok {
				v += s
			}
		}
		r := &out[i-1]
		switch n.name.Local {
		case "OrganId":
			r.OrganID = v
		case "Code":
			r.Code = v
		case "PromulgationDate":
			if t, ok := parseDate(v); ok {
				v = t.Format(jsonDate)
			}
			r.PromulgationDate = v
		case "DocumentId":
			r.DocumentID = v
		}
	}
	return out
}

// indexIn returns i when path is prefix[i].
func indexIn(path, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return 0, false
	}
	i, err := strconv.Atoi(rest[:len(rest)-1])
	return i, err == nil && i > 0
}

// sortKept puts kept elements in the order Parse gives them: the writer's.
func sortKept(x []document.EdXMLExtra) {
	keys := make(map[int][]int, len(x))
	idx := make([]int, len(x))
	for i := range x {
		idx[i] = i
		keys[i] = keyOf(packetSchema, x[i])
	}
	slices.SortStableFunc(idx, func(a, b int) int { return slices.Compare(keys[a], keys[b]) })
	sorted := make([]document.EdXMLExtra, len(x))
	for i, j := range idx {
		sorted[i] = x[j]
	}
	copy(x, sorted)
}

// keyOf is the sort key of a kept element: the positions of its path's
// elements in schema, then its own.
func keyOf(schema *elem, x document.EdXMLExtra) []int {
	var key []int
	e := schema
	segs := strings.Split(x.Path, "/")
	if len(segs) > 2 {
		for _, s := range segs[2:] {
			name, idx := s, 0
			if i := strings.IndexByte(s, '['); i >= 0 {
				name = s[:i]
				idx, _ = strconv.Atoi(strings.TrimSuffix(s[i+1:], "]"))
			}
			k, pos := e.kid(name)
			key = append(key, pos)
			if idx > 0 {
				key = append(key, idx)
			}
			if k == nil {
				return append(key, 1<<30)
			}
			e = k
		}
	}
	name := ""
	if n, err := parseKept(x.XML); err == nil {
		name = n.name.Local
	}
	_, pos := e.kid(name)
	return append(key, pos)
}

// BusinessDocumentID returns the DocumentId a packet's Bussiness element
// names, as kept from an import: the document a revocation, an update or a
// replacement (business types 1–3) is about, in the national SDK's
// packets; "" when there is none.
func BusinessDocumentID(d *document.Document) string {
	for _, x := range d.EdXMLExtra {
		if x.Path != tracePath+"/Bussiness" {
			continue
		}
		n, err := parseKept(x.XML)
		if err != nil || n.name.Local != "DocumentId" {
			continue
		}
		v := ""
		for _, t := range n.kids {
			if s, ok := t.(string); ok {
				v += s
			}
		}
		return strings.TrimSpace(v)
	}
	return ""
}
