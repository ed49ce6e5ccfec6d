package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/pipeline"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// ReindexStats counts what a reindex rebuilt, and lists every archived
// object it could not index.
type ReindexStats struct {
	Units, Documents, Statuses, Rejected, Skipped int
	Skips                                         []Skip
}

// Skip is an archived object reindex could not index, and why.
type Skip struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

func (st *ReindexStats) skip(log *slog.Logger, key string, err error) {
	st.Skipped++
	st.Skips = append(st.Skips, Skip{Key: key, Reason: err.Error()})
	log.Error("reindex: archived object not indexed", "key", key, "err", err)
}

// Progress is told how many archive objects a reindex will read, then each
// one it has read.
type Progress interface {
	Start(total int)
	Done(n int)
}

// Reindex rebuilds the index from the archive alone: units, accepted
// documents (each container checked against its hub receipt, the receipt and
// the container's chain as of the receipt's acceptance time), statuses and
// rejected submissions. The hub must not be running on the same index.
//
// An archived document or status it cannot index is never dropped silently:
// each is logged at error level and listed in ReindexStats.Skips with its
// key and reason; the caller reports them (edx-hub reindex exits 1).
func Reindex(ctx context.Context, cfg Config, log *slog.Logger, prog Progress) (ReindexStats, error) {
	var st ReindexStats
	if err := cfg.SetDefaults(); err != nil {
		return st, err
	}
	h := &Hub{cfg: cfg, log: log}
	defer h.Close()
	if err := h.startPKI(); err != nil {
		return st, err
	}
	if h.ca != nil {
		// A hub down for a while left the development CA's CRL stale:
		// sign it again, as the running hub would.
		if _, err := h.ca.RefreshCRL(time.Now(), pki.CRLValidity/2); err != nil {
			return st, err
		}
		if err := h.trust.Reload(); err != nil {
			return st, err
		}
	}
	if err := h.startS3(ctx); err != nil {
		return st, err
	}
	ix, err := index.Open(ctx, cfg.Index, log)
	if err != nil {
		return st, err
	}
	defer ix.Close()

	var units, docs, statuses, rejected []string
	for o, err := range h.arch.List(ctx, "") {
		if err != nil {
			return st, err
		}
		k := o.Key
		switch {
		case strings.HasPrefix(k, "units/"):
			units = append(units, k)
		case strings.HasPrefix(k, "rejected/"):
			if strings.HasSuffix(k, "/reasons.json") {
				rejected = append(rejected, k)
			}
		case strings.HasSuffix(k, "/container.asice"):
			docs = append(docs, k)
		case strings.Contains(k, "/status/"):
			statuses = append(statuses, k)
		}
	}
	sort.Strings(units) // registrations of a unit in time order: the last wins
	if prog != nil {
		prog.Start(len(units) + len(docs) + len(statuses) + len(rejected))
	}
	if err := ix.Reset(ctx); err != nil {
		return st, err
	}
	step := func() {
		if prog != nil {
			prog.Done(1)
		}
	}
	for _, k := range units {
		var u index.Unit
		if err := getJSON(ctx, h.arch, k, &u); err != nil {
			return st, err
		}
		if err := ix.PutUnit(ctx, u); err != nil {
			return st, err
		}
		st.Units++
		step()
	}
	const batch = 256
	var recs []index.Record
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		err := ix.PutDocuments(ctx, recs)
		recs = recs[:0]
		return err
	}
	for _, k := range docs {
		rec, err := h.recordFromArchive(ctx, k)
		if err != nil {
			st.skip(log, k, err)
			step()
			continue
		}
		recs = append(recs, rec)
		st.Documents++
		if len(recs) == batch {
			if err := flush(); err != nil {
				return st, err
			}
		}
		step()
	}
	if err := flush(); err != nil {
		return st, err
	}
	// Statuses in batches, one transaction each (a 01 also marks its
	// recipient delivered); a batch that fails is replayed one by one so
	// that only the bad status is skipped.
	var (
		batchSt   []document.Status
		batchKeys []string
	)
	replay := func() {
		if len(batchSt) == 0 {
			return
		}
		if _, err := ix.AddStatuses(ctx, batchSt); err == nil {
			st.Statuses += len(batchSt)
		} else {
			for i, s := range batchSt {
				if _, err := ix.AddStatus(ctx, s); err != nil {
					st.skip(log, batchKeys[i], fmt.Errorf("status %s of %s for document %s: %w", s.Code, s.Unit, s.DocumentID, err))
				} else {
					st.Statuses++
				}
			}
		}
		batchSt, batchKeys = batchSt[:0], batchKeys[:0]
	}
	for _, k := range statuses {
		var s document.Status
		if err := getJSON(ctx, h.arch, k, &s); err != nil {
			return st, err
		}
		batchSt, batchKeys = append(batchSt, s), append(batchKeys, k)
		if len(batchSt) == batch {
			replay()
		}
		step()
	}
	replay()
	for _, k := range rejected {
		rej := index.Rejected{ArchiveKey: k}
		var body pipeline.RejectedRecord
		if err := getJSON(ctx, h.arch, k, &body); err != nil {
			return st, err
		}
		rej.Ref, rej.Sender, rej.At, rej.Reasons = body.Ref, body.Sender, body.Received, body.Reasons
		if err := ix.PutRejected(ctx, rej); err != nil {
			return st, err
		}
		st.Rejected++
		step()
	}
	return st, nil
}

// recordFromArchive reads a container and its receipt and builds its index
// record; the container must match its receipt.
func (h *Hub) recordFromArchive(ctx context.Context, key string) (index.Record, error) {
	data, _, err := h.arch.Get(ctx, key)
	if err != nil {
		return index.Record{}, err
	}
	rkey := strings.TrimSuffix(key, "container.asice") + "receipt.p7s"
	rb, _, err := h.arch.Get(ctx, rkey)
	if err != nil {
		return index.Record{}, fmt.Errorf("receipt: %w", err)
	}
	c, rep := container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: h.trust})
	if c == nil {
		return index.Record{}, fmt.Errorf("container: %v", rep.Reasons)
	}
	rr := container.VerifyReceipt(rb, rep.ContainerSHA256, container.Options{Trust: h.trust, At: h.cfg.Clock()})
	if rr.Receipt == nil || !rr.Valid {
		return index.Record{}, fmt.Errorf("receipt %s: %v", rkey, rr.Reasons)
	}
	// The signer's chain as of the hub's acceptance, a time the hub signed.
	rep = container.Verify(c, container.Options{Trust: h.trust, At: rr.Receipt.AcceptedAt})
	return pipeline.Record(c, rep, rr.Receipt, rkey), nil
}

func getJSON(ctx context.Context, a *archive.Store, key string, v any) error {
	b, _, err := a.Get(ctx, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}
