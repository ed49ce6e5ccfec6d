package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/edxml"
)

func init() {
	register(command{"edxml inspect", "show an edXML packet (QCVN 102) as edx reads it: header, attachments, problems", edxmlInspect})
	register(command{"edxml convert", "convert an edXML packet to document.json + files/, or such a directory to a packet", edxmlConvert})
}

// inspectResult is the JSON form of edx edxml inspect.
type inspectResult struct {
	Kind        string              `json:"kind"` // document or status
	Document    *document.Document  `json:"document,omitempty"`
	Attachments []edxml.Attachment  `json:"attachments,omitempty"`
	Status      *edxml.StatusPacket `json:"status,omitempty"`
	Warnings    []string            `json:"warnings,omitempty"`
	Problems    []document.Problem  `json:"problems,omitempty"`
	Error       *edxmlError         `json:"error,omitempty"`
	Size        int64               `json:"size"`
	SHA256      string              `json:"sha256"`
}

type edxmlError struct {
	Code    string `json:"code"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func edxmlInspect(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "edxml inspect", `[--json] FILE.edxml

Reads a document or status packet as edx would import it and prints the
document.json fields it maps to, the attachments (name, type found in the
bytes, size, SHA-256), the elements kept without a field, and any problem:
a packet edx refuses (exit 1, with the reason code and the element path) or
a document edx would not accept as it is (exit 1, each field at fault).
Nothing is written.`)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	name := fs.Arg(0)
	res, err := inspectPacket(name)
	if err != nil {
		return fail(e, "%v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		printInspect(e.stdout, name, res)
	}
	if res.Error != nil || len(res.Problems) > 0 {
		return exitInvalid
	}
	return exitOK
}

// inspectPacket reads the packet at name; an error is an I/O error, a
// packet edx refuses is in the result.
func inspectPacket(name string) (*inspectResult, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(f, h)}
	res := &inspectResult{Kind: "document"}
	p, err := edxml.Parse(cr, edxml.Options{})
	if errors.Is(err, edxml.ErrStatusPacket) {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		h.Reset()
		cr = &countReader{r: io.TeeReader(f, h)}
		res.Kind = "status"
		var s *edxml.StatusPacket
		if s, err = edxml.ParseStatus(cr, edxml.Limits{}); err == nil {
			res.Status = s
			st := s.Status(func(string) (document.ID, bool) { return document.NewID(time.Now()), true })
			res.Problems = problems(st.Validate())
		}
	} else if err == nil {
		res.Document, res.Attachments, res.Warnings = p.Document, p.Attachments, p.Warnings
		d := *p.Document
		d.ID = document.NewID(time.Now()) // edXML has none: edx sets it on import
		res.Problems = problems(d.Validate())
	}
	if err != nil {
		var pe *edxml.Error
		if !errors.As(err, &pe) {
			return nil, err
		}
		res.Error = &edxmlError{Code: string(pe.Code), Path: pe.Path, Message: pe.Error()}
	}
	io.Copy(io.Discard, cr) // the whole file's size and digest, even when reading stopped early
	res.Size, res.SHA256 = cr.n, hex.EncodeToString(h.Sum(nil))
	return res, nil
}

func problems(err error) []document.Problem {
	var p document.Problems
	if errors.As(err, &p) {
		return p
	}
	if err != nil {
		return []document.Problem{{Field: "", Message: err.Error()}}
	}
	return nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func printInspect(w io.Writer, name string, r *inspectResult) {
	row := func(k, format string, a ...any) { fmt.Fprintf(w, "%-12s %s\n", k, fmt.Sprintf(format, a...)) }
	row("packet", "%s", name)
	row("sha256", "%s (%d bytes)", r.SHA256, r.Size)
	row("kind", "%s", r.Kind)
	if d := r.Document; d != nil {
		row("edxml_id", "%s", d.EdXMLID)
		row("from", "%s %s", d.From, d.FromName)
		to := make([]string, len(d.To))
		for i, u := range d.To {
			to[i] = string(u)
		}
		row("to", "%s", strings.Join(to, ", "))
		row("number", "%s / %s", d.Number, d.Notation)
		row("type", "%s %s", d.Type, d.TypeName)
		row("promulgated", "%s %s", d.PromulgatedAt, d.PromulgatedPlace)
		row("subject", "%s", d.Subject)
		row("signer", "%s %s %s", d.Signer.Competence, d.Signer.Position, d.Signer.FullName)
		if d.DueDate != "" {
			row("due", "%s", d.DueDate)
		}
		row("urgency", "%d", d.Urgency)
		row("business", "%d", d.BusinessType)
		for _, rf := range edxml.ResponseFors(d) {
			row("answers", "%s", rf.DocumentID)
		}
		if d.InReplyTo != "" {
			row("in_reply_to", "%s", d.InReplyTo)
		}
		row("kept", "%d edXML elements without a document.json field (edxml_extra)", len(d.EdXMLExtra))
		for _, a := range r.Attachments {
			zipped := ""
			if a.Zipped {
				zipped = ", zipped by the sender"
			}
			row("attachment", "%d %s: %s, %d bytes, sha256 %s (declared %s%s)", a.Index, a.File, a.Detected, a.Size, a.SHA256, orDash(a.ContentType), zipped)
		}
	}
	if s := r.Status; s != nil {
		row("from", "%s %s", s.From.ID, s.From.Name)
		row("about", "%s", s.ResponseFor.DocumentID)
		row("code", "%s %s (%s)", s.Code, s.Code.Vietnamese(), s.Code.English())
		if !s.Time.IsZero() {
			row("time", "%s", s.Time.Format(time.RFC3339))
		}
		if s.Description != "" {
			row("description", "%s", s.Description)
		}
		if s.Staff != (edxml.Staff{}) {
			row("officer", "%s", strings.Join(nonEmpty(s.Staff.Department, s.Staff.Name, s.Staff.Email, s.Staff.Mobile), ", "))
		}
		row("kept", "%d edXML elements without a field", len(s.Extra))
	}
	for _, x := range r.Warnings {
		row("warning", "%s", x)
	}
	for _, p := range r.Problems {
		row("problem", "%s: %s", p.Field, p.Message)
	}
	switch {
	case r.Error != nil:
		row("refused", "%s: %s", r.Error.Code, r.Error.Message)
		row("result", "REFUSED")
	case len(r.Problems) > 0:
		row("result", "READ, NOT VALID FOR EDX")
	default:
		row("result", "OK")
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func edxmlConvert(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "edxml convert", `FILE.edxml -o DIR [--id ULID]
       edx edxml convert DIR -o FILE.edxml

The first form reads a document packet into DIR (new or empty): DIR/document.json
and DIR/files/<name> for each attachment (an attachment the sender zipped is
kept as sent, as <name>.zip). Elements without a document.json field are kept
in its edxml_extra, so the second form writes the packet back: DIR/document.json
and every file in DIR/files, in the national SDK's shape. Problems that would
keep edx from accepting the document are printed, not fatal.`)
	out := fs.String("o", "", "output directory (from a packet) or packet file (from a directory)")
	idFlag := fs.String("id", "", "the document's edx id (a ULID); a new one when empty (from a packet)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 || *out == "" {
		fs.Usage()
		return exitUsage
	}
	in := fs.Arg(0)
	fi, err := os.Stat(in)
	if err != nil {
		return fail(e, "%v", err)
	}
	if fi.IsDir() {
		if *idFlag != "" {
			return fail(e, "--id applies to a packet read into a directory")
		}
		return convertDir(e, in, *out)
	}
	id := document.NewID(time.Now())
	if *idFlag != "" {
		if id, err = document.ParseID(*idFlag); err != nil {
			return fail(e, "--id: %v", err)
		}
	}
	return convertPacket(e, in, *out, id)
}

func convertPacket(e *env, in, dir string, id document.ID) int {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fail(e, "%s is not empty", dir)
	}
	f, err := os.Open(in)
	if err != nil {
		return fail(e, "%v", err)
	}
	defer f.Close()
	p, err := edxml.ParseToDir(f, dir, edxml.Options{ID: id})
	if err != nil {
		var pe *edxml.Error
		if errors.As(err, &pe) {
			if errors.Is(err, edxml.ErrStatusPacket) {
				fmt.Fprintf(e.stderr, "edx: %s is a status packet, not a document: edx edxml inspect shows it\n", in)
				return exitUsage
			}
			fmt.Fprintf(e.stderr, "edx: %s: %s (%s)\n", in, pe.Error(), pe.Code)
			return exitInvalid
		}
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "%s: document %s, %d attachments, %d edXML elements kept in edxml_extra\n",
		filepath.Join(dir, edxml.MetadataFile), p.Document.ID, len(p.Attachments), len(p.Document.EdXMLExtra))
	for _, a := range p.Attachments {
		fmt.Fprintf(e.stdout, "%s (%s, %d bytes)\n", filepath.Join(dir, edxml.FilesDir, a.File), a.Detected, a.Size)
	}
	for _, w := range p.Warnings {
		fmt.Fprintf(e.stderr, "warning: %s\n", w)
	}
	for _, q := range problems(p.Document.Validate()) {
		fmt.Fprintf(e.stderr, "problem: %s: %s\n", q.Field, q.Message)
	}
	return exitOK
}

func convertDir(e *env, dir, out string) int {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".edxml-*.tmp")
	if err != nil {
		return fail(e, "%v", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	d, err := edxml.WriteDir(cw, dir)
	if err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	if err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "%s: %d bytes, sha256 %s\n", out, cw.n, hex.EncodeToString(h.Sum(nil)))
	for _, q := range problems(d.Validate()) {
		fmt.Fprintf(e.stderr, "problem: %s: %s\n", q.Field, q.Message)
	}
	return exitOK
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
