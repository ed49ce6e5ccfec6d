package tlog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/evidence"
)

// Source is one hub's log as an auditor reads it: from the hub over HTTP
// (evidence.Client), or from its mirror in the archive.
type Source struct {
	// Origin and Key identify the log; Key verifies its checkpoints.
	Origin string
	Key    note.Verifier
	// Where says where it is read from (a URL, an archive prefix).
	Where string
	// Checkpoint returns the newest checkpoint to read the log up to.
	Checkpoint func(ctx context.Context) ([]byte, error)
	Bundles    client.EntryBundleFetcherFunc
}

// HTTPSource reads a log served by its hub.
func HTTPSource(c *evidence.Client, where string, key note.Verifier) Source {
	return Source{Origin: key.Name(), Key: key, Where: where, Checkpoint: c.ReadCheckpoint, Bundles: c.ReadEntryBundle}
}

// MirrorSource reads a log from its mirror in the archive, up to its newest
// mirrored (time-stamped) checkpoint.
func MirrorSource(m *Mirrored, key note.Verifier) Source {
	return Source{Origin: key.Name(), Key: key, Where: "archive " + m.Prefix(), Bundles: m.ReadEntryBundle,
		Checkpoint: func(ctx context.Context) ([]byte, error) {
			sizes, err := m.Sizes(ctx)
			if err != nil {
				return nil, err
			}
			if len(sizes) == 0 {
				return nil, fmt.Errorf("tlog: no checkpoint mirrored under %s yet", m.Prefix())
			}
			return m.Checkpoint(ctx, sizes[len(sizes)-1])
		}}
}

// ArchiveReport is what CompareArchive found. Missing lists every document
// the log and the archive disagree on; Pending those decided after the
// newest checkpoint read (not a fault).
type ArchiveReport struct {
	Logs []LogRead `json:"logs"`
	// Accepted counts the documents accepted in the logs; Archived those
	// whose container the archive holds.
	Accepted int `json:"accepted"`
	Archived int `json:"archived"`
	// Duplicates counts acceptances logged more than once (a redelivery
	// after a crash, two hubs racing): recognised by their key, not a
	// fault.
	Duplicates int       `json:"duplicates"`
	Missing    []Finding `json:"missing"`
	Pending    []Finding `json:"pending"`
	// Unlogged counts documents archived before the log (their receipt
	// names no entry).
	Unlogged int `json:"unlogged"`
}

// LogRead is one log as read.
type LogRead struct {
	Origin  string                `json:"origin"`
	Where   string                `json:"where"`
	Size    uint64                `json:"size"`
	Entries map[evidence.Kind]int `json:"entries"`
}

// Finding is one document the log and the archive disagree on.
type Finding struct {
	Doc document.ID `json:"doc"`
	// What is missing: "container", "receipt" (from the archive), "entry"
	// (from the log).
	What   string `json:"what"`
	Detail string `json:"detail"`
}

type logged struct {
	origin    string
	index     uint64
	container string
}

// CompareArchive reads every log in logs to its newest checkpoint (each
// checked against the checkpoint's root: nothing left out), then lists the
// archive, and compares both ways: every document a log says was accepted
// must have its container and receipt in the archive; every container in
// the archive must have its acceptance in a log, the entry its receipt
// names. A document archived after a log was read (its receipt names an
// entry past the checkpoint read) is pending, not missing.
func CompareArchive(ctx context.Context, a ArchiveReader, logs []Source) (*ArchiveReport, error) {
	r := &ArchiveReport{Missing: []Finding{}, Pending: []Finding{}}
	acc := map[document.ID][]logged{}
	sizes := map[string]uint64{}
	byIndex := map[string]map[uint64]string{} // origin → index → doc of the accepted entry there
	for _, s := range logs {
		raw, err := s.Checkpoint(ctx)
		if err != nil {
			return nil, fmt.Errorf("tlog: log %s (%s): %w", s.Origin, s.Where, err)
		}
		cp, err := evidence.OpenCheckpoint(raw, s.Origin, s.Key)
		if err != nil {
			return nil, fmt.Errorf("tlog: log %s (%s): %w", s.Origin, s.Where, err)
		}
		lr := LogRead{Origin: s.Origin, Where: s.Where, Size: cp.Size, Entries: map[evidence.Kind]int{}}
		byIndex[s.Origin] = map[uint64]string{}
		seen := map[string]bool{}
		err = evidence.ReadAll(ctx, s.Bundles, cp, func(i uint64, b []byte) error {
			e, err := evidence.ParseEntry(b)
			if err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			lr.Entries[e.Kind]++
			if e.Kind != evidence.Accepted {
				return nil
			}
			if seen[e.Key()] {
				r.Duplicates++
			}
			seen[e.Key()] = true
			acc[document.ID(e.Doc)] = append(acc[document.ID(e.Doc)], logged{origin: s.Origin, index: i, container: e.Container})
			byIndex[s.Origin][i] = e.Doc
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("tlog: log %s (%s): %w", s.Origin, s.Where, err)
		}
		if _, twice := sizes[s.Origin]; twice {
			return nil, fmt.Errorf("tlog: the log %s is given twice", s.Origin)
		}
		sizes[s.Origin] = cp.Size
		r.Logs = append(r.Logs, lr)
	}

	// The archive, listed after the logs were read.
	containers, receipts := map[document.ID]bool{}, map[document.ID]bool{}
	for o, err := range a.List(ctx, "") {
		if err != nil {
			return nil, fmt.Errorf("tlog: list the archive: %w", err)
		}
		k, err := projection.ParseKey(o.Key)
		if err != nil {
			continue // reported by a rebuild; not a document's container or receipt
		}
		switch k.Kind {
		case projection.KindContainer:
			containers[k.Doc] = true
		case projection.KindReceipt:
			receipts[k.Doc] = true
		}
	}
	r.Archived = len(containers)
	r.Accepted = len(acc)

	// Logged, not archived.
	for _, id := range slices.Sorted(maps.Keys(acc)) {
		where := acc[id][0]
		detail := fmt.Sprintf("accepted in log %s at entry %d (container %s)", where.origin, where.index, where.container)
		if !containers[id] {
			r.Missing = append(r.Missing, Finding{Doc: id, What: "container", Detail: detail + "; the archive has no " + projection.ContainerKey(id)})
		}
		if !receipts[id] {
			r.Missing = append(r.Missing, Finding{Doc: id, What: "receipt", Detail: detail + "; the archive has no " + projection.ReceiptKey(id)})
		}
	}

	// Archived, not logged.
	for _, id := range slices.Sorted(maps.Keys(containers)) {
		if len(acc[id]) > 0 {
			continue
		}
		if !receipts[id] {
			r.Pending = append(r.Pending, Finding{Doc: id, What: "entry", Detail: "archived without a receipt: a submission in progress (or cut short before its decision)"})
			continue
		}
		b, _, err := a.Get(ctx, projection.ReceiptKey(id))
		if err != nil {
			if errors.Is(err, archive.ErrNotFound) {
				continue
			}
			return nil, fmt.Errorf("tlog: receipt of %s: %w", id, err)
		}
		rc := container.VerifyReceipt(b, "", container.Options{}).Receipt
		switch {
		case rc == nil:
			r.Missing = append(r.Missing, Finding{Doc: id, What: "entry", Detail: "the archived receipt is unreadable, and no log holds the acceptance"})
		case rc.Log == nil:
			r.Unlogged++
		case sizes[rc.Log.Origin] == 0 && !hasLog(logs, rc.Log.Origin):
			r.Missing = append(r.Missing, Finding{Doc: id, What: "entry", Detail: fmt.Sprintf("its receipt names entry %d of log %s, which was not read (give its key)", rc.Log.Index, rc.Log.Origin)})
		case rc.Log.Index >= sizes[rc.Log.Origin]:
			r.Pending = append(r.Pending, Finding{Doc: id, What: "entry", Detail: fmt.Sprintf("its receipt names entry %d of log %s, past the checkpoint read (%d)", rc.Log.Index, rc.Log.Origin, sizes[rc.Log.Origin])})
		default:
			other := byIndex[rc.Log.Origin][rc.Log.Index]
			r.Missing = append(r.Missing, Finding{Doc: id, What: "entry", Detail: fmt.Sprintf("its receipt names entry %d of log %s, which records %s",
				rc.Log.Index, rc.Log.Origin, describe(other))})
		}
	}
	return r, nil
}

func describe(doc string) string {
	if doc == "" {
		return "no acceptance"
	}
	return "the acceptance of " + doc
}

func hasLog(logs []Source, origin string) bool {
	return slices.ContainsFunc(logs, func(s Source) bool { return s.Origin == origin })
}
