package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/document"
)

func randomPassword() string { return rand.Text() }

// verifyByID handles `edx verify ID`: when the one argument is a document id
// and no file of that name exists, the hub re-verifies the archived
// container now, with its trust roots and CRLs, and with its receipt, and
// the report is printed as for a file. It reports false to leave every
// other use of edx verify to the offline path.
func verifyByID(ctx context.Context, e *env, args []string) (int, bool) {
	fs := flags(e, "verify", "ID [--at now|accepted|RFC3339] [--json] [--hub URL --token-file F | --data DIR]")
	fs.SetOutput(io.Discard)
	var hf hubFlags
	hf.register(fs)
	at := fs.String("at", "", "check the signer's chain at: now (default), accepted (the receipt's time) or an RFC 3339 time")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	// The offline flags, so that parsing gets as far as the argument.
	fs.String("trust", "", "")
	fs.String("receipt", "", "")
	var crls multi
	fs.Var(&crls, "crl", "")
	if c := parse(fs, args); c >= 0 || fs.NArg() != 1 {
		return 0, false
	}
	id, err := document.ParseID(fs.Arg(0))
	if err != nil {
		return 0, false
	}
	if _, err := os.Stat(fs.Arg(0)); err == nil {
		return 0, false // a file named like an id: verify the file
	}
	if given(fs, "trust") || given(fs, "receipt") || given(fs, "crl") {
		return fail(e, "verify %s: --trust, --crl and --receipt verify a file; the hub verifies an archived document with its own", id), true
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err), true
	}
	path := "/api/v1/documents/" + string(id) + "/verify"
	if *at != "" {
		path += "?at=" + url.QueryEscape(*at)
	}
	var v service.Verification
	if err := c.do(ctx, "POST", path, nil, &v); err != nil {
		return fail(e, "%v", err), true
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	} else {
		fmt.Fprintf(e.stdout, "archived    %s (re-verified by the hub at %s)\n", id, showTime(v.CheckedAt))
		if a := v.Archive; a != nil {
			mark := "matches the container accepted"
			if !a.Matches {
				mark = "DIFFERS from the container accepted"
			}
			fmt.Fprintf(e.stdout, "archive     %s: %s\n", a.ContainerKey, mark)
			for _, p := range a.Problems {
				fmt.Fprintf(e.stdout, "  archive: %s\n", p)
			}
		}
		printReport(e.stdout, string(id), verifyResult{Valid: v.Valid, Container: v.Container, Receipt: v.Receipt})
	}
	if !v.Valid {
		return exitInvalid, true
	}
	return exitOK, true
}
