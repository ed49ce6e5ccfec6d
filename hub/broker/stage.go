package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/edxhub/edx/pkg/protocol"
)

// Stage service limits.
const (
	// stageConsumerIdle deletes a unit's stage consumer that nobody pulls
	// from (a reader that died before deleting it).
	stageConsumerIdle = time.Minute
	// A unit's stage requests: a sustained rate and a burst. An agent
	// reads one delivery at a time; beyond this the service answers "retry
	// later", so that one unit cannot keep it from the others.
	stageRate  = 10 // per second
	stageBurst = 20
)

// StageService is the hub's side of protocol.GetStaged: it answers units'
// requests to open a staged delivery (protocol.StageSubject) by looking the
// object up in the stage store and (re)creating the unit's pull consumer of
// the requested slot, filtered on that object's chunks. Units have no other
// access to the stage store's stream, so none can list it, read another
// object's metadata, create a consumer of its own (durable or not), or delete
// another unit's consumer (see protocol/stage.go).
//
// Several hubs share the requests (a queue group); each request is
// independent.
type StageService struct {
	sub *nats.Subscription
	js  jetstream.JetStream
	obs jetstream.ObjectStore
	log *slog.Logger
	ctx context.Context

	mu     sync.Mutex
	limits map[string]*rate.Limiter
}

// StartStageService subscribes the hub's EDX connection to the units' stage
// requests; the hub's STAGE connection does the work. It runs until Stop.
func StartStageService(ctx context.Context, h *HubConn, log *slog.Logger) (*StageService, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	obs, err := h.Stage(ctx)
	if err != nil {
		return nil, err
	}
	s := &StageService{js: h.StageJS, obs: obs, log: log, ctx: context.WithoutCancel(ctx), limits: map[string]*rate.Limiter{}}
	s.sub, err = h.NC.QueueSubscribe(protocol.SubjectStagePrefix+">", "edx-hub-stage", s.handle)
	if err != nil {
		return nil, fmt.Errorf("broker: stage service: %w", err)
	}
	return s, nil
}

// Stop stops taking requests and lets the one in progress finish.
func (s *StageService) Stop() {
	if err := s.sub.Drain(); err != nil {
		s.sub.Unsubscribe()
	}
}

func (s *StageService) allow(unit string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limits[unit]
	if l == nil {
		l = rate.NewLimiter(stageRate, stageBurst)
		s.limits[unit] = l
	}
	return l.Allow()
}

func (s *StageService) handle(m *nats.Msg) {
	reply := func(r protocol.StageReply) {
		b, _ := json.Marshal(r)
		if err := m.Respond(b); err != nil {
			s.log.Debug("stage service: respond", "subject", m.Subject, "err", err)
		}
	}
	unit, req, err := protocol.ParseStageRequest(m)
	if validUnit(string(unit)) != nil {
		return // permissions let no such subject through
	}
	if !s.allow(string(unit)) {
		reply(protocol.StageReply{Error: "too many stage requests; retry later"})
		return
	}
	if err != nil {
		reply(protocol.StageReply{Error: err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	info, err := s.obs.GetInfo(ctx, req.Name)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		reply(protocol.StageReply{NotFound: true})
		return
	case err != nil:
		s.log.Warn("stage service: object info", "unit", unit, "name", req.Name, "err", err)
		reply(protocol.StageReply{Error: "stage store unavailable"})
		return
	case info.NUID == "" || (info.Opts != nil && info.Opts.Link != nil):
		reply(protocol.StageReply{NotFound: true})
		return
	}
	name := protocol.StageConsumer(string(unit), req.Slot)
	if err := s.js.DeleteConsumer(ctx, protocol.StageStream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Warn("stage service: delete consumer", "unit", unit, "consumer", name, "err", err)
		reply(protocol.StageReply{Error: "stage store unavailable"})
		return
	}
	_, err = s.js.CreateConsumer(ctx, protocol.StageStream, jetstream.ConsumerConfig{
		Name:              name,
		Description:       "a read of a staged delivery by " + string(unit),
		FilterSubject:     "$O." + protocol.StageBucket + ".C." + info.NUID,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: stageConsumerIdle,
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		s.log.Warn("stage service: create consumer", "unit", unit, "consumer", name, "err", err)
		reply(protocol.StageReply{Error: "stage store unavailable"})
		return
	}
	reply(protocol.StageReply{Consumer: name, Size: info.Size, Chunks: info.Chunks})
}
