package hub

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/edxhub/edx/hub/api"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// A unit's lifecycle. Every change is archived under units/<ID>/ as the
// unit's full record (index.Unit, with Event and At), so that reindex
// rebuilds the registry; the NATS side is the UNITS account's revocations
// (kept in the keys directory and pushed to the servers). A unit holds at
// most one set of valid NATS credentials: the public keys in NATSUsers.
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

// revokeUsers revokes NATS users of the UNITS account and makes the servers
// apply it: their connections close, they cannot connect again. A push that
// failed before is made again even when the keys already hold the
// revocation.
func (h *Hub) revokeUsers(ctx context.Context, pubs []string) error {
	if len(pubs) == 0 {
		return nil
	}
	tok, _, err := h.keys.RevokeUnitUsers(pubs, time.Now())
	if err != nil {
		return err
	}
	switch err := h.accounts.PushAccount(ctx, tok); {
	case errors.Is(err, broker.ErrAccountNotLoaded):
		// No server holds the account, so no revoked user is connected;
		// a MEMORY resolver will load its configured JWT, though.
		h.log.Warn("nats: the servers have not loaded the UNITS account; with a MEMORY resolver they will load the JWT of their configuration, "+
			"without this revocation: use a full resolver (edx-hub nats-config)", "users", pubs)
	case err != nil:
		return fmt.Errorf("%w: nats: %v", api.ErrUnavailable, err)
	}
	h.log.Info("nats users revoked", "users", pubs)
	return nil
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

// saveUnit archives the unit's record for event, then indexes it.
func (h *Hub) saveUnit(ctx context.Context, u index.Unit, event string) (index.Unit, error) {
	now := time.Now().UTC()
	u.Event, u.At = event, now
	rec, err := json.MarshalIndent(u, "", "  ")
	if err != nil {
		return u, err
	}
	key := fmt.Sprintf("units/%s/%d.json", u.ID, now.UnixNano())
	if _, err := h.arch.Put(ctx, key, rec, "application/json", nil); err != nil {
		return u, err
	}
	if err := h.ix.PutUnit(ctx, u); err != nil {
		return u, err
	}
	h.log.Info("unit "+event, "unit", u.ID, "serial", u.CertSerial, "disabled", u.Disabled, "nats_users", u.NATSUsers)
	return u, nil
}

func (h *Hub) getUnit(ctx context.Context, id document.UnitID) (index.Unit, error) {
	if err := id.Validate(); err != nil {
		return index.Unit{}, fmt.Errorf("%w: %v", api.ErrInvalid, err)
	}
	u, err := h.ix.GetUnit(ctx, id)
	if errors.Is(err, index.ErrNotFound) {
		return index.Unit{}, fmt.Errorf("%w: unit %s is not registered", api.ErrNotFound, id)
	}
	return u, err
}

// bundle is what an agent needs after its credentials changed.
func (h *Hub) bundle(u index.Unit, creds []byte, keyPEM string) (*api.UnitBundle, error) {
	roots, err := os.ReadFile(h.cfg.PKI.Trust)
	if err != nil {
		return nil, err
	}
	return &api.UnitBundle{Unit: u, KeyPEM: keyPEM, CertPEM: u.CertPEM, RootsPEM: string(roots),
		Creds: string(creds), NATSURL: h.Info().NATSURL}, nil
}

// DisableUnit revokes a unit's NATS credentials and marks it disabled.
func (h *Hub) DisableUnit(ctx context.Context, id document.UnitID) (index.Unit, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u, err := h.getUnit(ctx, id)
	if err != nil {
		return index.Unit{}, err
	}
	h.warnLegacy(u)
	if err := h.revokeUsers(ctx, u.NATSUsers); err != nil {
		return index.Unit{}, err
	}
	u.Disabled, u.NATSUsers, u.CredsExpire = true, nil, time.Time{}
	return h.saveUnit(ctx, u, eventDisabled)
}

// EnableUnit allows a disabled unit again and issues it new NATS
// credentials. A unit whose certificate is revoked needs a new certificate
// first (RotateUnit).
func (h *Hub) EnableUnit(ctx context.Context, id document.UnitID) (*api.UnitBundle, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u, err := h.getUnit(ctx, id)
	if err != nil {
		return nil, err
	}
	if !u.Disabled {
		return nil, fmt.Errorf("%w: unit %s is not disabled (edx unit rotate issues new credentials)", api.ErrConflict, id)
	}
	if revoked, why := h.certRevoked(u, time.Now()); revoked {
		return nil, fmt.Errorf("%w: unit %s: %s; rotate it with a new certificate", api.ErrConflict, id, why)
	}
	if err := h.revokeUsers(ctx, u.NATSUsers); err != nil { // none, unless a record was edited
		return nil, err
	}
	creds, pub, exp, err := h.issueCreds(id)
	if err != nil {
		return nil, err
	}
	u.Disabled, u.NATSUsers, u.CredsExpire = false, []string{pub}, exp
	if u, err = h.saveUnit(ctx, u, eventEnabled); err != nil {
		return nil, err
	}
	return h.bundle(u, creds, "")
}

// RotateUnit issues a unit new NATS credentials and revokes the old ones;
// with req.NewCert (development CA) or req.CertPEM, its certificate is
// replaced too. The old certificate stays valid until it is revoked (edx pki
// revoke).
func (h *Hub) RotateUnit(ctx context.Context, id document.UnitID, req api.RotateRequest) (*api.UnitBundle, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u, err := h.getUnit(ctx, id)
	if err != nil {
		return nil, err
	}
	if u.Disabled {
		return nil, fmt.Errorf("%w: unit %s is disabled (edx unit enable)", api.ErrConflict, id)
	}
	h.warnLegacy(u)
	var keyPEM string
	if req.NewCert || req.CertPEM != "" {
		if req.NewCert && req.CertPEM != "" {
			return nil, fmt.Errorf("%w: ask for a new certificate or give one, not both", api.ErrInvalid)
		}
		cert, chain, key, err := h.unitCert(id, u.Name, req.CertPEM)
		if err != nil {
			return nil, err
		}
		u.CertSerial, u.CertNotAfter, u.CertPEM, keyPEM = cert.SerialNumber.Text(16), cert.NotAfter.UTC(), chain, key
	} else if revoked, why := h.certRevoked(u, time.Now()); revoked {
		return nil, fmt.Errorf("%w: unit %s: %s; rotate it with a new certificate", api.ErrConflict, id, why)
	}
	if err := h.revokeUsers(ctx, u.NATSUsers); err != nil {
		return nil, err
	}
	creds, pub, exp, err := h.issueCreds(id)
	if err != nil {
		return nil, err
	}
	u.NATSUsers, u.CredsExpire = []string{pub}, exp
	if u, err = h.saveUnit(ctx, u, eventRotated); err != nil {
		return nil, err
	}
	return h.bundle(u, creds, keyPEM)
}

// revokeRevokedUnits revokes the NATS credentials of every unit whose
// certificate a CRL in force revokes (after a CRL changed, and at start).
func (h *Hub) revokeRevokedUnits(ctx context.Context) error {
	units, err := h.ix.ListUnits(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	var errs []error
	for _, u := range units {
		if len(u.NATSUsers) == 0 {
			continue
		}
		if revoked, _ := h.certRevoked(u, now); !revoked {
			continue
		}
		if err := h.revokeUnit(ctx, u.ID, now); err != nil {
			errs = append(errs, fmt.Errorf("unit %s: %w", u.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (h *Hub) revokeUnit(ctx context.Context, id document.UnitID, now time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	u, err := h.getUnit(ctx, id)
	if err != nil {
		return err
	}
	revoked, why := h.certRevoked(u, now)
	if !revoked || len(u.NATSUsers) == 0 {
		return nil // changed meanwhile
	}
	if err := h.revokeUsers(ctx, u.NATSUsers); err != nil {
		return err
	}
	h.log.Warn("unit certificate revoked: its NATS credentials are revoked", "unit", id, "serial", u.CertSerial, "why", why)
	u.NATSUsers, u.CredsExpire = nil, time.Time{}
	_, err = h.saveUnit(ctx, u, eventRevoked)
	return err
}
