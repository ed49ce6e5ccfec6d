package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/witness"
)

func init() {
	register(command{"unit add", "register a unit with the hub: certificate, NATS credentials", unitAdd})
	register(command{"unit list", "list the hub's units: state, certificate, credentials", unitList})
	register(command{"unit disable", "disable a unit: revoke its NATS credentials, refuse its documents", unitDisable})
	register(command{"unit enable", "enable a disabled unit, with new NATS credentials", unitEnable})
	register(command{"unit rotate", "new NATS credentials for a unit (the old ones revoked); --cert: a new key and certificate too", unitRotate})
}

// unitArg takes the unit from --unit or the one positional argument.
func unitArg(e *env, fs *flag.FlagSet, flagValue string) (document.UnitID, int) {
	v := flagValue
	switch {
	case v == "" && fs.NArg() == 1:
		v = fs.Arg(0)
	case fs.NArg() > 1 || (v != "" && fs.NArg() > 0):
		return "", fail(e, "give one unit")
	}
	u, err := document.ParseUnitID(v)
	if err != nil {
		return "", fail(e, "unit: %v", err)
	}
	return u, -1
}

// writeBundle writes a unit's files (the non-empty ones) to dir.
func writeBundle(dir string, b *service.UnitBundle) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := []struct {
		name, data string
		mode       os.FileMode
	}{
		{"cert.pem", b.CertPEM, 0o644},
		{"roots.pem", b.RootsPEM, 0o644},
		{"nats.creds", b.Creds, 0o600},
		{"key.pem", b.KeyPEM, 0o600},
		{logKeyFile, logKeys(b), 0o644},
	}
	var wrote []string
	for _, f := range files {
		if f.data == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.data), f.mode); err != nil {
			return nil, err
		}
		wrote = append(wrote, f.name)
	}
	return wrote, nil
}

// logKeys is log.vkey: the keys of every hub's log, one a line (this hub's
// first), or this hub's alone from a hub that names no others.
func logKeys(b *service.UnitBundle) string {
	if len(b.LogKeys) == 0 {
		return lineOrEmpty(b.LogKey)
	}
	var out strings.Builder
	for _, k := range b.LogKeys {
		out.WriteString(lineOrEmpty(k))
	}
	return out.String()
}

func lineOrEmpty(s string) string {
	if s == "" {
		return ""
	}
	return strings.TrimSpace(s) + "\n"
}

// ensureWitnessKey reads the unit's witness key in dir (witness.key), or
// makes one there (0600), and returns its public half: the key the unit's
// agent cosigns the hub's log with stays with the unit; the hub only ever
// sees the public half.
func ensureWitnessKey(dir string, u document.UnitID) (vkey string, made bool, err error) {
	p := filepath.Join(dir, witnessKeyFile)
	if b, err := os.ReadFile(p); err == nil {
		vkey, err := witness.VerifierKeyOf(string(b))
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", p, err)
		}
		return vkey, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	skey, vkey, err := witness.NewKey("edx-witness/" + string(u))
	if err != nil {
		return "", false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, err
	}
	if err := writeNew(p, []byte(skey+"\n"), 0o600); err != nil {
		return "", false, err
	}
	return vkey, true, nil
}

// witnessKeyArg reads --witness-key: a verifier key, or a file holding one
// (or holding a witness signing key, whose public half is taken).
func witnessKeyArg(v string) (string, error) {
	if _, err := witness.NewVerifier(v); err == nil {
		return strings.TrimSpace(v), nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return "", fmt.Errorf("--witness-key: neither a witness key nor a readable file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if _, err := witness.NewVerifier(s); err == nil {
		return s, nil
	}
	if vkey, err := witness.VerifierKeyOf(s); err == nil {
		return vkey, nil
	}
	return "", fmt.Errorf("--witness-key: %s holds no witness key", v)
}

func credsLine(b *service.UnitBundle) string {
	if b.Unit.CredsExpire.IsZero() {
		return "NATS credentials do not expire"
	}
	return "NATS credentials expire " + b.Unit.CredsExpire.UTC().Format(time.RFC3339)
}

func unitDisable(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "unit disable", "ID [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	unit := fs.String("unit", "", "unit identifier (or give it as the argument)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	u, code := unitArg(e, fs, *unit)
	if code >= 0 {
		return code
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var v service.UnitView
	if err := c.do(ctx, "POST", "/api/v1/units/"+string(u)+"/disable", nil, &v); err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "unit %s (%s) disabled: its NATS credentials are revoked; documents from and to it are refused\n", u, v.Name)
	return exitOK
}

func unitEnable(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "unit enable", "ID [--out DIR] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	unit := fs.String("unit", "", "unit identifier (or give it as the argument)")
	out := fs.String("out", "", "where to write the unit's new credentials (default ./units/ID)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	u, code := unitArg(e, fs, *unit)
	if code >= 0 {
		return code
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var b service.UnitBundle
	if err := c.do(ctx, "POST", "/api/v1/units/"+string(u)+"/enable", nil, &b); err != nil {
		return fail(e, "%v", err)
	}
	return bundleWritten(e, u, "enabled", *out, &b)
}

func unitRotate(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "unit rotate", "ID [--cert | --cert-file CERT.pem] [--witness-key KEY|FILE] [--out DIR] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	unit := fs.String("unit", "", "unit identifier (or give it as the argument)")
	newCert := fs.Bool("cert", false, "a new key and certificate from the hub's development CA too")
	certFile := fs.String("cert-file", "", "the unit's new certificate (PEM, with chain) from the city's CA")
	out := fs.String("out", "", "where to write the unit's new files (default ./units/ID)")
	wkey := fs.String("witness-key", "", "the unit's new witness key: its public half (as the agent logs it), or a file holding it")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	u, code := unitArg(e, fs, *unit)
	if code >= 0 {
		return code
	}
	req := service.RotateRequest{NewCert: *newCert}
	if *wkey != "" {
		v, err := witnessKeyArg(*wkey)
		if err != nil {
			return fail(e, "%v", err)
		}
		req.WitnessKey = v
	}
	if *certFile != "" {
		b, err := os.ReadFile(*certFile)
		if err != nil {
			return fail(e, "%v", err)
		}
		req.CertPEM = string(b)
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var b service.UnitBundle
	if err := c.do(ctx, "POST", "/api/v1/units/"+string(u)+"/rotate", req, &b); err != nil {
		return fail(e, "%v", err)
	}
	return bundleWritten(e, u, "rotated", *out, &b)
}

func bundleWritten(e *env, u document.UnitID, what, out string, b *service.UnitBundle) int {
	dir := out
	if dir == "" {
		dir = filepath.Join("units", string(u))
	}
	wrote, err := writeBundle(dir, b)
	if err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "unit %s (%s) %s; certificate serial %s; %s\n", u, b.Unit.Name, what, b.Unit.CertSerial, credsLine(b))
	fmt.Fprintf(e.stdout, "  files in %s: %s; give them to the unit's agent (the old NATS credentials no longer connect)\n", dir, strings.Join(wrote, ", "))
	return exitOK
}

func unitAdd(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "unit add", "--unit ID --name NAME [--cert CERT.pem] [--out DIR] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	unit := fs.String("unit", "", "unit identifier, e.g. 000.01.00.H29")
	name := fs.String("name", "", "the unit's name")
	certPath := fs.String("cert", "", "the unit's own signing certificate (PEM, with chain); default: issued by the hub's development CA")
	out := fs.String("out", "", "where to write the unit's files (default ./units/ID)")
	listen := fs.String("agent-listen", "", "the API address in the agent's configuration (default: the first free 127.0.0.1 port from 8090)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	u, err := document.ParseUnitID(*unit)
	if err != nil {
		return fail(e, "--unit: %v", err)
	}
	if *name == "" {
		return fail(e, "--name is required")
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("units", string(u))
	}
	vkey, madeWitness, err := ensureWitnessKey(dir, u)
	if err != nil {
		return fail(e, "witness key: %v", err)
	}
	req := service.UnitRequest{ID: u, Name: *name, WitnessKey: vkey}
	if *certPath != "" {
		b, err := os.ReadFile(*certPath)
		if err != nil {
			return fail(e, "%v", err)
		}
		req.CertPEM = string(b)
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var b service.UnitBundle
	if err := c.do(ctx, "POST", "/api/v1/units", req, &b); err != nil {
		return fail(e, "%v", err)
	}
	if _, err := writeBundle(dir, &b); err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "unit %s (%s) registered; certificate serial %s; %s\n", u, b.Unit.Name, b.Unit.CertSerial, credsLine(&b))
	fmt.Fprintf(e.stdout, "  files in %s: cert.pem, roots.pem, nats.creds", dir)
	if b.LogKey != "" {
		fmt.Fprint(e.stdout, ", "+logKeyFile)
	}
	if b.KeyPEM != "" {
		fmt.Fprint(e.stdout, ", key.pem (keep it secret)")
	}
	if madeWitness {
		fmt.Fprint(e.stdout, ", "+witnessKeyFile+" (the agent's witness key: keep it secret)")
	}
	fmt.Fprintf(e.stdout, "\n  NATS: %s\n", b.NATSURL)
	return unitAgentConfig(e, dir, u, b.NATSURL, *listen, b.KeyPEM != "")
}

func unitList(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "unit list", "[--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	if c := parse(fs, args); c >= 0 {
		return c
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var units []service.UnitView
	if err := c.do(ctx, "GET", "/api/v1/units", nil, &units); err != nil {
		return fail(e, "%v", err)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tNAME\tSTATE\tCERTIFICATE\tCERT NOT AFTER\tCREDS EXPIRE")
	for _, u := range units {
		serial, notAfter := u.CertSerial, u.CertNotAfter
		if u.Certificate != nil {
			serial, notAfter = u.Certificate.Serial, u.Certificate.NotAfter
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Name, u.State, orDash(serial), day(notAfter), day(u.CredsExpire))
	}
	tw.Flush()
	return exitOK
}

func day(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.DateOnly)
}
