// Package folders lets a document system that cannot call HTTP send
// documents through a folder.
//
// Convention. A document is either a folder outbox/<name>/ holding
// document.json and the payload files (every other regular file in it), a
// single signed container outbox/<name>.asice, or an edXML packet
// outbox/<name>.edxml (a document packet, or a status packet on a document
// the unit received, or its take-back, 13, of one it sent). Write it under a name that
// begins with a dot (outbox/.tmp-<name>, or anywhere else on the same file
// system) and rename it to its final name when it is complete: names that
// begin with a dot are never picked up, and a rename is atomic, so the agent
// never takes a half-written document.
//
// A document taken is signed and spooled, then moved to sent/<name> with
// sent/<name>.json beside it (the document id and its state, updated when
// the hub decides; for a status packet, the document it is about and the
// state queued). A document the agent cannot accept is moved to
// failed/<name> with failed/<name>.reason.json; so is a document the hub
// later rejects. A name already used in sent/ or failed/ gets the document
// id appended.
package folders

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edxhub/edx/agent/durable"
	"github.com/edxhub/edx/agent/inbox"
	"github.com/edxhub/edx/agent/outbox"
	"github.com/edxhub/edx/agent/packets"
	"github.com/edxhub/edx/agent/spool"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/reason"
)

// Config names the folders.
type Config struct {
	Outbox   string        `yaml:"outbox"`
	Sent     string        `yaml:"sent"`
	Failed   string        `yaml:"failed"`
	Interval time.Duration `yaml:"interval"` // how often outbox/ is scanned (default 2s)
}

// Submitter takes documents (agent/outbox).
type Submitter interface {
	Submit(ctx context.Context, s outbox.Submission) (*spool.Record, bool, error)
	MaxSize() int64
}

// PacketSubmitter takes edXML packets (agent/packets).
type PacketSubmitter interface {
	Submit(ctx context.Context, r io.Reader, s packets.Submission) (*packets.Result, error)
}

// Watcher picks up documents from the outbox folder.
type Watcher struct {
	cfg Config
	sub Submitter
	log *slog.Logger
	// Packets takes the .edxml files (nil: they are refused).
	Packets PacketSubmitter
	// Spooled is called after each new document is spooled, StatusAdded
	// after each status queued (may be nil).
	Spooled, StatusAdded func()
	// mu orders taking an entry (outbox → sent) and the hub's decision on
	// it (sent → failed), which can arrive before the move is done.
	mu sync.Mutex
}

// SourcePrefix begins the spool source of a document sent through a folder.
const SourcePrefix = "folder:"

// New checks the folders, creating them.
func New(cfg Config, sub Submitter, log *slog.Logger) (*Watcher, error) {
	if cfg.Outbox == "" || cfg.Sent == "" || cfg.Failed == "" {
		return nil, errors.New("folders: outbox, sent and failed are required")
	}
	for _, d := range []string{cfg.Outbox, cfg.Sent, cfg.Failed} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("folders: %w", err)
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, sub: sub, log: log}, nil
}

// Run scans the outbox folder until ctx is done.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if err := w.Scan(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("folders: scan", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Scan takes every complete document in the outbox folder, oldest first.
func (w *Watcher) Scan(ctx context.Context) error {
	ents, err := os.ReadDir(w.cfg.Outbox)
	if err != nil {
		return fmt.Errorf("folders: %w", err)
	}
	type cand struct {
		name string
		mod  time.Time
	}
	var cs []cand
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		cs = append(cs, cand{e.Name(), info.ModTime()})
	}
	sort.Slice(cs, func(i, j int) bool {
		if !cs[i].mod.Equal(cs[j].mod) {
			return cs[i].mod.Before(cs[j].mod)
		}
		return cs[i].name < cs[j].name
	})
	for _, c := range cs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := w.take(ctx, c.name); err != nil {
			w.log.Warn("folders: will retry", "name", c.name, "err", err)
		}
	}
	return nil
}

// take submits one outbox entry and moves it; an error leaves it for the
// next scan.
func (w *Watcher) take(ctx context.Context, name string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	src := filepath.Join(w.cfg.Outbox, name)
	var (
		rec     *spool.Record
		created bool
		err     error
	)
	if strings.HasSuffix(strings.ToLower(name), ".edxml") {
		var st *inbox.Status
		if rec, created, st, err = w.submitPacket(ctx, src, name); err == nil && st != nil {
			return w.statusTaken(src, name, st)
		}
	} else {
		var sub outbox.Submission
		if sub, err = w.read(src, name); err != nil {
			return w.fail(src, name, "", err)
		}
		rec, created, err = w.sub.Submit(ctx, sub)
	}
	var (
		oe *outbox.Error
		ps document.Problems
	)
	switch {
	case errors.As(err, &oe), errors.Is(err, spool.ErrConflict):
		return w.fail(src, name, "", err)
	case errors.As(err, &ps):
		return w.fail(src, name, "", &outbox.Error{Kind: outbox.Invalid, Message: "invalid status", Problems: ps})
	case errors.Is(err, inbox.ErrNotFound), errors.Is(err, spool.ErrNotFound):
		return w.fail(src, name, "", &outbox.Error{Kind: outbox.Invalid, Message: err.Error()})
	case err != nil:
		return err
	}
	if created {
		w.log.Info("document spooled", "doc_id", rec.ID, "size", rec.Size, "source", rec.Source)
		if w.Spooled != nil {
			w.Spooled()
		}
	}
	dest := strings.TrimPrefix(rec.Source, SourcePrefix)
	if !strings.HasPrefix(rec.Source, SourcePrefix) || dest == "" {
		dest = name
	}
	dest = w.free(w.cfg.Sent, dest, rec.ID)
	if err := durable.Move(src, filepath.Join(w.cfg.Sent, dest)); err != nil {
		return fmt.Errorf("folders: move to sent: %w", err)
	}
	return w.writeResult(filepath.Join(w.cfg.Sent, dest+".json"), result{DocumentID: rec.ID, State: rec.State, Time: time.Now().UTC()})
}

// submitPacket hands an .edxml file to the packet exchange: a document
// (rec) or a status (st).
func (w *Watcher) submitPacket(ctx context.Context, src, name string) (*spool.Record, bool, *inbox.Status, error) {
	info, err := os.Lstat(src)
	if err != nil {
		return nil, false, nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, false, nil, &outbox.Error{Kind: outbox.Invalid, Message: "an .edxml entry must be a file: an edXML packet"}
	}
	if w.Packets == nil {
		return nil, false, nil, &outbox.Error{Kind: outbox.Invalid, Message: "this agent takes no edXML packets"}
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, false, nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, false, nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, false, nil, err
	}
	res, err := w.Packets.Submit(ctx, f, packets.Submission{Source: SourcePrefix + name,
		IdempotencyKey: SourcePrefix + name + ":" + hex.EncodeToString(h.Sum(nil))})
	if err != nil {
		return nil, false, nil, err
	}
	if res.Status != nil {
		return nil, false, res.Status, nil
	}
	return res.Document, !res.Duplicate, nil, nil
}

// statusTaken moves a status packet that was queued to sent/.
func (w *Watcher) statusTaken(src, name string, st *inbox.Status) error {
	w.log.Info("status queued", "doc_id", st.DocumentID, "code", st.Code, "source", SourcePrefix+name)
	if w.StatusAdded != nil {
		w.StatusAdded()
	}
	dest := w.free(w.cfg.Sent, name, st.DocumentID)
	if err := durable.Move(src, filepath.Join(w.cfg.Sent, dest)); err != nil {
		return fmt.Errorf("folders: move to sent: %w", err)
	}
	return w.writeResult(filepath.Join(w.cfg.Sent, dest+".json"), result{DocumentID: st.DocumentID, State: StatusQueued, StatusCode: st.Code, Time: time.Now().UTC()})
}

// StatusQueued is the state in sent/<name>.json of a status packet: queued
// for the hub with the unit's statuses.
const StatusQueued spool.State = "queued"

// read turns an outbox entry into a submission.
func (w *Watcher) read(src, name string) (outbox.Submission, error) {
	sub := outbox.Submission{Source: SourcePrefix + name}
	info, err := os.Lstat(src)
	if err != nil {
		return sub, err
	}
	h := sha256.New()
	switch {
	case info.Mode().IsRegular() && strings.HasSuffix(strings.ToLower(name), ".asice"):
		if info.Size() > w.sub.MaxSize() {
			return sub, &outbox.Error{Kind: outbox.TooLarge, Message: fmt.Sprintf("%d bytes exceed the limit of %d", info.Size(), w.sub.MaxSize())}
		}
		if sub.Container, err = os.ReadFile(src); err != nil {
			return sub, err
		}
		h.Write(sub.Container)
	case info.IsDir():
		ents, err := os.ReadDir(src)
		if err != nil {
			return sub, err
		}
		var size int64
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				return sub, err
			}
			if !fi.Mode().IsRegular() {
				return sub, &outbox.Error{Kind: outbox.Invalid, Message: fmt.Sprintf("%q is not a regular file: a document folder holds document.json and files only", e.Name())}
			}
			if size += fi.Size(); size > w.sub.MaxSize() {
				return sub, &outbox.Error{Kind: outbox.TooLarge, Message: fmt.Sprintf("the files exceed the limit of %d bytes", w.sub.MaxSize())}
			}
			data, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				return sub, err
			}
			fmt.Fprintf(h, "%s\x00%d\x00", e.Name(), len(data))
			h.Write(data)
			if e.Name() == container.MetadataPath {
				sub.Meta = data
				continue
			}
			sub.Files = append(sub.Files, container.File{Name: e.Name(), Data: data})
		}
		if sub.Meta == nil {
			return sub, &outbox.Error{Kind: outbox.Invalid, Message: "no document.json in the folder",
				Problems: document.Problems{{Field: "metadata", Message: "required: document.json"}}}
		}
	default:
		return sub, &outbox.Error{Kind: outbox.Invalid, Message: "not a document: want a folder with document.json and files, or a .asice container"}
	}
	// The same content under the same name is the same submission, so a
	// crash between spooling and moving does not send it twice.
	sub.IdempotencyKey = SourcePrefix + name + ":" + hex.EncodeToString(h.Sum(nil))
	return sub, nil
}

// result is sent/<name>.json.
type result struct {
	DocumentID document.ID         `json:"document_id"`
	State      spool.State         `json:"state"`
	StatusCode document.StatusCode `json:"status_code,omitempty"` // a status packet's code
	ArchiveKey string              `json:"archive_key,omitempty"`
	Time       time.Time           `json:"time"`
}

// reasonFile is failed/<name>.reason.json.
type reasonFile struct {
	DocumentID document.ID        `json:"document_id,omitempty"`
	Stage      string             `json:"stage"` // "agent" (refused before sending) or "hub" (rejected by the hub)
	Message    string             `json:"message"`
	Problems   []document.Problem `json:"problems,omitempty"`
	Reasons    reason.List        `json:"reasons,omitempty"`
	Time       time.Time          `json:"time"`
}

func (w *Watcher) writeResult(path string, v any) error {
	b, _ := json.MarshalIndent(v, "", "  ")
	return durable.WriteFile(path, append(b, '\n'), 0o640)
}

// fail moves an entry the agent refused to failed/ with its reason.
func (w *Watcher) fail(src, name string, id document.ID, cause error) error {
	rf := reasonFile{DocumentID: id, Stage: "agent", Message: cause.Error(), Time: time.Now().UTC()}
	var oe *outbox.Error
	if errors.As(cause, &oe) {
		rf.Message, rf.Problems, rf.Reasons = oe.Message, oe.Problems, oe.Reasons
	} else if !errors.Is(cause, spool.ErrConflict) {
		return cause // not the document's fault: retry later
	}
	dest := w.free(w.cfg.Failed, name, "")
	if err := w.writeResult(filepath.Join(w.cfg.Failed, dest+".reason.json"), rf); err != nil {
		return err
	}
	if err := durable.Move(src, filepath.Join(w.cfg.Failed, dest)); err != nil {
		return fmt.Errorf("folders: move to failed: %w", err)
	}
	w.log.Info("folders: document refused", "name", name, "moved_to", dest, "reason", rf.Message)
	return nil
}

// free returns name, or a variant not yet used in dir.
func (w *Watcher) free(dir, name string, id document.ID) string {
	taken := func(n string) bool {
		for _, p := range []string{n, n + ".json", n + ".reason.json"} {
			if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
				return true
			}
		}
		return false
	}
	if !taken(name) {
		return name
	}
	base, ext := name, ""
	if l := strings.ToLower(name); strings.HasSuffix(l, ".asice") || strings.HasSuffix(l, ".edxml") {
		base, ext = name[:len(name)-6], name[len(name)-6:]
	}
	suffix := string(id)
	if suffix == "" {
		suffix = time.Now().UTC().Format("20060102T150405.000000000")
	}
	for i := 0; ; i++ {
		n := base + "-" + suffix + ext
		if i > 0 {
			n = fmt.Sprintf("%s-%s-%d%s", base, suffix, i, ext)
		}
		if !taken(n) {
			return n
		}
	}
}

// Decided updates the folders when the hub decided on a document sent
// through them: sent/<name>.json shows the acceptance; a rejected document
// moves to failed/ with its reasons.
func (w *Watcher) Decided(rec *spool.Record) error {
	if !strings.HasPrefix(rec.Source, SourcePrefix) {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	name := w.sentName(rec)
	switch rec.State {
	case spool.Accepted:
		return w.writeResult(filepath.Join(w.cfg.Sent, name+".json"), result{DocumentID: rec.ID, State: rec.State, ArchiveKey: rec.ArchiveKey, Time: time.Now().UTC()})
	case spool.Rejected:
		dest := w.free(w.cfg.Failed, name, rec.ID)
		rf := reasonFile{DocumentID: rec.ID, Stage: "hub", Message: "the hub rejected the document", Reasons: rec.Reasons, Time: time.Now().UTC()}
		if err := w.writeResult(filepath.Join(w.cfg.Failed, dest+".reason.json"), rf); err != nil {
			return err
		}
		src := filepath.Join(w.cfg.Sent, name)
		if _, err := os.Lstat(src); err == nil {
			if err := durable.Move(src, filepath.Join(w.cfg.Failed, dest)); err != nil {
				return fmt.Errorf("folders: move to failed: %w", err)
			}
		}
		os.Remove(filepath.Join(w.cfg.Sent, name+".json"))
		w.log.Info("folders: rejected document moved to failed", "doc_id", rec.ID, "name", dest)
	}
	return nil
}

// sentName finds the name under which a document sits in sent/: its source
// name, or that name with the id appended.
func (w *Watcher) sentName(rec *spool.Record) string {
	name := strings.TrimPrefix(rec.Source, SourcePrefix)
	for _, n := range []string{name} {
		var r result
		if b, err := os.ReadFile(filepath.Join(w.cfg.Sent, n+".json")); err == nil && json.Unmarshal(b, &r) == nil && r.DocumentID == rec.ID {
			return n
		}
	}
	// Look for any name carrying the id.
	ents, _ := os.ReadDir(w.cfg.Sent)
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && !durable.IsTemp(e.Name()) {
			var r result
			if b, err := os.ReadFile(filepath.Join(w.cfg.Sent, e.Name())); err == nil && json.Unmarshal(b, &r) == nil && r.DocumentID == rec.ID {
				return n
			}
		}
	}
	return name
}
