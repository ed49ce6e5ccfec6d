package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/time/rate"

	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/tlog"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/witness"
)

// Every unit's agent witnesses the hub's transparency log (issue #11): it
// keeps the last checkpoint it verified, checks each new one against it with
// a consistency proof, and cosigns it with the unit's witness key, whose
// public half the unit registry holds. The hub's side:
//
//   - every WitnessConfig.Interval, when the log grew, the newest checkpoint
//     is offered: kept (tlog.CheckpointAt) and published on
//     protocol.SubjectCheckpoint to every unit;
//   - the witness service answers units on its own log's subjects
//     (protocol.WitnessSubject of its origin: every hub of a cluster has a
//     log of its own, and a request about it must reach this hub, the one
//     that holds it): the newest offered checkpoint with the cosignatures
//     kept for it, the log's key and the hub's signed statement of it
//     (container.SignLogKey: how an agent learns the log of a hub that
//     joined after it was registered), a consistency proof, a cosignature
//     to keep (verified with the unit's registered key,
//     tlog.AddCosignature), the registration of a witness key by the
//     unit's own signed statement (the registry is shared: any hub's log
//     takes it);
//   - the log serves each checkpoint with the cosignatures collected
//     (GET /log/checkpoint, /log/checkpoints/<size>).
//
// Bounds, so that no unit can flood the hub: a request is at most
// protocol.MaxWitnessRequest bytes (the service refuses larger ones; NATS
// bounds every message anyway); each unit has a rate (Rate, Burst); only
// the Recent checkpoints offered last may be cosigned, each unit's
// cosignature on one is kept once, and at most MaxCosignatures are kept per
// checkpoint (a quorum needs a few; every agent still verifies every
// checkpoint, which is what catches a fork). The storage is then at most
// MaxCosignatures small files per offered checkpoint.

// WitnessConfig configures the hub's side of witnessing.
type WitnessConfig struct {
	// Disabled turns the witness service off (the log still runs).
	Disabled bool `yaml:"disabled"`
	// Interval is how often the newest checkpoint is offered to the
	// witnesses, when the log grew (default 1m, at least 100ms).
	Interval time.Duration `yaml:"interval"`
	// MaxCosignatures is how many cosignatures are kept per checkpoint
	// (default 16).
	MaxCosignatures int `yaml:"max_cosignatures"`
	// Recent is how many of the checkpoints offered last may still be
	// cosigned (default 16).
	Recent int `yaml:"recent"`
	// Rate and Burst bound each unit's requests (default 2 a second, 20
	// at once).
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// SetDefaults fills in the defaults.
func (c *WitnessConfig) SetDefaults() {
	if c.Interval == 0 {
		c.Interval = time.Minute
	}
	if c.MaxCosignatures == 0 {
		c.MaxCosignatures = 16
	}
	if c.Recent == 0 {
		c.Recent = 16
	}
	if c.Rate == 0 {
		c.Rate = 2
	}
	if c.Burst == 0 {
		c.Burst = 20
	}
}

// Validate checks the configuration.
func (c *WitnessConfig) Validate() error {
	switch {
	case c.Interval < 100*time.Millisecond:
		return fmt.Errorf("witness: interval %s: want at least 100ms", c.Interval)
	case c.MaxCosignatures < 1 || c.MaxCosignatures > 4096:
		return fmt.Errorf("witness: max_cosignatures %d: want 1 to 4096", c.MaxCosignatures)
	case c.Recent < 1 || c.Recent > 1024:
		return fmt.Errorf("witness: recent %d: want 1 to 1024", c.Recent)
	case c.Rate <= 0 || c.Rate > 1000 || c.Burst < 1 || c.Burst > 10000:
		return fmt.Errorf("witness: rate %v, burst %d: want a positive rate up to 1000 and a burst of 1 to 10000", c.Rate, c.Burst)
	}
	return nil
}

// witnessService is the hub's side of witnessing.
type witnessService struct {
	h    *Hub
	cfg  WitnessConfig
	log  *tlog.Log
	vkey string // the log's verifier key
	sub  *nats.Subscription

	requests     *prometheus.CounterVec
	offeredSize  prometheus.Gauge
	cosignatures *prometheus.CounterVec

	mu      sync.Mutex
	offered []uint64 // sizes offered, newest last (at most cfg.Recent)
	limits  map[document.UnitID]*rate.Limiter
}

// startWitness starts the witness service of the hub's log (startEvidence
// opened it).
func (h *Hub) startWitness(ctx context.Context) error {
	if h.cfg.Witness.Disabled {
		return nil
	}
	if h.tlog == nil {
		h.log.Warn("witness: no transparency log (tlog.disabled): the units' agents witness nothing")
		return nil
	}
	w := &witnessService{h: h, cfg: h.cfg.Witness, log: h.tlog, vkey: h.tlogVKey, limits: map[document.UnitID]*rate.Limiter{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_witness_requests_total",
			Help: "Requests of units to the witness service, by operation and result (ok or a reason code)."}, []string{"op", "result"}),
		offeredSize: prometheus.NewGauge(prometheus.GaugeOpts{Name: "edx_hub_witness_offered_size",
			Help: "The size of the newest checkpoint offered to the witnesses."}),
		cosignatures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_witness_cosignatures_total",
			Help: "Cosignatures received, by result: kept, enough (the checkpoint has max_cosignatures), refused."}, []string{"result"}),
	}
	h.reg.MustRegister(w.requests, w.offeredSize, w.cosignatures)
	var err error
	// This hub's log only: another hub's log is another subject.
	if w.sub, err = h.nc.Subscribe(protocol.WitnessServiceSubject(w.log.Origin()), w.handle); err != nil {
		return fmt.Errorf("witness service: %w", err)
	}
	sub := w.sub
	h.closers = append(h.closers, func() {
		if err := sub.Drain(); err != nil {
			sub.Unsubscribe()
		}
	})
	h.witness = w
	return nil
}

// run offers the newest checkpoint every interval, when the log grew, until
// ctx ends.
func (w *witnessService) run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if err := w.offer(ctx); err != nil && ctx.Err() == nil {
			w.h.log.Warn("witness: offering the newest checkpoint", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// offer keeps the newest checkpoint and publishes it to every witness,
// unless it was offered already or the log is empty.
func (w *witnessService) offer(ctx context.Context) error {
	size, _, err := w.log.Checkpoint(ctx)
	if err != nil || size == 0 {
		return err
	}
	w.mu.Lock()
	last := uint64(0)
	if n := len(w.offered); n > 0 {
		last = w.offered[n-1]
	}
	w.mu.Unlock()
	if size == last {
		return nil
	}
	cp, err := w.log.CheckpointAt(ctx, size)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.offered = append(w.offered, size)
	if len(w.offered) > w.cfg.Recent {
		w.offered = slices.Delete(w.offered, 0, len(w.offered)-w.cfg.Recent)
	}
	w.mu.Unlock()
	w.offeredSize.Set(float64(size))
	if err := w.h.nc.PublishMsg(protocol.CheckpointMsg(cp)); err != nil {
		return fmt.Errorf("publish checkpoint %d: %w", size, err)
	}
	w.h.log.Debug("witness: checkpoint offered", "size", size)
	return nil
}

// newest is the newest offered size (0 before the first).
func (w *witnessService) newest() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.offered) == 0 {
		return 0
	}
	return w.offered[len(w.offered)-1]
}

func (w *witnessService) isOffered(size uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Contains(w.offered, size)
}

func (w *witnessService) allow(u document.UnitID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.limits[u]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(w.cfg.Rate), w.cfg.Burst)
		w.limits[u] = l
	}
	return l.Allow()
}

// refusal is a reply that refuses a request.
func refusal(c reason.Code, format string, args ...any) *protocol.WitnessReply {
	return &protocol.WitnessReply{Error: &reason.Reason{Code: c, Message: fmt.Sprintf(format, args...)}}
}

func (w *witnessService) handle(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unit, req, err := protocol.ParseWitnessRequest(m, w.log.Origin())
	var rep *protocol.WitnessReply
	op := "invalid"
	switch {
	case err != nil: // malformed, or about another log
		rep = refusal(reason.WitnessInvalid, "%v", err)
	case !w.allow(unit):
		op = string(req.Op)
		rep = refusal(reason.WitnessRate, "more than %v requests a second from unit %s: try again later", w.cfg.Rate, unit)
	default:
		op = string(req.Op)
		rep = w.answer(ctx, unit, req)
	}
	result := "ok"
	if rep.Error != nil {
		result = string(rep.Error.Code)
		lvl := w.h.log.Debug
		if rep.Error.Code == reason.WitnessBeyondLog || rep.Error.Code == reason.WitnessCosignature || rep.Error.Code == reason.WitnessKeyMismatch {
			lvl = w.h.log.Warn
		}
		lvl("witness: request refused", "unit", unit, "op", op, "reason", rep.Error.Code, "detail", rep.Error.Message)
	}
	w.requests.WithLabelValues(op, result).Inc()
	b, _ := json.Marshal(rep)
	if err := m.Respond(b); err != nil {
		w.h.log.Debug("witness: reply", "unit", unit, "err", err)
	}
}

func (w *witnessService) answer(ctx context.Context, unit document.UnitID, req *protocol.WitnessRequest) *protocol.WitnessReply {
	switch req.Op {
	case protocol.WitnessCheckpoint:
		size := w.newest()
		if size == 0 {
			return refusal(reason.WitnessUnavailable, "no checkpoint offered yet")
		}
		cp, err := w.log.Cosigned(ctx, size)
		if err != nil {
			return refusal(reason.WitnessUnavailable, "checkpoint %d: %v", size, err)
		}
		return &protocol.WitnessReply{Checkpoint: cp, LogKey: w.vkey, LogStatement: w.h.tlogStatement}
	case protocol.WitnessConsistency:
		size, _, err := w.log.Checkpoint(ctx)
		switch {
		case err != nil:
			return refusal(reason.WitnessUnavailable, "%v", err)
		case req.From > req.To:
			return refusal(reason.WitnessInvalid, "a proof from %d to the smaller %d", req.From, req.To)
		case req.To > size:
			rep := refusal(reason.WitnessBeyondLog, "the log has %d entries, not %d", size, req.To)
			rep.Size = size
			return rep
		case req.From == 0 || req.From == req.To:
			return &protocol.WitnessReply{}
		}
		p, err := w.log.ConsistencyProof(ctx, req.From, req.To)
		if err != nil {
			return refusal(reason.WitnessUnavailable, "%v", err)
		}
		return &protocol.WitnessReply{Proof: p}
	case protocol.WitnessCosign:
		return w.cosign(ctx, unit, req)
	case protocol.WitnessRegister:
		return w.register(ctx, unit, req.Binding)
	}
	return refusal(reason.WitnessInvalid, "unknown op %q", req.Op)
}

// cosign keeps a unit's cosignature on an offered checkpoint, verified with
// the unit's registered witness key.
func (w *witnessService) cosign(ctx context.Context, unit document.UnitID, req *protocol.WitnessRequest) *protocol.WitnessReply {
	refused := func(rep *protocol.WitnessReply) *protocol.WitnessReply {
		w.cosignatures.WithLabelValues("refused").Inc()
		return rep
	}
	if !w.isOffered(req.Size) {
		return refused(refusal(reason.WitnessCheckpoint, "checkpoint %d is not among the %d offered last", req.Size, w.cfg.Recent))
	}
	if len(req.Cosignature) > 1024 {
		return refused(refusal(reason.WitnessInvalid, "a cosignature line of %d bytes", len(req.Cosignature)))
	}
	u, err := w.h.units.Get(ctx, unit)
	if err != nil {
		return refused(refusal(reason.WitnessUnavailable, "unit %s: %v", unit, err))
	}
	if u.WitnessKey == "" {
		return refused(refusal(reason.WitnessNoKey, "unit %s has no witness key registered", unit))
	}
	v, err := witness.NewVerifier(u.WitnessKey)
	if err != nil {
		return refused(refusal(reason.WitnessUnavailable, "unit %s's registered witness key: %v", unit, err))
	}
	cp, err := w.log.Cosigned(ctx, req.Size)
	if err != nil {
		return refused(refusal(reason.WitnessUnavailable, "checkpoint %d: %v", req.Size, err))
	}
	have, mine := cosignatureLines(cp, v)
	if mine {
		return &protocol.WitnessReply{}
	}
	if have >= w.cfg.MaxCosignatures {
		w.cosignatures.WithLabelValues("enough").Inc()
		return &protocol.WitnessReply{}
	}
	if err := w.log.AddCosignature(ctx, req.Size, []byte(req.Cosignature), v); err != nil {
		return refused(refusal(reason.WitnessCosignature, "%v", err))
	}
	w.cosignatures.WithLabelValues("kept").Inc()
	return &protocol.WitnessReply{Kept: true}
}

// cosignatureLines counts the cosignature lines on a kept checkpoint (every
// signature line after the log's own) and reports whether one is by v's
// key.
func cosignatureLines(cp []byte, v note.Verifier) (n int, mine bool) {
	_, sigs, ok := bytes.Cut(cp, []byte("\n\n"))
	if !ok {
		return 0, false
	}
	prefix := "— " + v.Name() + " "
	lines := strings.Split(strings.TrimSuffix(string(sigs), "\n"), "\n")
	for i, l := range lines {
		if i == 0 { // the log's signature
			continue
		}
		n++
		mine = mine || strings.HasPrefix(l, prefix)
	}
	return n, mine
}

// register records a unit's witness key from its signed statement: the
// statement must verify now, be the unit's, be signed by the unit's
// registered certificate, and name a witness key of the unit's name. A
// unit with no key gets this one; a unit with this key keeps it (and the
// statement, when it had none); a unit with another key keeps that one: the
// operator replaces it (edx unit rotate --witness-key).
func (w *witnessService) register(ctx context.Context, unit document.UnitID, binding []byte) *protocol.WitnessReply {
	st, info, rs := container.VerifyWitnessKey(binding, container.Options{Trust: w.h.trust, At: w.h.cfg.Clock()})
	if len(rs) > 0 {
		return refusal(reason.WitnessInvalid, "the witness key statement: %v", rs)
	}
	if st.Unit != unit {
		return refusal(reason.WitnessInvalid, "the statement is unit %s's", st.Unit)
	}
	if _, err := service.CheckWitnessKey(unit, st.Key); err != nil {
		return refusal(reason.WitnessInvalid, "%v", err)
	}
	_, err := w.h.svc.ChangeUnit(ctx, unit, func(u registry.Unit, exists bool) (registry.Unit, error) {
		switch {
		case !exists:
			return u, service.NotRegistered(unit)
		case u.CertSerial != "" && !strings.EqualFold(u.CertSerial, info.SignerSerial):
			return u, fmt.Errorf("%w: %w: the statement is signed by certificate %s, the unit's registered certificate is %s",
				service.ErrInvalid, errWitness(reason.WitnessInvalid), info.SignerSerial, u.CertSerial)
		case u.WitnessKey != "" && u.WitnessKey != st.Key:
			return u, fmt.Errorf("%w: %w: unit %s has another witness key registered; the operator replaces it (edx unit rotate %s --witness-key FILE)",
				service.ErrConflict, errWitness(reason.WitnessKeyMismatch), unit, unit)
		case u.WitnessKey == st.Key && len(u.WitnessBinding) > 0:
			return u, service.ErrUnchanged
		}
		u.WitnessKey, u.WitnessBinding, u.Event = st.Key, binding, eventWitnessKey
		return u, nil
	})
	var we witnessErr
	switch {
	case err == nil:
		w.h.log.Info("witness key registered by the unit's agent", "unit", unit)
	case errors.Is(err, service.ErrUnchanged):
	case errors.As(err, &we):
		return refusal(we.code, "%v", err)
	case errors.Is(err, service.ErrNotFound):
		return refusal(reason.WitnessInvalid, "%v", err)
	default:
		return refusal(reason.WitnessUnavailable, "%v", err)
	}
	return &protocol.WitnessReply{}
}

// eventWitnessKey is the unit event of a witness key registered by the
// unit's agent.
const eventWitnessKey = "witness_key"

// witnessErr carries a witness reason code through a registry change.
type witnessErr struct{ code reason.Code }

func (e witnessErr) Error() string { return string(e.code) }

func errWitness(c reason.Code) error { return witnessErr{c} }
