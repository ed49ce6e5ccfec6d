package hub

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// A unit's lifecycle. Its record lives in the unit registry every hub shares
// (hub/registry, the EDX_UNITS bucket); every change is archived under
// units/<ID>/ as the unit's full record (with Event and At), so that reindex
// rebuilds the index's units from the archive; the NATS side is the UNITS
// account's revocations (kept in the keys directory, recorded in the units'
// records so that every hub signs them all, and pushed to the servers). A
// unit holds at most one set of valid NATS credentials: the public keys in
// NATSUsers.
//
//	registered  edx unit add (again: the old credentials are revoked)
//	rotated     edx unit rotate: new credentials, the old revoked; with
//	            --cert a new key and certificate too
//	disabled    edx unit disable: credentials revoked; documents from and
//	            to the unit are refused (sender.disabled, recipient.disabled)
//	enabled     edx unit enable: allowed again, with new credentials (the
//	            old ones stay revoked)
//	revoked     the hub found the unit's certificate on a CRL: its
//	            credentials are revoked; rotate with a new certificate

// Unit events, in the archived records.
const (
	eventRegistered = "registered"
	eventRotated    = "rotated"
	eventDisabled   = "disabled"
	eventEnabled    = "enabled"
	eventRevoked    = "revoked"
)

// accountPusher gives the NATS servers a new account JWT: the embedded
// server (broker.Server) or an external cluster (broker.SystemConn).
type accountPusher interface {
	PushAccount(ctx context.Context, accountJWT string) error
}

// revokeUsers revokes NATS users of the UNITS account at at, together with
// every revocation the registry records (made through any hub: an account
// JWT this hub pushes must not undo another hub's), and makes the servers
// apply it: their connections close, they cannot connect again. A push that
// failed before is made again even when the keys already hold the
// revocation.
func (h *Hub) revokeUsers(ctx context.Context, pubs []string, at time.Time) error {
	if len(pubs) == 0 {
		return nil
	}
	revs := h.units.Revocations(at)
	for _, p := range pubs {
		if t, ok := revs[p]; !ok || at.After(t) {
			revs[p] = at
		}
	}
	tok, _, err := h.keys.RevokeUnitUsersAt(revs)
	if err != nil {
		return err
	}
	if err := h.pushUnits(ctx, tok, pubs); err != nil {
		return err
	}
	h.log.Info("nats users revoked", "users", pubs)
	return nil
}

// pushUnits gives the NATS servers the UNITS account JWT.
func (h *Hub) pushUnits(ctx context.Context, tok string, pubs []string) error {
	switch err := h.accounts.PushAccount(ctx, tok); {
	case errors.Is(err, broker.ErrAccountNotLoaded):
		// No server holds the account, so no revoked user is connected;
		// a MEMORY resolver will load its configured JWT, though.
		h.log.Warn("nats: the servers have not loaded the UNITS account; with a MEMORY resolver they will load the JWT of their configuration, "+
			"without this revocation: use a full resolver (edx-hub nats-config)", "users", pubs)
	case err != nil:
		return fmt.Errorf("%w: nats: %v", api.ErrUnavailable, err)
	}
	return nil
}

// syncRevocations signs into the UNITS account the revocations other hubs
// recorded in the registry that this hub's keys lack, and pushes it when
// that changed it: at start, and whenever the registry changes.
func (h *Hub) syncRevocations(ctx context.Context) error {
	revs := h.units.Revocations(time.Now())
	if len(revs) == 0 {
		return nil
	}
	tok, changed, err := h.keys.RevokeUnitUsersAt(revs)
	if err != nil || !changed {
		return err
	}
	return h.pushUnits(ctx, tok, nil)
}

// watchRevocations runs syncRevocations after each change of the registry
// until ctx is done.
func (h *Hub) watchRevocations(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.units.Changed():
		}
		if err := h.syncRevocations(ctx); err != nil && ctx.Err() == nil {
			h.log.Error("nats: applying the revocations recorded by other hubs", "err", err)
		}
	}
}

// withRevoked records the revocation of a unit's users in force, at at.
func withRevoked(u registry.Unit, at time.Time) []registry.Revocation {
	out := slices.Clone(u.Revoked)
	for _, p := range u.NATSUsers {
		out = append(out, registry.Revocation{Key: p, At: at, Expires: u.CredsExpire})
	}
	return out
}

// issueCreds issues new NATS credentials for a unit, with the configured
// expiry, and returns them with their user key and expiry.
func (h *Hub) issueCreds(id document.UnitID) (creds []byte, pub string, expires time.Time, err error) {
	creds, err = h.keys.IssueUnitCreds(string(id), h.cfg.NATS.CredsTTL)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	pub, expires, err = broker.UserKey(creds)
	return creds, pub, expires, err
}

// unitCert is the certificate a unit registers with: the one given (its
// chain checked now, bound to the unit) or, with none and a development CA,
// a new key and certificate.
func (h *Hub) unitCert(id document.UnitID, name, certPEM string) (cert *x509.Certificate, chainPEM, keyPEM string, err error) {
	if certPEM != "" {
		certs, err := pki.ParseCertificates([]byte(certPEM))
		if err != nil {
			return nil, "", "", fmt.Errorf("%w: cert_pem: %v", api.ErrInvalid, err)
		}
		if _, rs := h.trust.Check(certs[0], certs[1:], time.Now()); len(rs) > 0 {
			return nil, "", "", fmt.Errorf("%w: certificate: %v", api.ErrInvalid, rs)
		}
		if u, err := pki.UnitOf(certs[0]); err != nil || u != id {
			return nil, "", "", fmt.Errorf("%w: the certificate does not name unit %s", api.ErrInvalid, id)
		}
		return certs[0], string(pki.EncodeCertificates(certs...)), "", nil
	}
	if h.issuer == nil {
		return nil, "", "", fmt.Errorf("%w: this hub issues no certificates (no pki.issuing_ca nor pki.dev_ca): give the unit's certificate, "+
			"issued by the city's CA for %s (edx unit add --cert CERT.pem, with its chain; the unit keeps its key)", api.ErrInvalid, id)
	}
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		return nil, "", "", err
	}
	if cert, err = h.issuer.Issue(pki.IssueRequest{Identifier: string(id), Name: name, Key: key.Public()}); err != nil {
		return nil, "", "", err
	}
	kp, err := pki.EncodePrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	return cert, string(pki.EncodeCertificates(append([]*x509.Certificate{cert}, h.issuer.Chain...)...)), string(kp), nil
}

// certRevoked reports whether a unit's certificate is revoked by a CRL in
// force, and why.
func (h *Hub) certRevoked(u index.Unit, now time.Time) (bool, string) {
	if u.CertPEM == "" {
		return false, ""
	}
	certs, err := pki.ParseCertificates([]byte(u.CertPEM))
	if err != nil {
		return false, ""
	}
	_, rs := h.trust.Check(certs[0], certs[1:], now)
	for _, r := range rs {
		if r.Code == reason.SignatureRevoked {
			return true, r.Message
		}
	}
	return false, ""
}

// warnLegacy says when a unit's earlier credentials cannot be revoked: a
// unit registered before the hub kept its users' keys (and before
// credentials expired) holds credentials the hub cannot name.
func (h *Hub) warnLegacy(u index.Unit) {
	if len(u.NATSUsers) == 0 && u.CredsExpire.IsZero() && !u.Disabled && u.CertPEM == "" {
		h.log.Warn("unit registered before credentials were revocable: the NATS credentials it had cannot be revoked and do not expire; "+
			"they keep working (only a revocation of every earlier user of the UNITS account, not done here, would end them)", "unit", u.ID)
	}
}

// changeUnit changes a unit in the shared registry (compare-and-set,
// retried: change may run more than once, with the newer record), which
// archives the change, then projects it into this hub's index.
func (h *Hub) changeUnit(ctx context.Context, id document.UnitID, change registry.Change) (registry.Unit, error) {
	u, err := h.units.Update(ctx, id, change)
	if errors.Is(err, errUnchanged) {
		return u, err
	}
	if err != nil {
		if u.ID == "" {
			return u, unitErr(err)
		}
		// In force, not archived: the index follows the registry anyway.
		h.log.Error("unit change not archived", "unit", id, "event", u.Event, "err", err)
	}
	if perr := h.projectUnit(ctx, u); perr != nil {
		h.log.Error("unit change not indexed on this hub (the registry holds it)", "unit", id, "err", perr)
	}
	h.log.Info("unit "+u.Event, "unit", u.ID, "serial", u.CertSerial, "disabled", u.Disabled, "nats_users", u.NATSUsers)
	return u, unitErr(err)
}

// projectUnit writes a unit's registry record into this hub's index (the
// unit pages and counters read it there).
func (h *Hub) projectUnit(ctx context.Context, u registry.Unit) error {
	if err := h.ix.PutUnit(ctx, u.Unit); err != nil {
		return err
	}
	return h.PublishUnitChanged(ctx, u.Unit)
}

// PublishUnitChanged tells every hub's index of a unit's record after a
// change (u.At set), once the record is archived.
func (h *Hub) PublishUnitChanged(ctx context.Context, u index.Unit) error {
	seq, err := h.events.UnitChanged(ctx, u)
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	h.follow.WaitApplied(ctx, seq)
	return nil
}

// unitErr gives registry errors the API's kinds; an error of the change
// function passes as it is.
func unitErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("%w: %v", api.ErrNotFound, err)
	case errors.Is(err, registry.ErrInvalid):
		return fmt.Errorf("%w: %v", api.ErrInvalid, err)
	case errors.Is(err, broker.ErrRevision):
		return fmt.Errorf("%w: %v", api.ErrConflict, err)
	case errors.Is(err, api.ErrInvalid), errors.Is(err, api.ErrConflict), errors.Is(err, api.ErrNotFound), errors.Is(err, api.ErrUnavailable):
		return err
	}
	return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
}

// notRegistered is the error of a change to a unit the registry lacks.
func notRegistered(id document.UnitID) error {
	return fmt.Errorf("%w: unit %s is not registered", api.ErrNotFound, id)
}

// bundle is what an agent needs after its credentials changed.
func (h *Hub) bundle(u registry.Unit, creds []byte, keyPEM string) (*api.UnitBundle, error) {
	roots, err := os.ReadFile(h.cfg.PKI.Trust)
	if err != nil {
		return nil, err
	}
	return &api.UnitBundle{Unit: u.Unit, KeyPEM: keyPEM, CertPEM: u.CertPEM, RootsPEM: string(roots),
		Creds: string(creds), NATSURL: h.Info().NATSURL}, nil
}

// AddUnit registers a unit: its certificate (given, or issued by the
// development CA), its NATS credentials (expiring after nats.creds_ttl) and
// consumers, its record in the shared registry (archived, so that a rebuilt
// index knows it) and in this hub's index. Registering a unit again revokes
// the NATS credentials it had.
func (h *Hub) AddUnit(ctx context.Context, req api.UnitRequest) (*api.UnitBundle, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := req.ID.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" {
		return nil, fmt.Errorf("%w: a unit name is required", api.ErrInvalid)
	}
	cert, chainPEM, keyPEM, err := h.unitCert(req.ID, req.Name, req.CertPEM)
	if err != nil {
		return nil, err
	}
	if err := broker.EnsureUnitConsumer(ctx, h.js, string(req.ID), h.cfg.NATS.Streams.UnitConsumers); err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	var creds []byte
	u, err := h.changeUnit(ctx, req.ID, func(old registry.Unit, exists bool) (registry.Unit, error) {
		now := time.Now()
		u := registry.Unit{Unit: index.Unit{ID: req.ID, Name: req.Name, Created: now.UTC(), CertSerial: cert.SerialNumber.Text(16),
			CertNotAfter: cert.NotAfter.UTC(), CertPEM: chainPEM, Event: eventRegistered}}
		if exists {
			u.Created, u.Revoked = old.Created, withRevoked(old, now)
			h.warnLegacy(old.Unit)
			// The credentials issued before are revoked first: should what
			// follows fail, the unit has none rather than two.
			if err := h.revokeUsers(ctx, old.NATSUsers, now); err != nil {
				return u, err
			}
		}
		c, pub, exp, err := h.issueCreds(req.ID)
		if err != nil {
			return u, err
		}
		creds, u.NATSUsers, u.CredsExpire = c, []string{pub}, exp
		return u, nil
	})
	if err != nil && u.ID == "" {
		return nil, err
	}
	b, berr := h.bundle(u, creds, keyPEM)
	if berr != nil {
		return nil, berr
	}
	if req.CertPEM != "" {
		b.CertPEM = req.CertPEM
	}
	return b, err
}

// DisableUnit revokes a unit's NATS credentials and marks it disabled.
func (h *Hub) DisableUnit(ctx context.Context, id document.UnitID) (index.Unit, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := id.Validate(); err != nil {
		return index.Unit{}, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	u, err := h.changeUnit(ctx, id, func(u registry.Unit, exists bool) (registry.Unit, error) {
		if !exists {
			return u, notRegistered(id)
		}
		now := time.Now()
		h.warnLegacy(u.Unit)
		if err := h.revokeUsers(ctx, u.NATSUsers, now); err != nil {
			return u, err
		}
		u.Revoked = withRevoked(u, now)
		u.Disabled, u.NATSUsers, u.CredsExpire, u.Event = true, nil, time.Time{}, eventDisabled
		return u, nil
	})
	return u.Unit, err
}

// EnableUnit allows a disabled unit again and issues it new NATS
// credentials. A unit whose certificate is revoked needs a new certificate
// first (RotateUnit).
func (h *Hub) EnableUnit(ctx context.Context, id document.UnitID) (*api.UnitBundle, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	var creds []byte
	u, err := h.changeUnit(ctx, id, func(u registry.Unit, exists bool) (registry.Unit, error) {
		if !exists {
			return u, notRegistered(id)
		}
		if !u.Disabled {
			return u, fmt.Errorf("%w: unit %s is not disabled (edx unit rotate issues new credentials)", api.ErrConflict, id)
		}
		now := time.Now()
		if revoked, why := h.certRevoked(u.Unit, now); revoked {
			return u, fmt.Errorf("%w: unit %s: %s; rotate it with a new certificate", api.ErrConflict, id, why)
		}
		if err := h.revokeUsers(ctx, u.NATSUsers, now); err != nil { // none, unless a record was edited
			return u, err
		}
		u.Revoked = withRevoked(u, now)
		c, pub, exp, err := h.issueCreds(id)
		if err != nil {
			return u, err
		}
		creds = c
		u.Disabled, u.NATSUsers, u.CredsExpire, u.Event = false, []string{pub}, exp, eventEnabled
		return u, nil
	})
	if err != nil && u.ID == "" {
		return nil, err
	}
	b, berr := h.bundle(u, creds, "")
	if berr != nil {
		return nil, berr
	}
	return b, err
}

// RotateUnit issues a unit new NATS credentials and revokes the old ones;
// with req.NewCert (development CA) or req.CertPEM, its certificate is
// replaced too. The old certificate stays valid until it is revoked (edx pki
// revoke).
func (h *Hub) RotateUnit(ctx context.Context, id document.UnitID, req api.RotateRequest) (*api.UnitBundle, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	if req.NewCert && req.CertPEM != "" {
		return nil, fmt.Errorf("%w: ask for a new certificate or give one, not both", api.ErrInvalid)
	}
	var (
		creds  []byte
		keyPEM string
	)
	u, err := h.changeUnit(ctx, id, func(u registry.Unit, exists bool) (registry.Unit, error) {
		if !exists {
			return u, notRegistered(id)
		}
		if u.Disabled {
			return u, fmt.Errorf("%w: unit %s is disabled (edx unit enable)", api.ErrConflict, id)
		}
		h.warnLegacy(u.Unit)
		now := time.Now()
		keyPEM = ""
		if req.NewCert || req.CertPEM != "" {
			cert, chain, key, err := h.unitCert(id, u.Name, req.CertPEM)
			if err != nil {
				return u, err
			}
			u.CertSerial, u.CertNotAfter, u.CertPEM, keyPEM = cert.SerialNumber.Text(16), cert.NotAfter.UTC(), chain, key
		} else if revoked, why := h.certRevoked(u.Unit, now); revoked {
			return u, fmt.Errorf("%w: unit %s: %s; rotate it with a new certificate", api.ErrConflict, id, why)
		}
		if err := h.revokeUsers(ctx, u.NATSUsers, now); err != nil {
			return u, err
		}
		u.Revoked = withRevoked(u, now)
		c, pub, exp, err := h.issueCreds(id)
		if err != nil {
			return u, err
		}
		creds = c
		u.NATSUsers, u.CredsExpire, u.Event = []string{pub}, exp, eventRotated
		return u, nil
	})
	if err != nil && u.ID == "" {
		return nil, err
	}
	b, berr := h.bundle(u, creds, keyPEM)
	if berr != nil {
		return nil, berr
	}
	return b, err
}

// revokeRevokedUnits revokes the NATS credentials of every unit whose
// certificate a CRL in force revokes (after a CRL changed, and at start).
func (h *Hub) revokeRevokedUnits(ctx context.Context) error {
	now := time.Now()
	var errs []error
	for _, u := range h.units.List() {
		if len(u.NATSUsers) == 0 {
			continue
		}
		if revoked, _ := h.certRevoked(u.Unit, now); !revoked {
			continue
		}
		if err := h.revokeUnit(ctx, u.ID, now); err != nil {
			errs = append(errs, fmt.Errorf("unit %s: %w", u.ID, err))
		}
	}
	return errors.Join(errs...)
}

// errUnchanged ends a change that finds nothing to do.
var errUnchanged = errors.New("unit unchanged")

func (h *Hub) revokeUnit(ctx context.Context, id document.UnitID, now time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var why string
	_, err := h.changeUnit(ctx, id, func(u registry.Unit, exists bool) (registry.Unit, error) {
		if !exists {
			return u, notRegistered(id)
		}
		var revoked bool
		revoked, why = h.certRevoked(u.Unit, now)
		if !revoked || len(u.NATSUsers) == 0 {
			return u, errUnchanged // changed meanwhile
		}
		if err := h.revokeUsers(ctx, u.NATSUsers, now); err != nil {
			return u, err
		}
		h.log.Warn("unit certificate revoked: its NATS credentials are revoked", "unit", id, "serial", u.CertSerial, "why", why)
		u.Revoked = withRevoked(u, now)
		u.NATSUsers, u.CredsExpire, u.Event = nil, time.Time{}, eventRevoked
		return u, nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

// startRegistry opens the unit registry every hub shares, copies into it
// (once, see registry.Import) the units of this hub's index from before the
// registry, and signs into the UNITS account the revocations other hubs
// recorded.
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
	if _, err := h.units.Import(ctx, host+":"+h.cfg.Index.Path, units); err != nil {
		return err
	}
	if err := h.syncRevocations(ctx); err != nil {
		h.log.Error("nats: applying the revocations recorded by other hubs", "err", err)
	}
	if err := h.ensureUnitConsumers(ctx, true); err != nil {
		return err
	}
	return nil
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
