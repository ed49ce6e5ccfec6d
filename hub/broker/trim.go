package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/pkg/protocol"
)

// Trimmer removes from EDX_DELIVER what each unit's agent acknowledged.
// EDX_DELIVER has limits retention (StreamConfigs): the server keeps a
// message after its unit acknowledged it, and the hub removes it once the
// unit's consumer's acknowledgement floor has passed it. Nothing else
// removes a message, so one a unit has not acknowledged stays however long
// the unit is away; and a unit's consumer that lost its state (kept in
// memory) starts again from what is left.
//
// Messages are removed one by one (a message delete, which costs the
// server the same whatever the number of units), never with a purge of a
// unit's subjects: the server answers a purge of more than one message by
// counting again the pending messages of every consumer of the stream, one
// per unit, against every subject the stream holds. The Trimmer learns the
// sequences of the messages this hub stored (Sent); every
// TrimConfig.FullEvery, and when it starts, it also looks through the
// stream for what it was not told of (messages stored before it started,
// or by another hub), reading the messages of each unit whose consumer
// acknowledged some. It asks a unit's consumer for its floor only when the
// unit has messages, and less and less often while the floor does not move
// (a unit offline), from Every up to MaxWait. When units read by cursor
// (TrimConfig.Cursors), their floors come with their requests instead
// (Acked), and a hub that restarted learns a unit's at its next request.
//
// It keeps no state that matters: every hub runs one, and a message
// removed twice changes nothing.
type Trimmer struct {
	js  jetstream.JetStream
	cfg TrimConfig
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	units    map[string]*trimUnit
	lastFull time.Time
}

// TrimConfig tunes a Trimmer.
type TrimConfig struct {
	// Every is how often it sweeps (default 10s): an acknowledged message
	// stays about this long.
	Every time.Duration
	// MaxWait is the longest it waits before it looks again at a unit
	// whose acknowledgements did not move (default 5m).
	MaxWait time.Duration
	// FullEvery is how often it looks through the whole stream for
	// messages it was not told of (default 10m).
	FullEvery time.Duration
	// Cursors: units keep no consumer (UnitConsumersCursor); their floors
	// come from their fetch requests (Acked), not from consumers.
	Cursors bool
}

type trimUnit struct {
	sent    []uint64 // sequences told of (Sent), not removed yet
	floor   uint64   // removed up to here
	scanned uint64   // looked through up to here (full sweeps)
	acked   uint64   // the unit's floor, from its requests (Cursors)
	wait    time.Duration
	next    time.Time
}

// TrimSweep counts what one sweep did.
type TrimSweep struct {
	Full    bool // looked through the stream
	Units   int  // units with messages to remove, or in the stream (full)
	Checked int  // of which the sweep asked the consumer
	Trimmed int  // units some of whose messages it removed
	Removed int  // messages removed
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
	if cfg.FullEvery <= 0 {
		cfg.FullEvery = 10 * time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Trimmer{js: js, cfg: cfg, log: log, now: time.Now, units: map[string]*trimUnit{}}
}

// Sent tells the Trimmer that a message to unit is stored at seq in
// EDX_DELIVER.
func (t *Trimmer) Sent(unit string, seq uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.unit(unit)
	if seq > s.floor {
		s.sent = append(s.sent, seq)
	}
}

// Acked tells the Trimmer that unit has every message up to floor
// (TrimConfig.Cursors: its fetch request said so). A floor never goes
// down, and covers the unit's messages only.
func (t *Trimmer) Acked(unit string, floor uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.unit(unit)
	if floor > s.acked {
		s.acked = floor
		s.next = time.Time{} // due at the next sweep
	}
}

func (t *Trimmer) unit(u string) *trimUnit {
	s := t.units[u]
	if s == nil {
		s = &trimUnit{}
		t.units[u] = s
	}
	return s
}

// Run sweeps every Config.Every until ctx is done, and once more then, so
// that a hub stopped cleanly leaves nothing acknowledged that a consumer
// which forgot its state would deliver again.
func (t *Trimmer) Run(ctx context.Context) {
	tick := time.NewTicker(t.cfg.Every)
	defer tick.Stop()
	for {
		if _, err := t.Sweep(ctx); err != nil && ctx.Err() == nil {
			t.log.Warn("broker: removing acknowledged deliveries and notices", "err", err)
		}
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			t.mu.Lock()
			for _, s := range t.units {
				s.next = time.Time{} // every unit told of is due
			}
			t.mu.Unlock()
			if _, err := t.Sweep(sctx); err != nil {
				t.log.Warn("broker: removing acknowledged deliveries and notices", "err", err)
			}
			return
		case <-tick.C:
		}
	}
}

// Sweep removes, for each unit due, what its agent acknowledged: the
// messages it was told of, and, every FullEvery, any other.
func (t *Trimmer) Sweep(ctx context.Context) (TrimSweep, error) {
	var res TrimSweep
	st, err := t.js.Stream(ctx, protocol.StreamDeliver)
	if err != nil {
		return res, fmt.Errorf("broker: trim: %w", err)
	}
	now := t.now()
	t.mu.Lock()
	res.Full = t.lastFull.IsZero() || now.Sub(t.lastFull) >= t.cfg.FullEvery
	t.mu.Unlock()
	var inStream map[string]bool
	if res.Full {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			return res, fmt.Errorf("broker: trim: %w", err)
		}
		inStream = map[string]bool{}
		for subj := range info.State.Subjects {
			if u := protocol.UnitFromSubject(subj); u != "" {
				inStream[u] = true
			}
		}
	}
	type due struct {
		unit string
		s    *trimUnit
	}
	var todo []due
	t.mu.Lock()
	for u := range inStream {
		t.unit(u)
	}
	for u, s := range t.units {
		switch {
		case len(s.sent) == 0 && !inStream[u]:
			if res.Full {
				delete(t.units, u) // nothing of it left
			}
			continue
		case !res.Full && (len(s.sent) == 0 || now.Before(s.next)):
			continue
		}
		todo = append(todo, due{u, s})
	}
	res.Units = len(todo)
	t.mu.Unlock()

	var errs []error
	for _, d := range todo {
		if ctx.Err() != nil {
			break
		}
		res.Checked++
		n, err := t.trim(ctx, st, d.unit, d.s, res.Full)
		res.Removed += n
		if err != nil {
			errs = append(errs, err)
			if len(errs) > 10 {
				break
			}
		}
		t.mu.Lock()
		if n > 0 {
			res.Trimmed++
			d.s.wait = t.cfg.Every
		} else {
			d.s.wait = min(max(2*d.s.wait, t.cfg.Every), t.cfg.MaxWait)
		}
		d.s.next = now.Add(d.s.wait - t.cfg.Every/2) // due at the sweep after the wait
		t.mu.Unlock()
	}
	if res.Full && len(errs) == 0 {
		t.mu.Lock()
		t.lastFull = now
		t.mu.Unlock()
	}
	return res, errors.Join(errs...)
}

// trim removes a unit's messages up to its consumer's acknowledgement
// floor: those it was told of and, full, any other it finds. It returns
// how many it removed.
func (t *Trimmer) trim(ctx context.Context, st jetstream.Stream, unit string, s *trimUnit, full bool) (int, error) {
	floor, err := t.floor(ctx, unit, s)
	if err != nil || floor == 0 {
		return 0, err
	}
	t.mu.Lock()
	var seqs []uint64
	keep := s.sent[:0]
	for _, q := range s.sent {
		if q <= floor {
			seqs = append(seqs, q)
		} else {
			keep = append(keep, q)
		}
	}
	s.sent = keep
	from := s.scanned + 1
	t.mu.Unlock()
	n := 0
	for _, q := range seqs {
		if err := t.remove(ctx, st, q); err != nil {
			return n, fmt.Errorf("broker: trim %s: %w", unit, err)
		}
		n++
	}
	if full {
		// Whatever else of the unit's the floor passed: read to learn
		// its sequence (no message delete takes a subject).
		for seq := from; seq <= floor; {
			m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(protocol.DeliverSubject(unit)))
			if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && m.Sequence > floor {
				break
			}
			if err != nil {
				return n, fmt.Errorf("broker: trim %s: %w", unit, err)
			}
			if err := t.remove(ctx, st, m.Sequence); err != nil {
				return n, fmt.Errorf("broker: trim %s: %w", unit, err)
			}
			n++
			seq = m.Sequence + 1
		}
	}
	t.mu.Lock()
	s.floor = max(s.floor, floor)
	if full {
		s.scanned = floor
	}
	t.mu.Unlock()
	return n, nil
}

// floor returns what unit has acknowledged: its consumer's floor, or with
// cursors what its requests said (0: nothing known).
func (t *Trimmer) floor(ctx context.Context, unit string, s *trimUnit) (uint64, error) {
	if t.cfg.Cursors {
		t.mu.Lock()
		defer t.mu.Unlock()
		return s.acked, nil
	}
	c, err := t.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(unit))
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return 0, nil // kept until the unit has a consumer that reads them
	case err != nil:
		return 0, fmt.Errorf("broker: trim %s: %w", unit, err)
	}
	return c.CachedInfo().AckFloor.Stream, nil
}

// remove deletes the message at seq (without overwriting it: what a unit
// acknowledged is in the archive), gone already or not.
func (t *Trimmer) remove(ctx context.Context, st jetstream.Stream, seq uint64) error {
	err := st.DeleteMsg(ctx, seq)
	var api *jetstream.APIError
	if errors.Is(err, jetstream.ErrMsgNotFound) || errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeMessageNotFound {
		return nil
	}
	return err
}

// pending returns the sequences the Trimmer was told of for a unit and has
// not removed (for tests).
func (t *Trimmer) pending(unit string) []uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.units[unit]; s != nil {
		out := slices.Clone(s.sent)
		slices.Sort(out)
		return slices.Compact(out)
	}
	return nil
}
