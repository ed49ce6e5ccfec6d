package hub

import (
	"context"
	"log/slog"
	"time"

	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/pkg/pki"
)

// ReindexStats counts what a reindex rebuilt, and lists every archived
// object it could not index.
type ReindexStats = projection.Stats

// Skip is an archived object reindex could not index, and why.
type Skip = projection.Skip

// Progress is told how many archive objects a reindex will read, then each
// one it has read.
type Progress = projection.Progress

// Reindex rebuilds the index from the archive alone (projection.Rebuild):
// units, accepted documents (each container checked against its hub
// receipt, the receipt and the container's chain as of the receipt's
// acceptance time), statuses and rejected submissions. The hub must not be
// running on the same index. Where the index stands in the decision events
// is kept: the hub, started again, applies the events since (harmlessly
// again where the archive already held them).
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
	return projection.Rebuild(ctx, h.arch, ix, h.trust, cfg.Clock, log, prog)
}
