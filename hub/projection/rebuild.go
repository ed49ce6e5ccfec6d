package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/pki"
)

// Index is what a rebuild writes (hub/index.Index).
type Index interface {
	Reset(ctx context.Context) error
	PutUnit(ctx context.Context, u index.Unit) error
	PutDocuments(ctx context.Context, recs []index.Record) error
	PutStatuses(ctx context.Context, es []index.StatusEntry) error
	PutRejected(ctx context.Context, rej index.Rejected) error
}

// Stats counts what a rebuild indexed, and lists every archived object it
// could not index.
type Stats struct {
	Units, Documents, Statuses, Rejected, Skipped int
	Skips                                         []Skip
}

// Skip is an archived object a rebuild could not index, and why.
type Skip struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

func (st *Stats) skip(log *slog.Logger, key string, err error) {
	st.Skipped++
	st.Skips = append(st.Skips, Skip{Key: key, Reason: err.Error()})
	log.Error("rebuild: archived object not indexed", "key", key, "err", err)
}

// Progress is told how many archived objects a rebuild will read, then how
// many more it has read, as it goes. One that also has a method
// UnitsLoaded() is told when the units are in the index (the first thing a
// rebuild writes), which is all a hub's pipeline needs of its index.
type Progress interface {
	Start(total int)
	Done(n int)
}

// Rebuild empties the index and projects the archive onto it: units (the
// last record of each wins), accepted documents (each container checked
// against its receipt, the receipt and the container's chain as of the
// receipt's acceptance time), statuses and rejected submissions and
// statuses. now is the clock receipts are checked against.
//
// An archived object it cannot index is never dropped silently: each is
// logged at error level and listed in Stats.Skips with its key and reason.
// An object that cannot be read at all (storage unavailable) stops the
// rebuild with an error.
func Rebuild(ctx context.Context, a Archive, ix Index, trust *pki.Trust, now func() time.Time, log *slog.Logger, prog Progress) (Stats, error) {
	var st Stats
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	var units, docs, statuses, rejected []string
	phase := time.Now()
	done := func(what string, n int) {
		log.Info("rebuild: "+what, "objects", n, "took", time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}
	for o, err := range a.List(ctx, "") {
		if err != nil {
			return st, err
		}
		k, err := ParseKey(o.Key)
		if err != nil {
			st.skip(log, o.Key, err)
			continue
		}
		switch k.Kind {
		case KindUnit:
			units = append(units, o.Key)
		case KindContainer:
			docs = append(docs, o.Key)
		case KindStatus:
			statuses = append(statuses, o.Key)
		case KindRejected:
			rejected = append(rejected, o.Key)
		}
	}
	sort.Strings(units) // the records of a unit in time order: the last wins
	done("archive listed", len(units)+len(docs)+len(statuses)+len(rejected))
	if prog == nil {
		prog = nopProgress{}
	}
	prog.Start(len(units) + len(docs) + len(statuses) + len(rejected))
	if err := ix.Reset(ctx); err != nil {
		return st, err
	}
	workers := max(16, 4*runtime.GOMAXPROCS(0)) // reads from S3 wait more than they compute

	for _, k := range units {
		b, _, err := a.Get(ctx, k)
		if err != nil {
			return st, err
		}
		u, err := DecodeUnit(b)
		if err != nil {
			st.skip(log, k, err)
		} else if err := ix.PutUnit(ctx, u); err != nil {
			return st, err
		} else {
			st.Units++
		}
		prog.Done(1)
	}
	if p, ok := prog.(interface{ UnitsLoaded() }); ok {
		p.UnitsLoaded()
	}
	done("units indexed", len(units))

	err := inChunks(ctx, docs, workers, func(key string) (index.Record, error) {
		return Document(ctx, a, trust, now(), key)
	}, func(keys []string, recs []index.Record, errs []error) error {
		batch := make([]index.Record, 0, len(recs))
		for i, err := range errs {
			if err != nil {
				if ctx.Err() != nil || !permanent(err) {
					return fmt.Errorf("projection: rebuild %s: %w", keys[i], err)
				}
				st.skip(log, keys[i], err)
				continue
			}
			batch = append(batch, recs[i])
		}
		if len(batch) > 0 {
			if err := ix.PutDocuments(ctx, batch); err != nil {
				return err
			}
			st.Documents += len(batch)
		}
		prog.Done(len(keys))
		return nil
	})
	if err != nil {
		return st, err
	}
	done("documents indexed", len(docs))

	err = inChunks(ctx, statuses, workers, func(key string) (index.StatusEntry, error) {
		b, _, err := a.Get(ctx, key)
		if err != nil {
			return index.StatusEntry{}, err
		}
		e, _, err := DecodeStatus(b)
		return e, err
	}, func(keys []string, es []index.StatusEntry, errs []error) error {
		batch, bkeys := make([]index.StatusEntry, 0, len(es)), make([]string, 0, len(es))
		for i, err := range errs {
			if err != nil {
				if ctx.Err() != nil || !permanent(err) {
					return fmt.Errorf("projection: rebuild %s: %w", keys[i], err)
				}
				st.skip(log, keys[i], err)
				continue
			}
			batch, bkeys = append(batch, es[i]), append(bkeys, keys[i])
		}
		// One transaction for the chunk; one that fails is replayed
		// status by status, so that only the bad one is skipped.
		if err := ix.PutStatuses(ctx, batch); err == nil {
			st.Statuses += len(batch)
		} else {
			for i, e := range batch {
				if err := ix.PutStatuses(ctx, []index.StatusEntry{e}); err != nil {
					if !indexRefused(err) {
						return err
					}
					st.skip(log, bkeys[i], fmt.Errorf("status %s of %s for document %s: %w", e.Code, e.Unit, e.DocumentID, err))
				} else {
					st.Statuses++
				}
			}
		}
		prog.Done(len(keys))
		return nil
	})
	if err != nil {
		return st, err
	}
	done("statuses indexed", len(statuses))

	err = inChunks(ctx, rejected, workers, func(key string) (RejectedRecord, error) {
		b, _, err := a.Get(ctx, key)
		if err != nil {
			return RejectedRecord{}, err
		}
		return DecodeRejected(b)
	}, func(keys []string, rs []RejectedRecord, errs []error) error {
		for i, err := range errs {
			if err != nil {
				if ctx.Err() != nil || !permanent(err) {
					return fmt.Errorf("projection: rebuild %s: %w", keys[i], err)
				}
				st.skip(log, keys[i], err)
				continue
			}
			if err := ix.PutRejected(ctx, rs[i].Rejected(keys[i])); err != nil {
				if !indexRefused(err) {
					return err
				}
				st.skip(log, keys[i], err)
				continue
			}
			st.Rejected++
		}
		prog.Done(len(keys))
		return nil
	})
	if err == nil {
		done("rejected indexed", len(rejected))
	}
	return st, err
}

// permanent reports whether reading or projecting an archived object failed
// for the object itself (missing receipt, bad content), not for the storage
// being unavailable, which stops a rebuild rather than skip the object.
func permanent(err error) bool {
	return !errors.Is(err, archive.ErrUnavailable)
}

// indexRefused reports whether the index refused what it was given (an
// unknown document, a non-recipient, an invalid value), as opposed to
// failing to write.
func indexRefused(err error) bool {
	return errors.Is(err, index.ErrNotFound) || errors.Is(err, index.ErrNotRecipient) || errors.Is(err, index.ErrInvalid)
}

// chunk is how many objects a rebuild reads at once and writes in one
// transaction.
const chunk = 256

// inChunks reads keys chunk by chunk, each chunk's objects by workers in
// parallel, and hands each chunk's results, in the keys' order, to write.
func inChunks[T any](ctx context.Context, keys []string, workers int, read func(string) (T, error), write func([]string, []T, []error) error) error {
	for start := 0; start < len(keys); start += chunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		ks := keys[start:min(start+chunk, len(keys))]
		out, errs := make([]T, len(ks)), make([]error, len(ks))
		next := make(chan int)
		var wg sync.WaitGroup
		for range min(workers, len(ks)) {
			wg.Go(func() {
				for i := range next {
					out[i], errs[i] = read(ks[i])
				}
			})
		}
		for i := range ks {
			next <- i
		}
		close(next)
		wg.Wait()
		if err := write(ks, out, errs); err != nil {
			return err
		}
	}
	return nil
}

type nopProgress struct{}

func (nopProgress) Start(int) {}
func (nopProgress) Done(int)  {}
