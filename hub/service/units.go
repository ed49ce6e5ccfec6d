package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/witness"
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

// RotateRequest asks for a unit's new credentials.
type RotateRequest struct {
	// NewCert asks the development CA for a new key and certificate.
	NewCert bool `json:"new_cert,omitempty"`
	// CertPEM is the unit's new certificate (with its chain), from the
	// city's CA.
	CertPEM string `json:"cert_pem,omitempty"`
	// WitnessKey replaces the unit's witness key (the public half of the
	// key its agent cosigns the hub's log with, a C2SP cosignature/v1
	// verifier key named edx-witness/<unit>).
	WitnessKey string `json:"witness_key,omitempty"`
}

// UnitRequest asks to register a unit.
type UnitRequest struct {
	ID      document.UnitID `json:"id"`
	Name    string          `json:"name"`
	CertPEM string          `json:"cert_pem,omitempty"` // the unit's own certificate; empty: issue one from the development CA
	// WitnessKey is the public half of the key the unit's agent cosigns
	// the hub's log with (edx unit add makes the key beside the agent's
	// files); empty: the agent registers one itself.
	WitnessKey string `json:"witness_key,omitempty"`
}

// UnitBundle is what a registered unit's agent needs.
type UnitBundle struct {
	Unit     index.Unit `json:"unit"`
	KeyPEM   string     `json:"key_pem,omitempty"` // only when the hub issued the key
	CertPEM  string     `json:"cert_pem"`
	RootsPEM string     `json:"roots_pem"`
	Creds    string     `json:"nats_creds"`
	NATSURL  string     `json:"nats_url"`
	// LogKey is the verifier key of this hub's transparency log, which the
	// agent witnesses (checks every checkpoint against).
	LogKey string `json:"log_key,omitempty"`
	// LogKeys are the verifier keys of every hub's log the registry
	// records (this hub's first): the agent witnesses each (edx unit add
	// writes them, one a line, to log.vkey). A hub that joins later is
	// learned by the agent from the hub's signed statement of its key.
	LogKeys []string `json:"log_keys,omitempty"`
	// WitnessKey is the unit's witness key in the registry.
	WitnessKey string `json:"witness_key,omitempty"`
}

// EventRevoked is the event of a unit whose certificate a CRL revoked: its
// credentials were revoked.
const EventRevoked = "revoked"

// Unit events, in the archived records.
const (
	eventRegistered = "registered"
	eventRotated    = "rotated"
	eventDisabled   = "disabled"
	eventEnabled    = "enabled"
	eventRevoked    = EventRevoked
)

// AccountPusher gives the NATS servers a new account JWT: the embedded
// server (broker.Server) or an external cluster (broker.SystemConn).
type AccountPusher interface {
	PushAccount(ctx context.Context, accountJWT string) error
}

// Registrar is what registering units and changing their credentials
// needs, beside the registry.
type Registrar struct {
	JS      jetstream.JetStream // where each unit's consumers are made
	Keys    *broker.Keys        // issues and revokes the units' NATS credentials
	Servers AccountPusher       // the NATS servers, which take the UNITS account's revocations
	// Issuer issues the certificates of units registered without one
	// (pki.issuing_ca, or the development CA's); nil: a unit brings its
	// own.
	Issuer *pki.Issuer
	// Events tells every hub's index of a unit's change, and Applied waits
	// (briefly) until this hub's index has applied it.
	Events interface {
		UnitChanged(ctx context.Context, u index.Unit) (uint64, error)
	}
	Applied interface {
		WaitApplied(ctx context.Context, seq uint64) bool
	}
	CredsTTL  time.Duration // how long the NATS credentials issued hold (0: for ever)
	RootsFile string        // the trust roots (PEM) handed to a unit's agent
	NATSURL   string        // where a unit's agent connects
	LogKey    string        // the verifier key of the hub's transparency log, handed to a unit's agent
	// UnitConsumers is the storage of a unit's consumer of EDX_DELIVER
	// (nats.streams.unit_consumers).
	UnitConsumers string
	// LogKeys, when set, returns the verifier keys of every hub's log
	// (the registry's records), handed to a unit's agent beside LogKey.
	LogKeys func(ctx context.Context) []string
	// Logged, when set, enters a unit's changed record in the hub's
	// transparency log (and its certificate when new or revoked: oldSerial
	// is the serial before the change).
	Logged func(ctx context.Context, u registry.Unit, oldSerial string)
}

func (r *Registrar) validate() error {
	if r.JS == nil || r.Keys == nil || r.Servers == nil || r.Events == nil || r.Applied == nil || r.RootsFile == "" {
		return errors.New("service: a registrar needs JetStream, the NATS keys and servers, the events and the trust roots file")
	}
	return nil
}

// reg is the registrar; callers have checked it is there (mayChangeUnits).
func (svc *Service) reg() *Registrar { return svc.d.Registrar }

// mayChangeUnits is nil when who may register and change units, and the
// hub can.
func (svc *Service) mayChangeUnits(who *auth.Identity) error {
	if !who.Can(auth.ManageUnits) {
		return fmt.Errorf("%w: only admins register and change units", ErrForbidden)
	}
	if svc.d.Registrar == nil {
		return fmt.Errorf("%w: unit registration is not available", ErrUnavailable)
	}
	return nil
}

// revokeUsers revokes NATS users of the UNITS account at at, together with
// every revocation the registry records (made through any hub: an account
// JWT this hub pushes must not undo another hub's), and makes the servers
// apply it: their connections close, they cannot connect again. A push that
// failed before is made again even when the keys already hold the
// revocation.
func (svc *Service) revokeUsers(ctx context.Context, pubs []string, at time.Time) error {
	if len(pubs) == 0 {
		return nil
	}
	revs := svc.d.Registry.Revocations(at)
	for _, p := range pubs {
		if t, ok := revs[p]; !ok || at.After(t) {
			revs[p] = at
		}
	}
	tok, _, err := svc.reg().Keys.RevokeUnitUsersAt(revs)
	if err != nil {
		return err
	}
	if err := svc.pushUnits(ctx, tok, pubs); err != nil {
		return err
	}
	svc.log.Info("nats users revoked", "users", pubs)
	return nil
}

// pushUnits gives the NATS servers the UNITS account JWT.
func (svc *Service) pushUnits(ctx context.Context, tok string, pubs []string) error {
	switch err := svc.reg().Servers.PushAccount(ctx, tok); {
	case errors.Is(err, broker.ErrAccountNotLoaded):
		// No server holds the account, so no revoked user is connected;
		// a MEMORY resolver will load its configured JWT, though.
		svc.log.Warn("nats: the servers have not loaded the UNITS account; with a MEMORY resolver they will load the JWT of their configuration, "+
			"without this revocation: use a full resolver (edx-hub nats-config)", "users", pubs)
	case err != nil:
		return fmt.Errorf("%w: nats: %v", ErrUnavailable, err)
	}
	return nil
}

// SyncRevocations signs into the UNITS account the revocations other hubs
// recorded in the registry that this hub's keys lack, and pushes it when
// that changed it: at start, and whenever the registry changes.
func (svc *Service) SyncRevocations(ctx context.Context) error {
	revs := svc.d.Registry.Revocations(time.Now())
	if len(revs) == 0 {
		return nil
	}
	tok, changed, err := svc.reg().Keys.RevokeUnitUsersAt(revs)
	if err != nil || !changed {
		return err
	}
	return svc.pushUnits(ctx, tok, nil)
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
func (svc *Service) issueCreds(id document.UnitID) (creds []byte, pub string, expires time.Time, err error) {
	creds, err = svc.reg().Keys.IssueUnitCreds(string(id), svc.reg().CredsTTL)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	pub, expires, err = broker.UserKey(creds)
	return creds, pub, expires, err
}

// unitCert is the certificate a unit registers with: the one given (its
// chain checked now, bound to the unit) or, with none and a development CA,
// a new key and certificate.
func (svc *Service) unitCert(id document.UnitID, name, certPEM string) (cert *x509.Certificate, chainPEM, keyPEM string, err error) {
	if certPEM != "" {
		certs, err := pki.ParseCertificates([]byte(certPEM))
		if err != nil {
			return nil, "", "", fmt.Errorf("%w: cert_pem: %v", ErrInvalid, err)
		}
		if _, rs := svc.d.Trust.Check(certs[0], certs[1:], time.Now()); len(rs) > 0 {
			return nil, "", "", fmt.Errorf("%w: certificate: %v", ErrInvalid, rs)
		}
		if u, err := pki.UnitOf(certs[0]); err != nil || u != id {
			return nil, "", "", fmt.Errorf("%w: the certificate does not name unit %s", ErrInvalid, id)
		}
		return certs[0], string(pki.EncodeCertificates(certs...)), "", nil
	}
	if svc.reg().Issuer == nil {
		return nil, "", "", fmt.Errorf("%w: this hub issues no certificates (no pki.issuing_ca nor pki.dev_ca): give the unit's certificate, "+
			"issued by the city's CA for %s (edx unit add --cert CERT.pem, with its chain; the unit keeps its key)", ErrInvalid, id)
	}
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		return nil, "", "", err
	}
	if cert, err = svc.reg().Issuer.Issue(pki.IssueRequest{Identifier: string(id), Name: name, Key: key.Public()}); err != nil {
		return nil, "", "", err
	}
	kp, err := pki.EncodePrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	return cert, string(pki.EncodeCertificates(append([]*x509.Certificate{cert}, svc.reg().Issuer.Chain...)...)), string(kp), nil
}

// certRevoked reports whether a unit's certificate is revoked by a CRL in
// force, and why.
func (svc *Service) certRevoked(u index.Unit, now time.Time) (bool, string) {
	if u.CertPEM == "" {
		return false, ""
	}
	certs, err := pki.ParseCertificates([]byte(u.CertPEM))
	if err != nil {
		return false, ""
	}
	_, rs := svc.d.Trust.Check(certs[0], certs[1:], now)
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
func (svc *Service) warnLegacy(u index.Unit) {
	if len(u.NATSUsers) == 0 && u.CredsExpire.IsZero() && !u.Disabled && u.CertPEM == "" {
		svc.log.Warn("unit registered before credentials were revocable: the NATS credentials it had cannot be revoked and do not expire; "+
			"they keep working (only a revocation of every earlier user of the UNITS account, not done here, would end them)", "unit", u.ID)
	}
}

// changeUnit changes a unit in the shared registry (compare-and-set,
// retried: change may run more than once, with the newer record), which
// archives the change, then projects it into this hub's index.
func (svc *Service) changeUnit(ctx context.Context, id document.UnitID, change registry.Change) (registry.Unit, error) {
	var oldSerial string
	u, err := svc.d.Registry.Update(ctx, id, func(old registry.Unit, exists bool) (registry.Unit, error) {
		oldSerial = old.CertSerial
		return change(old, exists)
	})
	if errors.Is(err, errUnchanged) {
		return u, err
	}
	if err != nil {
		if u.ID == "" {
			return u, unitErr(err)
		}
		// In force, not archived: the index follows the registry anyway.
		svc.log.Error("unit change not archived", "unit", id, "event", u.Event, "err", err)
	}
	// In the log: the unit's record as changed, and its certificate when
	// it is new or revoked.
	if r := svc.d.Registrar; r != nil && r.Logged != nil {
		r.Logged(ctx, u, oldSerial)
	}
	if perr := svc.projectUnit(ctx, u); perr != nil {
		svc.log.Error("unit change not indexed on this hub (the registry holds it)", "unit", id, "err", perr)
	}
	svc.log.Info("unit "+u.Event, "unit", u.ID, "serial", u.CertSerial, "disabled", u.Disabled, "nats_users", u.NATSUsers)
	return u, unitErr(err)
}

// projectUnit writes a unit's registry record into this hub's index (the
// unit pages and counters read it there).
func (svc *Service) projectUnit(ctx context.Context, u registry.Unit) error {
	if err := svc.d.Index.PutUnit(ctx, u.Unit); err != nil {
		return err
	}
	return svc.publishUnitChanged(ctx, u.Unit)
}

// publishUnitChanged tells every hub's index of a unit's record after a
// change (u.At set), once the record is archived.
func (svc *Service) publishUnitChanged(ctx context.Context, u index.Unit) error {
	seq, err := svc.reg().Events.UnitChanged(ctx, u)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	svc.reg().Applied.WaitApplied(ctx, seq)
	return nil
}

// unitErr gives registry errors the service's kinds; an error of the change
// function passes as it is.
func unitErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.Is(err, registry.ErrInvalid):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	case errors.Is(err, broker.ErrRevision):
		return fmt.Errorf("%w: %v", ErrConflict, err)
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound), errors.Is(err, ErrUnavailable):
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// notRegistered is the error of a change to a unit the registry lacks.
func notRegistered(id document.UnitID) error {
	return fmt.Errorf("%w: unit %s is not registered", ErrNotFound, id)
}

// bundle is what an agent needs after its credentials changed.
func (svc *Service) bundle(u registry.Unit, creds []byte, keyPEM string) (*UnitBundle, error) {
	roots, err := os.ReadFile(svc.reg().RootsFile)
	if err != nil {
		return nil, err
	}
	b := &UnitBundle{Unit: u.Unit, KeyPEM: keyPEM, CertPEM: u.CertPEM, RootsPEM: string(roots),
		Creds: string(creds), NATSURL: svc.reg().NATSURL, LogKey: svc.reg().LogKey, WitnessKey: u.WitnessKey}
	if b.LogKey != "" {
		b.LogKeys = []string{b.LogKey}
	}
	if f := svc.reg().LogKeys; f != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, k := range f(ctx) {
			if !slices.Contains(b.LogKeys, k) {
				b.LogKeys = append(b.LogKeys, k)
			}
		}
	}
	return b, nil
}

// AddUnit registers a unit: its certificate (given, or issued by the
// development CA), its NATS credentials (expiring after nats.creds_ttl) and
// consumers, its record in the shared registry (archived, so that a rebuilt
// index knows it) and in this hub's index. Registering a unit again revokes
// the NATS credentials it had.
func (svc *Service) AddUnit(ctx context.Context, who *auth.Identity, req UnitRequest) (*UnitBundle, error) {
	if err := svc.mayChangeUnits(who); err != nil {
		return nil, err
	}
	svc.units.Lock()
	defer svc.units.Unlock()
	if err := req.ID.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	req.Name = strings.TrimSpace(req.Name)
	if req.Name == "" {
		return nil, fmt.Errorf("%w: a unit name is required", ErrInvalid)
	}
	if req.WitnessKey != "" {
		if _, err := CheckWitnessKey(req.ID, req.WitnessKey); err != nil {
			return nil, err
		}
	}
	cert, chainPEM, keyPEM, err := svc.unitCert(req.ID, req.Name, req.CertPEM)
	if err != nil {
		return nil, err
	}
	if err := broker.EnsureUnitConsumer(ctx, svc.reg().JS, string(req.ID), svc.reg().UnitConsumers); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	var creds []byte
	u, err := svc.changeUnit(ctx, req.ID, func(old registry.Unit, exists bool) (registry.Unit, error) {
		now := time.Now()
		u := registry.Unit{Unit: index.Unit{ID: req.ID, Name: req.Name, Created: now.UTC(), CertSerial: cert.SerialNumber.Text(16),
			CertNotAfter: cert.NotAfter.UTC(), CertPEM: chainPEM, Event: eventRegistered}, WitnessKey: req.WitnessKey}
		if exists {
			u.Created, u.Revoked = old.Created, withRevoked(old, now)
			if u.WitnessKey == "" || u.WitnessKey == old.WitnessKey {
				// The agent keeps its witness key.
				u.WitnessKey, u.WitnessBinding = old.WitnessKey, old.WitnessBinding
			}
			svc.warnLegacy(old.Unit)
			// The credentials issued before are revoked first: should what
			// follows fail, the unit has none rather than two.
			if err := svc.revokeUsers(ctx, old.NATSUsers, now); err != nil {
				return u, err
			}
		}
		c, pub, exp, err := svc.issueCreds(req.ID)
		if err != nil {
			return u, err
		}
		creds, u.NATSUsers, u.CredsExpire = c, []string{pub}, exp
		return u, nil
	})
	if err != nil && u.ID == "" {
		return nil, err
	}
	b, berr := svc.bundle(u, creds, keyPEM)
	if berr != nil {
		return nil, berr
	}
	if req.CertPEM != "" {
		b.CertPEM = req.CertPEM
	}
	return b, err
}

// DisableUnit revokes a unit's NATS credentials and marks it disabled.
func (svc *Service) DisableUnit(ctx context.Context, who *auth.Identity, id document.UnitID) (UnitView, error) {
	if err := svc.mayChangeUnits(who); err != nil {
		return UnitView{}, err
	}
	svc.units.Lock()
	defer svc.units.Unlock()
	if err := id.Validate(); err != nil {
		return UnitView{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	u, err := svc.changeUnit(ctx, id, func(u registry.Unit, exists bool) (registry.Unit, error) {
		if !exists {
			return u, notRegistered(id)
		}
		now := time.Now()
		svc.warnLegacy(u.Unit)
		if err := svc.revokeUsers(ctx, u.NATSUsers, now); err != nil {
			return u, err
		}
		u.Revoked = withRevoked(u, now)
		u.Disabled, u.NATSUsers, u.CredsExpire, u.Event = true, nil, time.Time{}, eventDisabled
		return u, nil
	})
	if err != nil {
		return UnitView{}, err
	}
	return svc.view(u.Unit), nil
}

// EnableUnit allows a disabled unit again and issues it new NATS
// credentials. A unit whose certificate is revoked needs a new certificate
// first (RotateUnit).
func (svc *Service) EnableUnit(ctx context.Context, who *auth.Identity, id document.UnitID) (*UnitBundle, error) {
	if err := svc.mayChangeUnits(who); err != nil {
		return nil, err
	}
	svc.units.Lock()
	defer svc.units.Unlock()
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var creds []byte
	u, err := svc.changeUnit(ctx, id, func(u registry.Unit, exists bool) (registry.Unit, error) {
		if !exists {
			return u, notRegistered(id)
		}
		if !u.Disabled {
			return u, fmt.Errorf("%w: unit %s is not disabled (edx unit rotate issues new credentials)", ErrConflict, id)
		}
		now := time.Now()
		if revoked, why := svc.certRevoked(u.Unit, now); revoked {
			return u, fmt.Errorf("%w: unit %s: %s; rotate it with a new certificate", ErrConflict, id, why)
		}
		if err := svc.revokeUsers(ctx, u.NATSUsers, now); err != nil { // none, unless a record was edited
			return u, err
		}
		u.Revoked = withRevoked(u, now)
		c, pub, exp, err := svc.issueCreds(id)
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
	b, berr := svc.bundle(u, creds, "")
	if berr != nil {
		return nil, berr
	}
	return b, err
}

// RotateUnit issues a unit new NATS credentials and revokes the old ones;
// with req.NewCert (development CA) or req.CertPEM, its certificate is
// replaced too. The old certificate stays valid until it is revoked (edx pki
// revoke).
func (svc *Service) RotateUnit(ctx context.Context, who *auth.Identity, id document.UnitID, req RotateRequest) (*UnitBundle, error) {
	if err := svc.mayChangeUnits(who); err != nil {
		return nil, err
	}
	svc.units.Lock()
	defer svc.units.Unlock()
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if req.NewCert && req.CertPEM != "" {
		return nil, fmt.Errorf("%w: ask for a new certificate or give one, not both", ErrInvalid)
	}
	if req.WitnessKey != "" {
		if _, err := CheckWitnessKey(id, req.WitnessKey); err != nil {
			return nil, err
		}
	}
	var (
		creds  []byte
		keyPEM string
	)
	u, err := svc.changeUnit(ctx, id, func(u registry.Unit, exists bool) (registry.Unit, error) {
		if !exists {
			return u, notRegistered(id)
		}
		if u.Disabled {
			return u, fmt.Errorf("%w: unit %s is disabled (edx unit enable)", ErrConflict, id)
		}
		svc.warnLegacy(u.Unit)
		now := time.Now()
		keyPEM = ""
		if req.NewCert || req.CertPEM != "" {
			cert, chain, key, err := svc.unitCert(id, u.Name, req.CertPEM)
			if err != nil {
				return u, err
			}
			u.CertSerial, u.CertNotAfter, u.CertPEM, keyPEM = cert.SerialNumber.Text(16), cert.NotAfter.UTC(), chain, key
		} else if revoked, why := svc.certRevoked(u.Unit, now); revoked {
			return u, fmt.Errorf("%w: unit %s: %s; rotate it with a new certificate", ErrConflict, id, why)
		}
		if err := svc.revokeUsers(ctx, u.NATSUsers, now); err != nil {
			return u, err
		}
		u.Revoked = withRevoked(u, now)
		c, pub, exp, err := svc.issueCreds(id)
		if err != nil {
			return u, err
		}
		creds = c
		u.NATSUsers, u.CredsExpire, u.Event = []string{pub}, exp, eventRotated
		if req.WitnessKey != "" && req.WitnessKey != u.WitnessKey {
			u.WitnessKey, u.WitnessBinding = req.WitnessKey, nil
		}
		return u, nil
	})
	if err != nil && u.ID == "" {
		return nil, err
	}
	b, berr := svc.bundle(u, creds, keyPEM)
	if berr != nil {
		return nil, berr
	}
	return b, err
}

// RevokeRevokedUnits revokes the NATS credentials of every unit whose
// certificate a CRL in force revokes (after a CRL changed, and at start).
func (svc *Service) RevokeRevokedUnits(ctx context.Context) error {
	if svc.d.Registrar == nil {
		return nil
	}
	now := time.Now()
	var errs []error
	for _, u := range svc.d.Registry.List() {
		if len(u.NATSUsers) == 0 {
			continue
		}
		if revoked, _ := svc.certRevoked(u.Unit, now); !revoked {
			continue
		}
		if err := svc.revokeUnit(ctx, u.ID, now); err != nil {
			errs = append(errs, fmt.Errorf("unit %s: %w", u.ID, err))
		}
	}
	return errors.Join(errs...)
}

// errUnchanged ends a change that finds nothing to do.
var errUnchanged = errors.New("unit unchanged")

// ErrUnchanged ends a change of ChangeUnit that finds nothing to do: the
// registry is left as it is, and ChangeUnit returns it.
var ErrUnchanged = errUnchanged

// ChangeUnit changes a unit's record through the registry, serialised with
// this hub's other unit changes, then archives and projects it (as every
// change of this file): for the hub's own services (a unit's agent
// registering its witness key). change returns ErrUnchanged, or an error
// of its own, to change nothing; a unit the registry lacks reaches change
// with exists false (NotRegistered is its error).
func (svc *Service) ChangeUnit(ctx context.Context, id document.UnitID, change registry.Change) (registry.Unit, error) {
	svc.units.Lock()
	defer svc.units.Unlock()
	return svc.changeUnit(ctx, id, change)
}

// NotRegistered is the error of a change to a unit the registry lacks.
func NotRegistered(id document.UnitID) error { return notRegistered(id) }

func (svc *Service) revokeUnit(ctx context.Context, id document.UnitID, now time.Time) error {
	svc.units.Lock()
	defer svc.units.Unlock()
	var why string
	_, err := svc.changeUnit(ctx, id, func(u registry.Unit, exists bool) (registry.Unit, error) {
		if !exists {
			return u, notRegistered(id)
		}
		var revoked bool
		revoked, why = svc.certRevoked(u.Unit, now)
		if !revoked || len(u.NATSUsers) == 0 {
			return u, errUnchanged // changed meanwhile
		}
		if err := svc.revokeUsers(ctx, u.NATSUsers, now); err != nil {
			return u, err
		}
		svc.log.Warn("unit certificate revoked: its NATS credentials are revoked", "unit", id, "serial", u.CertSerial, "why", why)
		u.Revoked = withRevoked(u, now)
		u.NATSUsers, u.CredsExpire, u.Event = nil, time.Time{}, eventRevoked
		return u, nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

// WitnessName is the key name of a unit's witness key: the unit's own, so
// that a cosignature line says whose it is.
func WitnessName(u document.UnitID) string { return "edx-witness/" + string(u) }

// CheckWitnessKey returns the verifier of a unit's witness key (vkey), or
// an error when it is not a cosignature/v1 key of the unit's name.
func CheckWitnessKey(u document.UnitID, vkey string) (note.Verifier, error) {
	v, err := witness.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("%w: witness key: %v", ErrInvalid, err)
	}
	if v.Name() != WitnessName(u) {
		return nil, fmt.Errorf("%w: witness key named %q: unit %s's is named %q", ErrInvalid, v.Name(), u, WitnessName(u))
	}
	return v, nil
}
