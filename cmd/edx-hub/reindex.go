package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/schollz/progressbar/v3"

	"github.com/edxhub/edx/hub"
)

// bar shows a rebuild's progress on the terminal (edx-hub reindex, a new
// hub catching up).
type bar struct {
	w    io.Writer
	desc string // "reindex" when empty
	b    *progressbar.ProgressBar
}

func (p *bar) Start(total int) {
	if total == 0 {
		p.b = nil // nothing to show
		return
	}
	desc := p.desc
	if desc == "" {
		desc = "reindex"
	}
	p.b = progressbar.NewOptions(total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("objects"),
		progressbar.OptionThrottle(100_000_000), progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }))
}

func (p *bar) Done(n int) {
	if p.b != nil {
		p.b.Add(n)
	}
}

// reindex rebuilds the index and reports every archived object it could not
// index, with its key and reason; any makes it fail (exit 1).
func reindex(ctx context.Context, cfg hub.Config, log *slog.Logger, w io.Writer) error {
	st, err := hub.Reindex(ctx, cfg, log, &bar{w: w})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "reindexed %d units, %d documents, %d statuses, %d rejected submissions (%d skipped)\n",
		st.Units, st.Documents, st.Statuses, st.Rejected, st.Skipped)
	if st.Skipped > 0 {
		fmt.Fprintf(w, "NOT INDEXED: %d archived objects (they are still in the archive):\n", st.Skipped)
		for _, s := range st.Skips {
			fmt.Fprintf(w, "  %s: %s\n", s.Key, s.Reason)
		}
		return fmt.Errorf("%d archived objects were not indexed", st.Skipped)
	}
	return nil
}
