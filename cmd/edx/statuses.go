package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

func init() {
	register(command{"statuses", "a document's status history, with the units' signatures over their statuses, fetched and checked", cmdStatuses})
}

// statusCheck is what edx statuses says of one status.
type statusCheck struct {
	Unit     document.UnitID     `json:"unit"`
	Code     document.StatusCode `json:"code"`
	Time     string              `json:"time"`
	Signed   bool                `json:"signed"`
	File     string              `json:"file,omitempty"`
	Valid    bool                `json:"valid"`
	Problems []string            `json:"problems,omitempty"`
}

// cmdStatuses lists a document's statuses and fetches the signature of
// each signed one, checked here against the trust roots: the signature
// over the status recorded and over the container the hub accepted, by a
// certificate of the reporting unit, valid when the hub received the
// status.
func cmdStatuses(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "statuses", "ID [-o DIR] [--trust roots.pem] [--json] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	out := fs.String("o", "", "write each signature there, as ID.status-UNIT-CODE-N.p7s (openssl cms -verify reads it)")
	trustPath := fs.String("trust", "", "trust roots to check the signatures with (default: the embedded hub's, from DATA/hub.json)")
	asJSON := fs.Bool("json", false, "print the checks as JSON")
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
	if *trustPath == "" {
		var info struct {
			TrustRoots string `json:"trust_roots"`
		}
		b, err := os.ReadFile(filepath.Join(hf.data, "hub.json"))
		if err != nil || json.Unmarshal(b, &info) != nil || info.TrustRoots == "" {
			return fail(e, "give --trust roots.pem (the city's trust roots) to check the signatures with")
		}
		*trustPath = info.TrustRoots
	}
	trust, err := pki.LoadTrust(*trustPath)
	if err != nil {
		return fail(e, "%v", err)
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var d api.Document
	if err := c.do(ctx, "GET", "/api/v1/documents/"+string(id), nil, &d); err != nil {
		return fail(e, "%v", err)
	}
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return fail(e, "%v", err)
		}
	}
	var checks []statusCheck
	valid := true
	for i, h := range d.History {
		ck := statusCheck{Unit: h.Unit, Code: h.Code, Time: showTime(h.Time), Signed: h.SignatureSHA256 != ""}
		if !ck.Signed {
			ck.Problems = []string{"unsigned: the unit's agent did not sign it (recorded by the hub as it came)"}
			checks = append(checks, ck)
			continue
		}
		var b []byte
		if err := c.do(ctx, "GET", "/api/v1/documents/"+string(id)+"/signatures/"+h.SignatureSHA256, nil, &b); err != nil {
			return fail(e, "%v", err)
		}
		// As of the hub's reception: the unit signed before the hub
		// received it, and its certificate may have expired since.
		v := container.VerifyStatus(b, container.Options{Trust: trust, At: h.ReceivedAt})
		rs := v.Reasons
		if st := v.Statement; st != nil {
			if st.DocumentID != id || st.Unit != h.Unit || st.Code != h.Code || st.Time.UnixMicro() != h.Time.UnixMicro() || st.Description != h.Description {
				rs.Add(reason.StatusSignature, "the signature is over another status than the one recorded")
			}
			if st.ContainerSHA256 != d.ContainerSHA256 && st.Code != document.StatusRefused {
				rs.Add(reason.StatusSignature, fmt.Sprintf("signed over container %s, the document's is %s", st.ContainerSHA256, d.ContainerSHA256))
			}
		}
		ck.Valid = len(rs) == 0
		for _, r := range rs {
			ck.Problems = append(ck.Problems, r.String())
		}
		valid = valid && ck.Valid
		if *out != "" {
			ck.File = filepath.Join(*out, fmt.Sprintf("%s.status-%s-%s-%d.p7s", id, h.Unit, h.Code, i+1))
			if err := os.WriteFile(ck.File, b, 0o644); err != nil {
				return fail(e, "%v", err)
			}
		}
		checks = append(checks, ck)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(checks)
	} else {
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tUNIT\tCODE\tSIGNATURE\tFILE")
		for _, ck := range checks {
			sig := "unsigned"
			switch {
			case ck.Signed && ck.Valid:
				sig = "valid"
			case ck.Signed:
				sig = "INVALID"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\n", ck.Time, ck.Unit, ck.Code, ck.Code.English(), sig, orDash(ck.File))
		}
		tw.Flush()
		for _, ck := range checks {
			if ck.Signed && !ck.Valid {
				fmt.Fprintf(e.stdout, "%s %s: %v\n", ck.Unit, ck.Code, ck.Problems)
			}
		}
	}
	if !valid {
		return exitInvalid
	}
	return exitOK
}
