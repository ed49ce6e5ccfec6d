package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"crypto/sha256"

	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

func init() {
	register(command{"template", "print an example document.json to start from", cmdTemplate})
	register(command{"pack", "sign metadata and files into a container", cmdPack})
	register(command{"verify", "verify a container (and a hub receipt) offline; or, by id, an archived document on the hub", cmdVerify})
	register(command{"inspect", "show a container's metadata and files without verifying", cmdInspect})
}

func cmdTemplate(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "template", "[--from UNIT] > doc.json")
	from := fs.String("from", "", "sender unit id to fill in")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	d := document.Template(time.Now())
	if *from != "" {
		u, err := document.ParseUnitID(*from)
		if err != nil {
			return fail(e, "--from: %v", err)
		}
		d.From = u
		to := d.To[:0]
		for _, r := range d.To {
			if r != u {
				to = append(to, r)
			}
		}
		if len(to) == 0 {
			to = append(to, "000.00.00.H29")
		}
		d.To = to
	}
	b, _ := d.Marshal()
	e.stdout.Write(b)
	return exitOK
}

func cmdPack(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "pack", "--meta doc.json --key KEY.pem --cert CERT.pem -o out.asice FILE...")
	metaPath := fs.String("meta", "", "document.json (metadata); a missing id is filled with a new one (printed), a missing from with the certificate's unit")
	keyPath := fs.String("key", "", "the unit's private key (PEM)")
	certPath := fs.String("cert", "", "the unit's certificate and chain (PEM)")
	out := fs.String("o", "", "output container (.asice)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *metaPath == "" || *keyPath == "" || *certPath == "" || *out == "" || fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	s, err := pki.LoadSigner(*keyPath, *certPath)
	if err != nil {
		return fail(e, "%v", err)
	}
	b, err := buildContainer(*metaPath, s, fs.Args())
	if err != nil {
		return fail(e, "%v", err)
	}
	if b.filled {
		fmt.Fprintf(e.stdout, "document id %s (filled in: %s has none)\n", b.doc.ID, *metaPath)
	}
	if err := os.WriteFile(*out, b.data, 0o644); err != nil {
		return fail(e, "%v", err)
	}
	sum := sha256.Sum256(b.data)
	fmt.Fprintf(e.stdout, "%s: %d bytes, %d files, sha256 %s\n", *out, len(b.data), len(b.files), hex.EncodeToString(sum[:]))
	return exitOK
}

// built is a container signed from document.json and payload files.
type built struct {
	doc    *document.Document
	filled bool // the id was missing and is new
	files  []container.File
	data   []byte
}

// buildContainer reads document.json (filling a missing id and sender, see
// readMeta) and the payload files and signs them into a container with s.
func buildContainer(metaPath string, s *pki.Signer, paths []string) (*built, error) {
	unit, err := pki.UnitOf(s.Cert())
	if err != nil {
		return nil, err
	}
	meta, doc, filled, err := readMeta(metaPath, unit)
	if err != nil {
		return nil, err
	}
	files, err := readFiles(paths)
	if err != nil {
		return nil, err
	}
	data, err := container.Build(meta, files, s)
	if err != nil {
		return nil, err
	}
	return &built{doc: doc, filled: filled, files: files, data: data}, nil
}

// readMeta reads document.json and fills what the sender may leave out: a
// new id (the hub refuses a template's id reused for another document) and
// the sender, the certificate's unit. filled reports a new id.
func readMeta(path string, unit document.UnitID) ([]byte, *document.Document, bool, error) {
	meta, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, false, err
	}
	d, err := document.Parse(meta)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%s: %w", path, err)
	}
	filled, changed := false, false
	if d.ID == "" {
		d.ID, filled, changed = document.NewID(time.Now()), true, true
	}
	if d.From == "" {
		d.From, changed = unit, true
	}
	if changed {
		if meta, err = d.Marshal(); err != nil {
			return nil, nil, false, fmt.Errorf("%s: %w", path, err)
		}
	}
	return meta, d, filled, nil
}

func readFiles(paths []string) ([]container.File, error) {
	files := make([]container.File, 0, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		files = append(files, container.File{Name: filepath.Base(p), Data: b})
	}
	return files, nil
}

// verifyResult is the JSON form of edx verify.
type verifyResult struct {
	Valid     bool                     `json:"valid"`
	Container *container.Report        `json:"container"`
	Receipt   *container.ReceiptReport `json:"receipt,omitempty"`
}

func cmdVerify(ctx context.Context, e *env, args []string) int {
	if code, ok := verifyByID(ctx, e, args); ok {
		return code
	}
	fs := flags(e, "verify", "--trust roots.pem [--crl F] [--receipt R.p7s [--at accepted]] [--at now|RFC3339] [--json] FILE.asice\n       edx verify ID [--at now|accepted|RFC3339] [--json] [--hub URL --token-file F | --data DIR]   (the hub re-verifies the archived document)")
	trustPath := fs.String("trust", "", "PEM bundle of trust roots (roots.pem)")
	var crls multi
	fs.Var(&crls, "crl", "CRL file (PEM or DER); repeatable")
	receiptPath := fs.String("receipt", "", "the hub's receipt (receipt.p7s) to check against the container")
	at := fs.String("at", "", "check the signer's chain at: now (default), accepted (the acceptance time in --receipt, once the receipt verifies) or an RFC 3339 time, e.g. a trusted timestamp")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *trustPath == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	accepted := *at == "accepted"
	if accepted && *receiptPath == "" {
		return fail(e, "--at accepted needs --receipt: the acceptance time is in the hub's receipt (edx get saves it as ID.receipt.p7s)")
	}
	opts, code := trustOptions(e, *trustPath, crls, *at)
	if code >= 0 {
		return code
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail(e, "%v", err)
	}
	var res verifyResult
	if *receiptPath != "" {
		rb, err := os.ReadFile(*receiptPath)
		if err != nil {
			return fail(e, "%v", err)
		}
		// The receipt is checked as of its own acceptance time (the hub's
		// chain then), against the verifier's clock; --at moves the
		// container's check only.
		sum := sha256.Sum256(data)
		res.Receipt = container.VerifyReceipt(rb, hex.EncodeToString(sum[:]), container.Options{Trust: opts.Trust, At: time.Now()})
		if accepted {
			// Its acceptance time is then the time the container's chain
			// is checked at (as the hub's verify --at accepted does).
			if !res.Receipt.Valid || res.Receipt.Receipt == nil {
				fmt.Fprintf(e.stderr, "edx: --at accepted: the receipt %s does not verify, so its acceptance time cannot be used:\n", *receiptPath)
				for _, x := range res.Receipt.Reasons {
					fmt.Fprintf(e.stderr, "  receipt: %s: %s\n", x.Code, x.Message)
				}
				return exitInvalid
			}
			opts.At = res.Receipt.Receipt.AcceptedAt
		}
	}
	_, rep := container.VerifyBytes(data, container.DefaultLimits, opts)
	res.Valid, res.Container = rep.Valid, rep
	if res.Receipt != nil {
		res.Valid = res.Valid && res.Receipt.Valid
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		printReport(e.stdout, fs.Arg(0), res)
	}
	if !res.Valid {
		return exitInvalid
	}
	return exitOK
}

func trustOptions(e *env, trustPath string, crls []string, at string) (container.Options, int) {
	trust, err := pki.LoadTrust(trustPath)
	if err != nil {
		return container.Options{}, fail(e, "%v", err)
	}
	for _, c := range crls {
		if err := trust.LoadCRL(c); err != nil {
			return container.Options{}, fail(e, "%v", err)
		}
	}
	opts := container.Options{Trust: trust, At: time.Now()}
	switch at {
	case "", "now", "accepted": // accepted: the caller reads the receipt
	default:
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return container.Options{}, fail(e, "--at %q: want now, accepted (with --receipt) or an RFC 3339 time such as 2026-11-25T09:00:00+07:00", at)
		}
		opts.At = t
	}
	return opts, -1
}

func printReport(w io.Writer, name string, res verifyResult) {
	r := res.Container
	fmt.Fprintf(w, "container   %s\n", name)
	fmt.Fprintf(w, "sha256      %s (%d bytes)\n", r.ContainerSHA256, r.Size)
	if r.DocumentID != "" {
		fmt.Fprintf(w, "document    %s\n", r.DocumentID)
		fmt.Fprintf(w, "subject     %s\n", r.Subject)
		to := make([]string, len(r.To))
		for i, u := range r.To {
			to[i] = string(u)
		}
		fmt.Fprintf(w, "from        %s\nto          %s\n", r.From, strings.Join(to, ", "))
	}
	if s := r.Signature; s != nil && s.SignerSubject != "" {
		fmt.Fprintf(w, "signer      %s\n", s.SignerSubject)
		fmt.Fprintf(w, "            serial %s, valid %s to %s\n", s.SignerSerial, showTime(s.SignerNotBefore), showTime(s.SignerNotAfter))
		if s.SigningTime != nil {
			fmt.Fprintf(w, "signed at   %s (claimed by the signer)\n", showTime(*s.SigningTime))
		}
		fmt.Fprintf(w, "checked at  %s\n", showTime(s.CheckedAt))
		for i, c := range s.Chain {
			fmt.Fprintf(w, "chain[%d]    %s\n", i, c)
		}
	}
	for _, f := range r.Files {
		mark := "ok "
		if !f.OK {
			mark = "BAD"
		}
		fmt.Fprintf(w, "file  %s  %s  %s (%d bytes, %s)\n", mark, f.SHA256, f.Name, f.Size, f.MediaType)
	}
	if rr := res.Receipt; rr != nil {
		if rr.Receipt != nil {
			fmt.Fprintf(w, "receipt     accepted %s, archived at %s\n", showTime(rr.Receipt.AcceptedAt), rr.Receipt.ArchiveKey)
		}
		for _, x := range rr.Reasons {
			fmt.Fprintf(w, "  receipt: %s: %s\n", x.Code, x.Message)
		}
	}
	for _, x := range r.Reasons {
		fmt.Fprintf(w, "  %s: %s\n", x.Code, x.Message)
	}
	if res.Valid {
		fmt.Fprintln(w, "result      VALID")
	} else {
		fmt.Fprintln(w, "result      INVALID")
	}
}

func cmdInspect(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "inspect", "FILE.asice")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail(e, "%v", err)
	}
	c, err := container.Open(data, container.DefaultLimits)
	if err != nil {
		return fail(e, "%s: %v", fs.Arg(0), err)
	}
	fmt.Fprintf(e.stdout, "%s\n", c.MetaRaw)
	for _, f := range c.Entries {
		fmt.Fprintf(e.stdout, "%-50s %10d  %s\n", f.Name, f.Size, f.MediaType)
	}
	fmt.Fprintln(e.stdout, "(not verified: use edx verify)")
	return exitOK
}
