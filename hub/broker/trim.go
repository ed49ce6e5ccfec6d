package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// Trimmer removes from EDX_DELIVER what each unit's agent acknowledged.
// EDX_DELIVER has limits retention (StreamConfigs): the server keeps a
// message after its unit acknowledged it, and the hub removes it, a unit's
// messages up to its consumer's acknowledgement floor at once, with one
// purge of the unit's subjects. Nothing else removes a message, so one a
// unit has not acknowledged stays however long the unit is away; and a
// unit's consumer that lost its state (kept in memory) starts again from
// what is left.
//
// Each sweep looks only at the units that have messages in the stream,
// and at each no more often than its acknowledgements move: every
// Config.Every while they do, backing off to Config.MaxWait while they do
// not (a unit offline with messages waiting). It keeps no state that
// matters: every hub runs one, and a purge done twice changes nothing.
type Trimmer struct {
	js  jetstream.JetStream
	cfg TrimConfig
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex
	units map[string]*trimUnit
}

// TrimConfig tunes a Trimmer.
type TrimConfig struct {
	// Every is how often it sweeps (default 10s): an acknowledged message
	// stays about this long.
	Every time.Duration
	// MaxWait is the longest it waits before it looks again at a unit
	// whose acknowledgements did not move (default 5m).
	MaxWait time.Duration
}

type trimUnit struct {
	floor uint64 // removed up to here
	wait  time.Duration
	next  time.Time
}

// TrimSweep counts what one sweep did.
type TrimSweep struct {
	Units   int // units with messages in the stream
	Checked int // of which the sweep asked the consumer
	Trimmed int // units whose acknowledged messages it removed
}

// NewTrimmer returns a Trimmer of the EDX_DELIVER of js (the hub's
// connection to the EDX account).
func NewTrimmer(js jetstream.JetStream, cfg TrimConfig, log *slog.Logger) *Trimmer {
	if cfg.Every <= 0 {
		cfg.Every = 10 * time.Second
	}
	if cfg.MaxWait < cfg.Every {
		cfg.MaxWait = max(cfg.Every, 5*time.Minute)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Trimmer{js: js, cfg: cfg, log: log, now: time.Now, units: map[string]*trimUnit{}}
}

// Run sweeps every Config.Every until ctx is done.
func (t *Trimmer) Run(ctx context.Context) {
	tick := time.NewTicker(t.cfg.Every)
	defer tick.Stop()
	for {
		if _, err := t.Sweep(ctx); err != nil && ctx.Err() == nil {
			t.log.Warn("broker: removing acknowledged deliveries and notices", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Sweep removes, for each unit due, what its agent acknowledged.
func (t *Trimmer) Sweep(ctx context.Context) (TrimSweep, error) {
	var res TrimSweep
	st, err := t.js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		return res, fmt.Errorf("broker: trim: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return res, fmt.Errorf("broker: trim: %w", err)
	}
	waiting := map[string]bool{}
	for subj := range info.State.Subjects {
		if u := protocol.UnitFromSubject(subj); u != "" {
			waiting[u] = true
		}
	}
	res.Units = len(waiting)
	t.mu.Lock()
	defer t.mu.Unlock()
	for u := range t.units {
		if !waiting[u] {
			delete(t.units, u) // nothing left of it
		}
	}
	now := t.now()
	var errs []error
	for u := range waiting {
		s := t.units[u]
		if s == nil {
			s = &trimUnit{}
			t.units[u] = s
		}
		if now.Before(s.next) {
			continue
		}
		res.Checked++
		trimmed, err := t.trim(ctx, st, u, s)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil || len(errs) > 10 {
				break
			}
		}
		if trimmed {
			res.Trimmed++
			s.wait = t.cfg.Every
		} else {
			s.wait = min(max(2*s.wait, t.cfg.Every), t.cfg.MaxWait)
		}
		s.next = now.Add(s.wait - t.cfg.Every/2) // due at the sweep after the wait
	}
	return res, errors.Join(errs...)
}

// trim removes a unit's messages up to its consumer's acknowledgement
// floor, and reports whether the floor moved since the last time.
func (t *Trimmer) trim(ctx context.Context, st jetstream.Stream, unit string, s *trimUnit) (bool, error) {
	c, err := t.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unit))
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return false, nil // kept until the unit has a consumer that reads them
	case err != nil:
		return false, fmt.Errorf("broker: trim %s: %w", unit, err)
	}
	floor := c.CachedInfo().AckFloor.Stream
	if floor <= s.floor {
		if floor < s.floor {
			s.floor = floor // a consumer started again
		}
		return false, nil
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(protocol.UnitFilter(unit)), jetstream.WithPurgeSequence(floor+1)); err != nil {
		return false, fmt.Errorf("broker: trim %s: %w", unit, err)
	}
	s.floor = floor
	return true, nil
}
