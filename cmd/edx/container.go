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
	metaPath := fs.String("meta", "", "document.json (metadata)")
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
	_, files, data, err := buildContainer(*metaPath, s, fs.Args())
	if err != nil {
		return fail(e, "%v", err)
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return fail(e, "%v", err)
	}
	sum := sha256.Sum256(data)
	fmt.Fprintf(e.stdout, "%s: %d bytes, %d files, sha256 %s\n", *out, len(data), len(files), hex.EncodeToString(sum[:]))
	return exitOK
}

// buildContainer reads document.json and the payload files and signs them
// into a container with s; it returns the metadata as read.
func buildContainer(metaPath string, s *pki.Signer, paths []string) ([]byte, []container.File, []byte, error) {
	meta, err := os.ReadFile(metaPath)
	if err != nil {
		return nil, nil, nil, err
	}
	files, err := readFiles(paths)
	if err != nil {
		return nil, nil, nil, err
	}
	data, err := container.Build(meta, files, s)
	if err != nil {
		return nil, nil, nil, err
	}
	return meta, files, data, nil
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
	fs := flags(e, "verify", "--trust roots.pem [--crl F] [--receipt R.p7s] [--at RFC3339] [--json] FILE.asice\n       edx verify ID [--at now|accepted|RFC3339] [--json] [--hub URL --token-file F | --data DIR]   (the hub re-verifies the archived document)")
	trustPath := fs.String("trust", "", "PEM bundle of trust roots (roots.pem)")
	var crls multi
	fs.Var(&crls, "crl", "CRL file (PEM or DER); repeatable")
	receiptPath := fs.String("receipt", "", "the hub's receipt (receipt.p7s) to check against the container")
	at := fs.String("at", "", "check the chain at this time (RFC 3339) instead of now, e.g. a trusted timestamp")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *trustPath == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	opts, code := trustOptions(e, *trustPath, crls, *at)
	if code >= 0 {
		return code
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail(e, "%v", err)
	}
	_, rep := container.VerifyBytes(data, container.DefaultLimits, opts)
	res := verifyResult{Valid: rep.Valid, Container: rep}
	if *receiptPath != "" {
		rb, err := os.ReadFile(*receiptPath)
		if err != nil {
			return fail(e, "%v", err)
		}
		// The receipt is checked as of its own acceptance time; --at
		// moves the container's check only.
		res.Receipt = container.VerifyReceipt(rb, rep.ContainerSHA256, container.Options{Trust: opts.Trust, At: time.Now()})
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
	if at != "" {
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return container.Options{}, fail(e, "--at: %v", err)
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
		fmt.Fprintf(w, "            serial %s, valid %s to %s\n", s.SignerSerial, s.SignerNotBefore.Format(time.DateOnly), s.SignerNotAfter.Format(time.DateOnly))
		if s.SigningTime != nil {
			fmt.Fprintf(w, "signed at   %s (claimed by the signer)\n", s.SigningTime.Format(time.RFC3339))
		}
		fmt.Fprintf(w, "checked at  %s\n", s.CheckedAt.Format(time.RFC3339))
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
			fmt.Fprintf(w, "receipt     accepted %s, archived at %s\n", rr.Receipt.AcceptedAt.Format(time.RFC3339), rr.Receipt.ArchiveKey)
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
		fmt.Fprintf(e.stdout, "%-50s %10d  %s\n", f.Name, len(f.Data), f.MediaType)
	}
	fmt.Fprintln(e.stdout, "(not verified: use edx verify)")
	return exitOK
}
