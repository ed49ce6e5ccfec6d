package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/edxhub/edx/hub/index"
)

func init() {
	register(command{"search", "search the hub's archive (as your token may)", cmdSearch})
}

func cmdSearch(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "search", "[WORDS ...] [--from U] [--to U] [--unit U] [--type T] [--number N] [--signer S] [--status C] [--since D] [--until D] [--sort S] [--limit N] [--cursor C] [--all] [--json] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	params := map[string]*string{}
	for _, f := range []struct{ name, usage string }{
		{"from", "sent by this unit"},
		{"to", "received by this unit"},
		{"unit", "sent or received by this unit"},
		{"type", "document type code (QĐ, CV, ...)"},
		{"number", "số, exactly"},
		{"signer", "words of the signing officer's name"},
		{"status", "the latest status of a recipient (01, 02, 03, 04, 05, 06, 13, 15, 16)"},
		{"since", "accepted on or after this date (YYYY-MM-DD, Vietnam time) or RFC 3339 time"},
		{"until", "accepted on or before this date (YYYY-MM-DD), or before an RFC 3339 time"},
		{"sort", "accepted_desc (default), accepted_asc, promulgated_desc or relevance"},
		{"cursor", "the next page's cursor, from a previous search"},
	} {
		params[f.name] = fs.String(f.name, "", f.usage)
	}
	limit := fs.Int("limit", 20, "documents per page (at most 500)")
	all := fs.Bool("all", false, "follow the pages to the end")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	q := url.Values{}
	if words := strings.Join(fs.Args(), " "); words != "" {
		q.Set("q", words)
	}
	for k, v := range params {
		if *v != "" {
			q.Set(k, *v)
		}
	}
	q.Set("limit", fmt.Sprint(*limit))
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var out index.Page
	for {
		var p index.Page
		if err := c.do(ctx, "GET", "/api/v1/documents?"+q.Encode(), nil, &p); err != nil {
			return fail(e, "%v", err)
		}
		out.Items, out.Total, out.NextCursor = append(out.Items, p.Items...), p.Total, p.NextCursor
		if !*all || p.NextCursor == "" {
			break
		}
		q.Set("cursor", p.NextCursor)
	}
	if out.Items == nil {
		out.Items = []index.Summary{}
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return exitOK
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCEPTED\tID\tNUMBER\tFROM\tSUBJECT")
	for _, s := range out.Items {
		num := s.Number
		if s.Notation != "" {
			num += "/" + s.Notation
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", showTime(s.AcceptedAt), s.ID, num, s.From, clip(s.Subject, 80))
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "%d of %d documents\n", len(out.Items), out.Total)
	if out.NextCursor != "" {
		fmt.Fprintf(e.stdout, "next page: --cursor %s (or --all)\n", out.NextCursor)
	}
	return exitOK
}

// clip shortens s to n runes.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
