package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
)

func init() {
	register(command{"edxml import", "send an archive of .edxml packets into the city through the sending unit's agent (resumable)", edxmlImport})
	register(command{"edxml export", "write documents of the hub's archive as .edxml packets (resumable)", edxmlExport})
}

// stateFile is the record of a resumable import or export: one JSON object
// a line, appended and synced as each item is done, so that a run
// interrupted anywhere (even in the middle of a line, which is ignored)
// is resumed by running the same command again.
type stateFile struct {
	f    *os.File
	done map[string]stateEntry
}

type stateEntry struct {
	Key     string `json:"key"`            // import: the packet's SHA-256; export: the document id
	File    string `json:"file,omitempty"` // the packet's path
	ID      string `json:"id,omitempty"`   // the document's edx id
	Result  string `json:"result"`         // imported, duplicate (the agent had it: imported before), exported, refused
	Message string `json:"message,omitempty"`
	At      string `json:"at"`
}

func openState(path string) (*stateFile, error) {
	s := &stateFile{done: map[string]stateEntry{}}
	if b, err := os.ReadFile(path); err == nil {
		for _, line := range bytes.Split(b, []byte("\n")) {
			var e stateEntry
			if json.Unmarshal(line, &e) == nil && e.Key != "" && e.Result != "refused" {
				s.done[e.Key] = e
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// A line cut short by a crash is ended, so that the next one stands
	// alone.
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if r, err := os.Open(path); err == nil {
			r.ReadAt(last, fi.Size()-1)
			r.Close()
		}
		if last[0] != '\n' {
			f.Write([]byte("\n"))
		}
	}
	s.f = f
	return s, nil
}

func (s *stateFile) record(e stateEntry) error {
	e.At = time.Now().UTC().Format(time.RFC3339)
	b, _ := json.Marshal(e)
	if _, err := s.f.Write(append(b, '\n')); err != nil {
		return err
	}
	if e.Result != "refused" {
		s.done[e.Key] = e
	}
	return s.f.Sync()
}

func (s *stateFile) close() error { return s.f.Close() }

// newBar is the progress bar of an import or export, on stderr.
func newBar(e *env, total int, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions(total, progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("packets"),
		progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionOnCompletion(func() { fmt.Fprintln(e.stderr) }))
}

// packetFiles lists the .edxml files of the arguments (directories walked,
// in name order; files as given).
func packetFiles(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			out = append(out, a)
			continue
		}
		var found []string
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.EqualFold(filepath.Ext(p), ".edxml") && !strings.HasPrefix(d.Name(), ".") {
				found = append(found, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func edxmlImport(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "edxml import", `--agent URL --token-file F [--state FILE] DIR|FILE.edxml ...

Migrates an archive of edXML document packets (QCVN 102) into the city. Each
packet goes to the agent of its sending unit (POST /v1/documents, as its
document system would send it): the agent maps it, signs it with the unit's
key and sends it, keeping the packet itself in the signed container
(files/original.edxml). A document is signed by its sender, so the archive
of several units is imported with each unit's agent in turn: a packet from
another unit is refused by the agent (422) and left for that unit's run.

Imported means the agent took the packet (signed and spooled, 202): the
hub's decision follows as for any document the agent sends (GET
/v1/documents/ID on the agent, or edx search).

Directories are walked for *.edxml files, in name order: a revocation,
update or replacement (BussinessDocType 1-3) must come after the document it
names. Packets are sent one at a time with a progress bar.

Resumable: the state file records each packet done by its SHA-256. Running
the same command again skips those and sends the rest; a refused packet is
tried again. Each packet is sent with the Idempotency-Key import:<sha256>,
so a packet whose answer was lost (the command killed at that moment) is
not sent twice: the agent answers with the document it already has.

Exit status: 0 every packet imported (or before), 1 some refused (listed,
with the agent's reasons), 2 usage error or the agent unreachable (run
again to resume).`)
	agentURL := fs.String("agent", "http://127.0.0.1:8090", "the sending unit's agent (its API address)")
	tokenFile := fs.String("token-file", "", "file holding the agent's API token (or $EDX_AGENT_TOKEN)")
	statePath := fs.String("state", "edx-import.state", "the state file: what was imported, to resume")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long one packet may take to send")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	token := os.Getenv("EDX_AGENT_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fail(e, "%v", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return fail(e, "the agent's API token: --token-file F or $EDX_AGENT_TOKEN")
	}
	files, err := packetFiles(fs.Args())
	if err != nil {
		return fail(e, "%v", err)
	}
	st, err := openState(*statePath)
	if err != nil {
		return fail(e, "state: %v", err)
	}
	defer st.close()
	base := strings.TrimRight(*agentURL, "/")
	client := &http.Client{Timeout: *timeout}
	bar := newBar(e, len(files), "import")
	var imported, before, duplicates int
	var refused []string
	for _, p := range files {
		sum, err := fileSHA256(p)
		if err != nil {
			bar.Exit()
			return fail(e, "%v", err)
		}
		if _, ok := st.done[sum]; ok {
			before++
			bar.Add(1)
			continue
		}
		id, dup, refusal, err := postPacket(ctx, client, base, token, p, sum)
		if err != nil {
			bar.Exit()
			fmt.Fprintf(e.stderr, "edx: %s: %v\nimported %d, %d before; run the same command again to resume (state: %s)\n", p, err, imported, before, *statePath)
			return exitUsage
		}
		entry := stateEntry{Key: sum, File: p, ID: id, Result: "imported"}
		switch {
		case refusal != "":
			entry.Result, entry.Message = "refused", refusal
			refused = append(refused, p+": "+refusal)
		case dup:
			entry.Result = "duplicate"
			duplicates++
		default:
			imported++
		}
		if err := st.record(entry); err != nil {
			bar.Exit()
			return fail(e, "state: %v", err)
		}
		bar.Add(1)
	}
	bar.Finish()
	fmt.Fprintf(e.stdout, "%d packets: %d imported, %d imported before (skipped), %d the agent already had, %d refused\n",
		len(files), imported, before, duplicates, len(refused))
	for _, r := range refused {
		fmt.Fprintf(e.stdout, "refused: %s\n", r)
	}
	if len(refused) > 0 {
		return exitInvalid
	}
	return exitOK
}

// postPacket sends one packet to the agent. A refusal (4xx: the packet is
// not one this agent takes) comes back as its message; anything else that
// is not an answer is an error (the agent unreachable or failing).
func postPacket(ctx context.Context, client *http.Client, base, token, path, sum string) (id string, dup bool, refusal string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", false, "", err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/documents", bufio.NewReader(f))
	if err != nil {
		return "", false, "", err
	}
	if fi, err := f.Stat(); err == nil {
		req.ContentLength = fi.Size()
	}
	req.Header.Set("Content-Type", "application/xml")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", "import:"+sum)
	resp, err := client.Do(req)
	if err != nil {
		return "", false, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusAccepted:
		var ok struct {
			ID        string `json:"id"`
			Duplicate bool   `json:"duplicate"`
		}
		if err := json.Unmarshal(b, &ok); err != nil || ok.ID == "" {
			return "", false, "", fmt.Errorf("agent: unexpected answer %q", b)
		}
		return ok.ID, ok.Duplicate, "", nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", false, "", fmt.Errorf("agent: %s: check --token-file", resp.Status)
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests:
		var fail struct {
			Error struct {
				Code     string             `json:"code"`
				Message  string             `json:"message"`
				Problems []document.Problem `json:"problems"`
				Reasons  []struct{ Code, Message string }
			} `json:"error"`
		}
		json.Unmarshal(b, &fail)
		msg := fmt.Sprintf("%d %s", resp.StatusCode, fail.Error.Message)
		for _, p := range fail.Error.Problems {
			msg += fmt.Sprintf("; %s: %s", p.Field, p.Message)
		}
		for _, r := range fail.Error.Reasons {
			msg += fmt.Sprintf("; %s: %s", r.Code, r.Message)
		}
		return "", false, msg, nil
	}
	return "", false, "", fmt.Errorf("agent: %s: %s", resp.Status, bytes.TrimSpace(b))
}

func edxmlExport(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "edxml export", `-o DIR [--state FILE] [--from U] [--to U] [--unit U] [--type T] [--since D] [--until D] [ID ...]
       [--hub URL --token-file F | --data DIR]

Writes documents of the hub's archive as edXML packets (QCVN 102), one
DIR/<id>.edxml each: the given ids, or every document the filters find
(oldest first). Each packet is written again from the archived container's
signed document.json and files, as an agent writes it for a document
system that reads edXML (edxml_extra puts back every element of a packet
the sender wrote; one TraceHeader is added for the hop through the hub,
at its acceptance time), with a progress bar.

Resumable: each packet is written under a temporary name and renamed when
complete, and the state file records each document done. Running the same
command again skips those and writes the rest.

Exit status: 0 every document written, 1 some could not be written as a
packet (listed), 2 usage error or the hub unreachable (run again to resume).`)
	var hf hubFlags
	hf.register(fs)
	out := fs.String("o", "", "output directory")
	statePath := fs.String("state", "", "the state file (default DIR/.edx-export.state)")
	params := map[string]*string{}
	for _, f := range []struct{ name, usage string }{
		{"from", "sent by this unit"},
		{"to", "received by this unit"},
		{"unit", "sent or received by this unit"},
		{"type", "document type code (QĐ, CV, ...)"},
		{"since", "accepted on or after this date (YYYY-MM-DD) or RFC 3339 time"},
		{"until", "accepted on or before this date (YYYY-MM-DD), or before an RFC 3339 time"},
	} {
		params[f.name] = fs.String(f.name, "", f.usage)
	}
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if *out == "" {
		fs.Usage()
		return exitUsage
	}
	var ids []document.ID
	for _, a := range fs.Args() {
		id, err := document.ParseID(a)
		if err != nil {
			return fail(e, "%v", err)
		}
		ids = append(ids, id)
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fail(e, "%v", err)
	}
	if *statePath == "" {
		*statePath = filepath.Join(*out, ".edx-export.state")
	}
	st, err := openState(*statePath)
	if err != nil {
		return fail(e, "state: %v", err)
	}
	defer st.close()

	// What to export: the ids, or every document the filters find.
	type todo struct {
		id       document.ID
		accepted time.Time
	}
	var docs []todo
	if len(ids) > 0 {
		for _, id := range ids {
			docs = append(docs, todo{id: id})
		}
	} else {
		q := url.Values{}
		for k, v := range params {
			if *v != "" {
				q.Set(k, *v)
			}
		}
		q.Set("sort", "accepted_asc")
		q.Set("limit", "500")
		for {
			var p index.Page
			if err := c.do(ctx, "GET", "/api/v1/documents?"+q.Encode(), nil, &p); err != nil {
				return fail(e, "%v", err)
			}
			for _, s := range p.Items {
				docs = append(docs, todo{id: s.ID, accepted: s.AcceptedAt})
			}
			if p.NextCursor == "" {
				break
			}
			q.Set("cursor", p.NextCursor)
		}
	}
	bar := newBar(e, len(docs), "export")
	var written, before int
	var failed []string
	for _, d := range docs {
		if _, ok := st.done[string(d.id)]; ok {
			before++
			bar.Add(1)
			continue
		}
		path, err := exportOne(ctx, c, *out, d.id, d.accepted)
		var pe packetErr
		switch {
		case errors.As(err, &pe):
			failed = append(failed, fmt.Sprintf("%s: %v", d.id, pe.error))
			if err := st.record(stateEntry{Key: string(d.id), ID: string(d.id), Result: "refused", Message: pe.Error()}); err != nil {
				bar.Exit()
				return fail(e, "state: %v", err)
			}
			bar.Add(1)
			continue
		case err != nil:
			bar.Exit()
			fmt.Fprintf(e.stderr, "edx: %s: %v\nwrote %d, %d before; run the same command again to resume (state: %s)\n", d.id, err, written, before, *statePath)
			return exitUsage
		}
		if err := st.record(stateEntry{Key: string(d.id), ID: string(d.id), File: path, Result: "exported"}); err != nil {
			bar.Exit()
			return fail(e, "state: %v", err)
		}
		written++
		bar.Add(1)
	}
	bar.Finish()
	fmt.Fprintf(e.stdout, "%d documents: %d written to %s, %d written before (skipped), %d could not be written\n", len(docs), written, *out, before, len(failed))
	for _, f := range failed {
		fmt.Fprintf(e.stdout, "not written: %s\n", f)
	}
	if len(failed) > 0 {
		return exitInvalid
	}
	return exitOK
}

// packetErr is a document that cannot be written as a packet (as opposed
// to a hub or disk failing).
type packetErr struct{ error }

// exportOne writes one document's packet, atomically, and returns its path.
func exportOne(ctx context.Context, c *client, dir string, id document.ID, accepted time.Time) (string, error) {
	if accepted.IsZero() {
		var det index.Detail
		if err := c.do(ctx, "GET", "/api/v1/documents/"+string(id), nil, &det); err != nil {
			return "", err
		}
		accepted = det.AcceptedAt
	}
	var raw []byte
	if err := c.do(ctx, "GET", "/api/v1/documents/"+string(id)+"/container", nil, &raw); err != nil {
		return "", err
	}
	lim := container.DefaultLimits
	lim.MaxSize = max(lim.MaxSize, int64(len(raw)))
	ct, err := container.Open(raw, lim)
	if err != nil {
		return "", packetErr{fmt.Errorf("the archived container: %w", err)}
	}
	if ct.Meta.ID != id {
		return "", packetErr{fmt.Errorf("the archived container holds document %s", ct.Meta.ID)}
	}
	path := filepath.Join(dir, string(id)+".edxml")
	tmp, err := os.CreateTemp(dir, ".tmp-*.edxml")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := inbox.WritePacket(tmp, ct, accepted); err != nil {
		tmp.Close()
		return "", packetErr{err}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}
