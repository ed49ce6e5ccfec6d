package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/pkg/document"
)

func init() {
	register(command{"unit add", "register a unit with the hub: certificate, NATS credentials", unitAdd})
	register(command{"unit list", "list the hub's units", unitList})
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
	req := api.UnitRequest{ID: u, Name: *name}
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
	var b api.UnitBundle
	if err := c.do(ctx, "POST", "/api/v1/units", req, &b); err != nil {
		return fail(e, "%v", err)
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("units", string(u))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(e, "%v", err)
	}
	files := []struct {
		name, data string
		mode       os.FileMode
	}{
		{"cert.pem", b.CertPEM, 0o644},
		{"roots.pem", b.RootsPEM, 0o644},
		{"nats.creds", b.Creds, 0o600},
		{"key.pem", b.KeyPEM, 0o600},
	}
	for _, f := range files {
		if f.data == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f.name), []byte(f.data), f.mode); err != nil {
			return fail(e, "%v", err)
		}
	}
	fmt.Fprintf(e.stdout, "unit %s (%s) registered; certificate serial %s\n", u, b.Unit.Name, b.Unit.CertSerial)
	fmt.Fprintf(e.stdout, "  files in %s: cert.pem, roots.pem, nats.creds", dir)
	if b.KeyPEM != "" {
		fmt.Fprint(e.stdout, ", key.pem (keep it secret)")
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
	var units []struct {
		ID         string
		Name       string
		CertSerial string
		Disabled   bool
	}
	if err := c.do(ctx, "GET", "/api/v1/units", nil, &units); err != nil {
		return fail(e, "%v", err)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tNAME\tCERTIFICATE\tSTATE")
	for _, u := range units {
		state := "active"
		if u.Disabled {
			state = "disabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.ID, u.Name, u.CertSerial, state)
	}
	tw.Flush()
	return exitOK
}
