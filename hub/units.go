package hub

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/hub/service"
)

// startRegistry opens the unit registry every hub shares and copies into it
// (once, see registry.Import) the units of this hub's index from before the
// registry.
func (h *Hub) startRegistry(ctx context.Context) error {
	var err error
	if h.units, err = registry.Open(ctx, h.js, h.cfg.NATS.Buckets, h.arch, h.log.With("component", "registry")); err != nil {
		return err
	}
	h.closers = append(h.closers, h.units.Close)
	old, err := h.ix.ListUnits(ctx)
	if err != nil {
		return err
	}
	units := make([]registry.Unit, len(old))
	for i, u := range old {
		units[i] = registry.Unit{Unit: u}
	}
	host, _ := os.Hostname()
	return h.untilReady(ctx, "the unit registry", func() error {
		_, err := h.units.Import(ctx, host+":"+h.cfg.Index.Path, units)
		return err
	})
}

// startService makes the hub's application service (hub/service), which
// the API and the web UI are faces of and which registers units, and signs
// into the UNITS account the revocations other hubs recorded.
func (h *Hub) startService(ctx context.Context) error {
	reg := &service.Registrar{JS: h.js, Keys: h.keys, Servers: h.accounts, Issuer: h.issuer, Events: h.events, Applied: h.follow,
		CredsTTL: h.cfg.NATS.CredsTTL, RootsFile: h.cfg.PKI.Trust, NATSURL: h.Info().NATSURL, LogKey: h.tlogVKey,
		UnitConsumers: h.cfg.NATS.Streams.UnitConsumers}
	d := service.Deps{Index: h.ix, Archive: h.arch, Registry: h.units, Accounts: h.auth, Trust: h.trust, Registrar: reg,
		MaxVerifications: h.cfg.HTTP.MaxVerifications, CursorKey: h.auth.CursorKey(), Now: h.cfg.Clock, Log: h.log.With("component", "service")}
	reg.LogKeys = func(ctx context.Context) []string {
		logs, err := h.units.Logs(ctx)
		if err != nil {
			h.log.Warn("registry: the hubs' logs not read: a unit bundle carries this hub's log key only", "err", err)
		}
		var keys []string
		for _, l := range logs {
			keys = append(keys, l.VKey)
		}
		return keys
	}
	if h.tlog != nil {
		d.Evidence = &hubEvidence{h: h}
		reg.Logged = h.logUnit
	}
	var err error
	if h.svc, err = service.New(d); err != nil {
		return err
	}
	if err := h.svc.SyncRevocations(ctx); err != nil {
		h.log.Error("nats: applying the revocations recorded by other hubs", "err", err)
	}
	if err := h.ensureUnitConsumers(ctx, true); err != nil {
		return err
	}
	return nil
}

// watchRevocations runs the service's SyncRevocations after each change of
// the registry until ctx is done.
func (h *Hub) watchRevocations(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.units.Changed():
		}
		if err := h.svc.SyncRevocations(ctx); err != nil && ctx.Err() == nil {
			h.log.Error("nats: applying the revocations recorded by other hubs", "err", err)
		}
	}
}

// ensureUnitConsumers gives every registered unit its consumer of
// EDX_DELIVER where it lacks one: a server that restarted forgot those kept
// in memory (nats.streams.unit_consumers), and an earlier version's are
// replaced. The messages wait in the stream meanwhile. With full, it also
// replaces consumers configured otherwise or led by no server; without, it
// only looks at their names, which costs far less.
func (h *Hub) ensureUnitConsumers(ctx context.Context, full bool) error {
	units := h.units.List()
	ids := make([]string, 0, len(units))
	for _, u := range units {
		ids = append(ids, string(u.ID))
	}
	ensure := broker.CreateMissingUnitConsumers
	if full {
		ensure = broker.EnsureUnitConsumers
	}
	n, err := ensure(ctx, h.js, ids, h.cfg.NATS.Streams.UnitConsumers)
	if n > 0 {
		h.log.Info("nats: units' consumers created", "count", n, "units", len(ids), "storage", h.cfg.NATS.Streams.UnitConsumers)
	}
	if err != nil {
		return fmt.Errorf("nats: units' consumers: %w", err)
	}
	return nil
}

// unitConsumersCheck is how often a running hub makes sure every unit has
// its consumer (a NATS server that restarted under it forgot those kept in
// memory), from the consumers' names (some ten requests for 10,000 units);
// every unitConsumersFull checks it also replaces those configured
// otherwise or, in a cluster, whose one replica is on a server that is down
// (a listing of every consumer's state: some 40 requests for 10,000 units).
// It also checks fully when its connection comes back.
const (
	unitConsumersCheck = time.Minute
	unitConsumersFull  = 10
)

// keepUnitConsumers runs ensureUnitConsumers every unitConsumersCheck and
// after each reconnection, until ctx is done.
func (h *Hub) keepUnitConsumers(ctx context.Context) {
	t := time.NewTicker(unitConsumersCheck)
	defer t.Stop()
	for n := 1; ; n++ {
		full := n%unitConsumersFull == 0
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.reconnected:
			full = true
		}
		if err := h.ensureUnitConsumers(ctx, full); err != nil && ctx.Err() == nil {
			h.log.Warn("nats: units' consumers", "err", err)
		}
	}
}
