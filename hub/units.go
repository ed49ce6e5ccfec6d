package hub

import (
	"context"
	"os"

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
	_, err = h.units.Import(ctx, host+":"+h.cfg.Index.Path, units)
	return err
}

// startService makes the hub's application service (hub/service), which
// the API and the web UI are faces of and which registers units, and signs
// into the UNITS account the revocations other hubs recorded.
func (h *Hub) startService(ctx context.Context) error {
	reg := &service.Registrar{JS: h.js, Keys: h.keys, Servers: h.accounts, Issuer: h.issuer, Events: h.events, Applied: h.follow,
		CredsTTL: h.cfg.NATS.CredsTTL, RootsFile: h.cfg.PKI.Trust, NATSURL: h.Info().NATSURL, LogKey: h.tlogVKey}
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
