package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/protocol"
)

// UnitLimits bound what each unit's NATS user may do. The server enforces
// them: subscriptions and payload through the UNITS account's limits (which
// bind every credential, whenever it was issued) and the unit's own
// credential; the units' connections together through the account's
// connection limit. NATS has no limit of connections per user: the hub
// enforces MaxConnectionsPerUnit by watching the server's connect events and
// closing a unit's oldest connections beyond it (ConnLimiter).
//
// nats-server (v2.15) does not enforce the "data" limit of account and user
// JWTs, so none is set: what a unit may store is bounded by the streams'
// per-unit limits instead (StreamOptions: submit_unit_pending,
// status_unit_pending, upload_unit_quota), and a unit may publish nowhere
// else but to the hub's stage service.
type UnitLimits struct {
	// MaxSubscriptions bounds each connection's subscriptions (default
	// 64; an agent uses fewer than ten).
	MaxSubscriptions int64 `yaml:"max_subscriptions"`
	// MaxPayload bounds each message a unit publishes (default
	// protocol.InlineLimit + 64 KiB: an inline submission and its
	// headers). Larger containers go through the upload stream in chunks.
	MaxPayload int64 `yaml:"max_payload"`
	// MaxConnections bounds the connections of all units together
	// (default 10,000).
	MaxConnections int64 `yaml:"max_connections"`
	// MaxConnectionsPerUnit bounds one unit's connections (default 4: its
	// agent, and a command-line client or two).
	MaxConnectionsPerUnit int `yaml:"max_connections_per_unit"`
}

// DefaultUnitLimits are the defaults of UnitLimits.
var DefaultUnitLimits = UnitLimits{
	MaxSubscriptions:      64,
	MaxPayload:            protocol.InlineLimit + 64<<10,
	MaxConnections:        10_000,
	MaxConnectionsPerUnit: 4,
}

// minUnitPayload must pass: an inline submission with its headers, an
// upload chunk.
const minUnitPayload = protocol.InlineLimit + 16<<10

// SetDefaults fills in what is zero.
func (l *UnitLimits) SetDefaults() {
	d := DefaultUnitLimits
	if l.MaxSubscriptions == 0 {
		l.MaxSubscriptions = d.MaxSubscriptions
	}
	if l.MaxPayload == 0 {
		l.MaxPayload = d.MaxPayload
	}
	if l.MaxConnections == 0 {
		l.MaxConnections = d.MaxConnections
	}
	if l.MaxConnectionsPerUnit == 0 {
		l.MaxConnectionsPerUnit = d.MaxConnectionsPerUnit
	}
}

// Validate reports the first problem with defaulted limits.
func (l *UnitLimits) Validate() error {
	switch {
	case l.MaxSubscriptions < 8:
		return fmt.Errorf("broker: units: max_subscriptions %d: want at least 8", l.MaxSubscriptions)
	case l.MaxPayload < minUnitPayload:
		return fmt.Errorf("broker: units: max_payload %d: want at least %d (an inline submission)", l.MaxPayload, minUnitPayload)
	case l.MaxPayload > 1<<30:
		return fmt.Errorf("broker: units: max_payload %d: too large", l.MaxPayload)
	case l.MaxConnectionsPerUnit < 1:
		return fmt.Errorf("broker: units: max_connections_per_unit %d: want at least 1", l.MaxConnectionsPerUnit)
	case l.MaxConnections < int64(l.MaxConnectionsPerUnit):
		return fmt.Errorf("broker: units: max_connections %d: want at least max_connections_per_unit", l.MaxConnections)
	}
	return nil
}

func (l *UnitLimits) natsLimits() jwt.NatsLimits {
	return jwt.NatsLimits{Subs: l.MaxSubscriptions, Data: jwt.NoLimit, Payload: l.MaxPayload}
}

// ConnLimiter closes a unit's oldest connections beyond its limit. It
// follows the connect and disconnect events of the UNITS account on the
// system account, which every server of a cluster publishes, and asks the
// server that holds a connection to close it (the $SYS kick request). A
// unit's connections are told apart by the name in their user JWT (the unit
// id, IssueUnitCreds), whichever credential they use. It also lists the
// units' connections at start and every connResync, so that it misses none
// (connections from before the hub started, a lost event), and again
// whenever its connection comes back.
type ConnLimiter struct {
	nc    *nats.Conn
	units string // the UNITS account's public key
	max   int
	log   *slog.Logger
	stop  chan struct{}
	done  chan struct{}

	kicked string // the inbox of kick answers
	subs   []*nats.Subscription

	mu    sync.Mutex
	conns map[string]map[connRef]time.Time // unit → its connections → start
	// units of the user JWTs seen, so that each is decoded (and its
	// signature checked) once, not at every listing; rebuilt at each.
	jwts map[string]string
}

type connRef struct {
	server string
	cid    uint64
}

// connResync is how often ConnLimiter lists every unit connection. A
// listing costs each server work for every connection (it decodes and
// checks the signature of every user JWT), some two seconds of a core for
// 10,000 units: the connect and disconnect events keep the count between
// listings, which only catch what an event missed.
const connResync = 10 * time.Minute

// StartConnLimiter starts limiting each unit to max connections, through
// the hub's system-account connection sys (Server.SystemConn, ConnectSystem),
// which it shares with the account pushes: Stop leaves it open.
func StartConnLimiter(ctx context.Context, sys *SystemConn, keys *Keys, max int, log *slog.Logger) (*ConnLimiter, error) {
	if max < 1 {
		return nil, fmt.Errorf("broker: connection limit %d: want at least 1", max)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc := sys.nc
	l := &ConnLimiter{nc: nc, units: keys.UnitsAccount(), max: max, log: log,
		stop: make(chan struct{}), done: make(chan struct{}), conns: map[string]map[connRef]time.Time{}, jwts: map[string]string{}}
	fail := func(err error) (*ConnLimiter, error) {
		l.unsubscribe()
		return nil, fmt.Errorf("broker: connection limiter: %w", err)
	}
	for _, ev := range []struct {
		subject string
		handle  nats.MsgHandler
	}{
		{fmt.Sprintf(connectEventSubject, l.units), l.connected},
		{fmt.Sprintf(disconnectEventSubject, l.units), l.disconnected},
	} {
		sub, err := nc.Subscribe(ev.subject, ev.handle)
		if err != nil {
			return fail(err)
		}
		l.subs = append(l.subs, sub)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The server answers a kick (it acts only on a request with a reply
	// subject); an answer with an error is logged.
	l.kicked = nats.NewInbox()
	sub, err := nc.Subscribe(l.kicked, func(m *nats.Msg) {
		var resp struct {
			Error *server.ApiError `json:"error"`
		}
		if json.Unmarshal(m.Data, &resp) == nil && resp.Error != nil {
			l.log.Warn("connection limiter: kick refused", "err", resp.Error.Description)
		}
	})
	if err != nil {
		return fail(err)
	}
	l.subs = append(l.subs, sub)
	if err := nc.FlushWithContext(fctx); err != nil {
		return fail(err)
	}
	if err := l.resync(fctx); err != nil {
		l.unsubscribe()
		return nil, err
	}
	go l.run()
	return l, nil
}

// Stop stops limiting; the system connection stays open.
func (l *ConnLimiter) Stop() {
	close(l.stop)
	<-l.done
	l.unsubscribe()
}

func (l *ConnLimiter) unsubscribe() {
	for _, sub := range l.subs {
		sub.Unsubscribe()
	}
	l.subs = nil
}

func (l *ConnLimiter) run() {
	defer close(l.done)
	t := time.NewTicker(connResync)
	defer t.Stop()
	// Events published while the connection was down are lost: list the
	// connections again as soon as it is back (a server restart).
	reconnected := l.nc.StatusChanged(nats.CONNECTED)
	defer l.nc.RemoveStatusListener(reconnected)
	for {
		select {
		case <-l.stop:
			return
		case _, ok := <-reconnected:
			if !ok {
				reconnected = nil
				continue
			}
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := l.resync(ctx); err != nil {
			l.log.Warn("connection limiter: list connections", "err", err)
		}
		cancel()
	}
}

// unitOf is the unit a connection's user JWT names, "" for none: as decoded
// before, or decoded now (and remembered, when remember is not nil).
func (l *ConnLimiter) unitOf(userJWT string, remember map[string]string) string {
	l.mu.Lock()
	unit, ok := l.jwts[userJWT]
	l.mu.Unlock()
	if !ok {
		unit = unitOf(userJWT)
	}
	if remember != nil && userJWT != "" {
		remember[userJWT] = unit
	}
	return unit
}

// unitOf is the unit a connection's user JWT names, "" for none.
func unitOf(userJWT string) string {
	uc, err := jwt.DecodeUserClaims(userJWT)
	if err != nil || validUnit(uc.Name) != nil {
		return ""
	}
	return uc.Name
}

func (l *ConnLimiter) connected(m *nats.Msg) {
	var ev server.ConnectEventMsg
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return
	}
	unit := l.unitOf(ev.Client.Jwt, nil)
	if unit == "" || ev.Client.Account != l.units {
		return
	}
	start := ev.Time
	if ev.Client.Start != nil {
		start = *ev.Client.Start
	}
	l.mu.Lock()
	if l.conns[unit] == nil {
		l.conns[unit] = map[connRef]time.Time{}
	}
	l.conns[unit][connRef{ev.Server.ID, ev.Client.ID}] = start
	kick := l.excessLocked(unit)
	l.mu.Unlock()
	l.kick(unit, kick)
}

func (l *ConnLimiter) disconnected(m *nats.Msg) {
	var ev server.DisconnectEventMsg
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return
	}
	unit := l.unitOf(ev.Client.Jwt, nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns[unit], connRef{ev.Server.ID, ev.Client.ID})
	if len(l.conns[unit]) == 0 {
		delete(l.conns, unit)
	}
}

// excessLocked removes and returns a unit's oldest connections beyond the
// limit: the newest stay, so that an agent that reconnects while the server
// still holds its broken connection keeps the new one.
func (l *ConnLimiter) excessLocked(unit string) []connRef {
	cs := l.conns[unit]
	if len(cs) <= l.max {
		return nil
	}
	refs := make([]connRef, 0, len(cs))
	for r := range cs {
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool {
		if a, b := cs[refs[i]], cs[refs[j]]; !a.Equal(b) {
			return a.Before(b)
		}
		return refs[i].cid < refs[j].cid
	})
	refs = refs[:len(refs)-l.max]
	for _, r := range refs {
		delete(cs, r)
	}
	return refs
}

func (l *ConnLimiter) kick(unit string, refs []connRef) {
	for _, r := range refs {
		l.log.Warn("unit over its connection limit: closing its oldest connection", "unit", unit, "limit", l.max, "server", r.server, "cid", r.cid)
		req, _ := json.Marshal(server.KickClientReq{CID: r.cid})
		if err := l.nc.PublishRequest(fmt.Sprintf(kickSubject, r.server), l.kicked, req); err != nil {
			l.log.Warn("connection limiter: kick", "unit", unit, "err", err)
		}
	}
}

// resync lists the units' connections on every server and applies the
// limit to them.
func (l *ConnLimiter) resync(ctx context.Context) error {
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := l.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return fmt.Errorf("broker: connection limiter: %w", err)
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(server.ConnzEventOptions{ConnzOptions: server.ConnzOptions{Account: l.units, Username: true, Limit: 1 << 20}})
	if err := l.nc.PublishRequest(connzSubject, inbox, req); err != nil {
		return fmt.Errorf("broker: connection limiter: %w", err)
	}
	// Every server answers; collect until they fall silent.
	seen := map[string]map[connRef]time.Time{}
	jwts := map[string]string{}
	answered := false
	wait := 2 * time.Second
	for {
		t := time.NewTimer(wait)
		select {
		case m := <-replies:
			t.Stop()
			var resp struct {
				Server *server.ServerInfo `json:"server"`
				Data   *server.Connz      `json:"data"`
			}
			if err := json.Unmarshal(m.Data, &resp); err != nil || resp.Server == nil || resp.Data == nil {
				continue
			}
			answered = true
			for _, c := range resp.Data.Conns {
				if unit := l.unitOf(c.JWT, jwts); unit != "" {
					if seen[unit] == nil {
						seen[unit] = map[connRef]time.Time{}
					}
					seen[unit][connRef{resp.Server.ID, c.Cid}] = c.Start
				}
			}
			wait = 250 * time.Millisecond
			continue
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		break
	}
	if !answered {
		return errors.New("broker: connection limiter: no server listed its connections")
	}
	l.mu.Lock()
	l.conns, l.jwts = seen, jwts
	kicks := map[string][]connRef{}
	for unit := range seen {
		if k := l.excessLocked(unit); len(k) > 0 {
			kicks[unit] = k
		}
	}
	l.mu.Unlock()
	for unit, k := range kicks {
		l.kick(unit, k)
	}
	return nil
}
