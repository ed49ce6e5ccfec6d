package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/tlog"
	"github.com/edxhub/edx/pkg/audit"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
)

func init() {
	register(command{"proof", "a document's entry in the hub's transparency log, its inclusion proof and trusted time, checked", cmdProof})
	register(command{"audit bundle", "download a document's audit bundle: container, receipt, log proof, time-stamps, CRLs, statuses", auditBundle})
	register(command{"audit verify", "check an audit bundle offline, at the time-stamped time, and say what each piece proves", auditVerify})
	register(command{"audit archive", "compare the archive with the transparency logs, both ways: report what either lacks", auditArchive})
}

// readKeys reads note verifier keys: each argument is a key itself
// (origin+hash+key) or a file holding one or more, one a line.
func readKeys(args []string) ([]note.Verifier, error) {
	var out []note.Verifier
	for _, a := range args {
		lines := []string{a}
		if !strings.Contains(a, "+") || fileExists(a) {
			b, err := os.ReadFile(a)
			if err != nil {
				return nil, err
			}
			lines = strings.Split(string(b), "\n")
		}
		for _, l := range lines {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			v, err := note.NewVerifier(l)
			if err != nil {
				return nil, fmt.Errorf("key %q: %w", l, err)
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// hubLog asks the hub for its log's description.
func hubLog(ctx context.Context, c *client) (*struct {
	Origin string `json:"origin"`
	VKey   string `json:"vkey"`
	URL    string `json:"url"`
}, error) {
	var li struct {
		Origin string `json:"origin"`
		VKey   string `json:"vkey"`
		URL    string `json:"url"`
	}
	if err := c.do(ctx, "GET", "/api/v1/log", nil, &li); err != nil {
		return nil, err
	}
	return &li, nil
}

// cmdProof handles `edx proof ID`: the hub's proof of the document's
// acceptance entry, checked here against the log's key.
func cmdProof(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "proof", "ID [--log-key K] [--tsa-roots roots.pem] [--json] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	var keys multi
	fs.Var(&keys, "log-key", "the log's public key, or a file of keys (default: the key the hub gives: it checks the proof, not the hub)")
	tsaRoots := fs.String("tsa-roots", "", "the TSA's trust roots (PEM) to check the time-stamp with (default with --data: the hub's tsa.roots)")
	asJSON := fs.Bool("json", false, "print the proof as JSON")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	id, err := document.ParseID(fs.Arg(0))
	if err != nil {
		return fail(e, "%v", err)
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var dp service.DocumentProof
	if err := c.do(ctx, "GET", "/api/v1/documents/"+string(id)+"/proof", nil, &dp); err != nil {
		return fail(e, "%v", err)
	}
	lks, err := readKeys(keys)
	if err != nil {
		return fail(e, "--log-key: %v", err)
	}
	keyFrom := "--log-key"
	if len(lks) == 0 {
		li, err := hubLog(ctx, c)
		if err != nil {
			return fail(e, "%v", err)
		}
		if lks, err = readKeys([]string{li.VKey}); err != nil {
			return fail(e, "%v", err)
		}
		keyFrom = "the hub's own word (give --log-key to check it against the key you hold)"
	}
	var lk note.Verifier
	for _, k := range lks {
		if k.Name() == dp.Origin {
			lk = k
		}
	}
	if lk == nil {
		return fail(e, "no key for the log %s (--log-key)", dp.Origin)
	}
	o := evidence.ProofOptions{Origin: dp.Origin, LogKey: lk}
	rootsPath := *tsaRoots
	if rootsPath == "" && hf.url == "" {
		var info struct {
			TrustRoots string `json:"trust_roots"`
			Log        *struct {
				TSARoots string `json:"tsa_roots"`
			} `json:"log"`
		}
		if b, err := os.ReadFile(filepath.Join(hf.data, "hub.json")); err == nil && json.Unmarshal(b, &info) == nil {
			rootsPath = info.TrustRoots
			if info.Log != nil && info.Log.TSARoots != "" {
				rootsPath = info.Log.TSARoots
			}
		}
	}
	if rootsPath != "" {
		b, err := os.ReadFile(rootsPath)
		if err != nil {
			return fail(e, "--tsa-roots: %v", err)
		}
		o.TSARoots = x509.NewCertPool()
		if !o.TSARoots.AppendCertsFromPEM(b) {
			return fail(e, "--tsa-roots %s: no certificate", rootsPath)
		}
	}
	if len(dp.Proof.Timestamp) > 0 && o.TSARoots == nil {
		return fail(e, "the proof carries a time-stamp: give the TSA's roots (--tsa-roots) to check it")
	}
	v, err := dp.Proof.Verify(o)
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(dp)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "edx: proof of %s: INVALID: %v\n", id, err)
		return exitInvalid
	}
	if *asJSON {
		return exitOK
	}
	en := v.Entry
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "document\t%s\n", id)
	fmt.Fprintf(tw, "log\t%s (key %08x, from %s)\n", dp.Origin, lk.KeyHash(), keyFrom)
	fmt.Fprintf(tw, "entry\t%d: %s %s by %s at %s\n", dp.Proof.Index, en.Kind, en.Container, en.Sender, showTime(en.Time))
	fmt.Fprintf(tw, "in checkpoint\t%d entries, signed by the log key\n", v.Checkpoint.Size)
	switch {
	case v.Time.IsZero():
		fmt.Fprintf(tw, "time-stamp\tnot yet: the hub time-stamps its log at intervals; ask again shortly\n")
	case !v.After.IsZero():
		fmt.Fprintf(tw, "time-stamp\tlogged after %s and before %s (TSA)\n", showTime(v.After), showTime(v.Time))
	default:
		fmt.Fprintf(tw, "time-stamp\tlogged before %s (TSA; the log's first time-stamped checkpoint)\n", showTime(v.Time))
	}
	if n := strings.Count(string(dp.Cosigned), "\n— ") - strings.Count(string(dp.Proof.Checkpoint), "\n— "); n > 0 {
		fmt.Fprintf(tw, "cosigned\tby %d witnesses (not checked here: edx audit verify --witness)\n", n)
	}
	tw.Flush()
	fmt.Fprintln(e.stdout, "VALID")
	return exitOK
}

func auditBundle(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "audit bundle", "ID -o FILE [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	out := fs.String("o", "", "the bundle file to write (ZIP)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 || *out == "" {
		fs.Usage()
		return exitUsage
	}
	id, err := document.ParseID(fs.Arg(0))
	if err != nil {
		return fail(e, "%v", err)
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var b []byte
	if err := c.do(ctx, "GET", "/api/v1/documents/"+string(id)+"/bundle", nil, &b); err != nil {
		return fail(e, "%v", err)
	}
	if _, err := audit.Parse(b); err != nil {
		return fail(e, "the hub's bundle: %v", err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "%s: audit bundle of %s (%d bytes); check it with edx audit verify %s --trust ROOTS --log-key KEY\n", *out, id, len(b), *out)
	return exitOK
}

func auditVerify(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "audit verify", "FILE --trust roots.pem --log-key K [--tsa-roots roots.pem] [--crl F]... [--witness KEYS --quorum N] [--now TIME] [--json]")
	trust := fs.String("trust", "", "the trust roots of the units' and the hub's certificates (PEM)")
	tsaRoots := fs.String("tsa-roots", "", "the TSA's trust roots (PEM; default --trust)")
	var keys, wkeys, crls multi
	fs.Var(&keys, "log-key", "the hub log's public key, or a file of keys (repeatable)")
	fs.Var(&wkeys, "witness", "a witness's public key, or a file of keys (repeatable)")
	fs.Var(&crls, "crl", "a CRL to check revocation with besides the bundle's (repeatable): one dated after the time-stamp changes nothing")
	quorum := fs.Int("quorum", 0, "how many of the witnesses must have cosigned (default: all given)")
	nowFlag := fs.String("now", "", "the verifier's clock (RFC 3339; default now): set it years ahead, the answer is the same")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 || *trust == "" || len(keys) == 0 {
		fs.Usage()
		return exitUsage
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail(e, "%v", err)
	}
	b, err := audit.Parse(data)
	if err != nil {
		return fail(e, "%v", err)
	}
	o := audit.Options{}
	if o.Roots, err = os.ReadFile(*trust); err != nil {
		return fail(e, "--trust: %v", err)
	}
	if *tsaRoots != "" {
		if o.TSARoots, err = os.ReadFile(*tsaRoots); err != nil {
			return fail(e, "--tsa-roots: %v", err)
		}
	}
	for _, c := range crls {
		der, err := os.ReadFile(c)
		if err != nil {
			return fail(e, "--crl: %v", err)
		}
		o.CRLs = append(o.CRLs, der)
	}
	if o.LogKeys, err = readKeys(keys); err != nil {
		return fail(e, "--log-key: %v", err)
	}
	if o.Witnesses, err = readKeys(wkeys); err != nil {
		return fail(e, "--witness: %v", err)
	}
	o.Quorum = *quorum
	if o.Quorum == 0 {
		o.Quorum = len(o.Witnesses)
	}
	if *nowFlag != "" {
		if o.Now, err = time.Parse(time.RFC3339, *nowFlag); err != nil {
			return fail(e, "--now: %v", err)
		}
	}
	r, err := audit.Verify(b, o)
	if err != nil {
		return fail(e, "%v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		printAudit(e.stdout, r)
	}
	if !r.Valid {
		return exitInvalid
	}
	return exitOK
}

func printAudit(w io.Writer, r *audit.Report) {
	fmt.Fprintf(w, "document    %s\n", r.Document)
	fmt.Fprintf(w, "log entry   %s #%d (tree of %d)\n", r.Origin, r.Index, r.TreeSize)
	if !r.Accepted.IsZero() {
		when := "before " + showTime(r.Before)
		if !r.After.IsZero() {
			when = "after " + showTime(r.After) + ", " + when
		}
		fmt.Fprintf(w, "accepted    %s (hub's clock; TSA: %s)\n", showTime(r.Accepted), when)
	}
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		text := c.Proves
		if text == "" || !c.OK {
			text = c.Detail
		} else if c.Detail != "" {
			text += " (" + c.Detail + ")"
		}
		fmt.Fprintf(w, "%s %-10s %s\n", mark, c.Name, text)
	}
	if r.Valid {
		fmt.Fprintln(w, "VALID: the bundle proves the document's acceptance as of its time-stamp, without the hub")
	} else {
		fmt.Fprintln(w, "INVALID")
	}
}

// auditArchive handles `edx audit archive`: the archive listed and the logs
// read (each log from the hub that keeps it, or from its mirror in the
// archive), compared both ways.
func auditArchive(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "audit archive", "--log-key K... [--log URL]... [--data DIR | --s3-endpoint HOST:PORT --bucket B --access-key-file F --secret-key-file F [--s3-ssl]] [--json]")
	data := fs.String("data", "edx-data", "an embedded hub's data directory: its archive (hub.json, s3/secret.key), its log URL and key (tlog.pub)")
	var keys, logs multi
	fs.Var(&keys, "log-key", "a hub log's public key, or a file of keys (repeatable; default with --data: DATA/tlog.pub, the hub's own word)")
	fs.Var(&logs, "log", "a hub's log URL (http://hub/log/; repeatable): read it live; a log without one is read from its mirror in the archive")
	var ac archive.Config
	fs.StringVar(&ac.Endpoint, "s3-endpoint", "", "the archive's S3 endpoint (host:port)")
	fs.StringVar(&ac.Bucket, "bucket", "", "the archive's bucket (default edx-archive)")
	fs.StringVar(&ac.AccessKeyFile, "access-key-file", "", "file holding the S3 access key (read-only is enough)")
	fs.StringVar(&ac.SecretKeyFile, "secret-key-file", "", "file holding the S3 secret key")
	fs.BoolVar(&ac.UseSSL, "s3-ssl", false, "https to S3")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if ac.Endpoint == "" {
		var info struct {
			S3Endpoint string `json:"s3_endpoint"`
			Bucket     string `json:"bucket"`
			Log        *struct {
				URL string `json:"url"`
			} `json:"log"`
		}
		b, err := os.ReadFile(filepath.Join(*data, "hub.json"))
		if err != nil {
			return fail(e, "no --s3-endpoint and %v", err)
		}
		if err := json.Unmarshal(b, &info); err != nil {
			return fail(e, "hub.json: %v", err)
		}
		secret, err := os.ReadFile(filepath.Join(*data, "s3", "secret.key"))
		if err != nil {
			return fail(e, "the embedded archive's secret: %v (for another S3, give --s3-endpoint and its keys)", err)
		}
		ac.Endpoint, ac.Bucket, ac.AccessKey, ac.SecretKey = info.S3Endpoint, info.Bucket, "edx-hub", strings.TrimSpace(string(secret))
		if len(logs) == 0 && info.Log != nil {
			logs = append(logs, info.Log.URL)
		}
		if len(keys) == 0 {
			keys = append(keys, filepath.Join(*data, "tlog.pub"))
		}
	}
	if len(keys) == 0 {
		return fail(e, "--log-key: the key of every hub log to read")
	}
	lks, err := readKeys(keys)
	if err != nil {
		return fail(e, "--log-key: %v", err)
	}
	a, err := archive.New(ctx, ac, nil)
	if err != nil {
		return fail(e, "archive: %v", err)
	}
	// Which log each URL serves: the origin line of its checkpoint.
	live := map[string]*evidence.Client{}
	for _, u := range logs {
		cl, err := evidence.NewClient(u, nil)
		if err != nil {
			return fail(e, "--log: %v", err)
		}
		raw, err := cl.ReadCheckpoint(ctx)
		if err != nil {
			return fail(e, "--log %s: %v", u, err)
		}
		origin, _, _ := strings.Cut(string(raw), "\n")
		live[origin] = cl
	}
	var sources []tlog.Source
	for _, k := range lks {
		if cl, ok := live[k.Name()]; ok {
			sources = append(sources, tlog.HTTPSource(cl, "live", k))
			continue
		}
		sources = append(sources, tlog.MirrorSource(tlog.OpenMirror(a, projection.LogPrefix(k.Name())), k))
	}
	mirrors, err := tlog.Mirrors(ctx, a, projection.LogsPrefix)
	if err != nil {
		return fail(e, "%v", err)
	}
	for _, m := range mirrors {
		known := false
		for _, k := range lks {
			known = known || projection.LogPrefix(k.Name()) == m
		}
		if !known {
			fmt.Fprintf(e.stderr, "edx: the archive holds the log %s, not read: give its key (its vkey is beside it)\n", m)
		}
	}
	r, err := tlog.CompareArchive(ctx, a, sources)
	if err != nil {
		return fail(e, "%v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		bw := bufio.NewWriter(e.stdout)
		for _, l := range r.Logs {
			fmt.Fprintf(bw, "log %s (%s): %d entries, %d acceptances\n", l.Origin, l.Where, l.Size, l.Entries[evidence.Accepted])
		}
		fmt.Fprintf(bw, "archive: %d containers; logs: %d documents accepted (%d logged twice), %d archived before the log\n",
			r.Archived, r.Accepted, r.Duplicates, r.Unlogged)
		for _, f := range r.Pending {
			fmt.Fprintf(bw, "pending  %s %s: %s\n", f.Doc, f.What, f.Detail)
		}
		for _, f := range r.Missing {
			fmt.Fprintf(bw, "MISSING  %s %s: %s\n", f.Doc, f.What, f.Detail)
		}
		if len(r.Missing) == 0 {
			fmt.Fprintln(bw, "the archive and the logs agree")
		}
		bw.Flush()
	}
	if len(r.Missing) > 0 {
		return exitInvalid
	}
	return exitOK
}
