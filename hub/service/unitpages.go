package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/reason"
)

// UnitView is a registered unit with its state and certificate as the hub's
// trust sees them now, and its counters for those who may see them.
type UnitView struct {
	index.Unit
	// State is active, disabled (edx unit disable) or revoked (its
	// certificate is revoked by a CRL in force).
	State       string          `json:"state"`
	Certificate *CertView       `json:"certificate,omitempty"`
	Counters    *index.Counters `json:"counters,omitempty"`
}

// Unit states.
const (
	UnitActive   = "active"
	UnitDisabled = "disabled"
	UnitRevoked  = "revoked"
)

// CertView is a unit's certificate as the hub's trust sees it now.
type CertView struct {
	Serial   string      `json:"serial"`
	Subject  string      `json:"subject"`
	Issuer   string      `json:"issuer"`
	NotAfter time.Time   `json:"not_after"`
	Valid    bool        `json:"valid"`             // chains, in its validity, not revoked
	Reasons  reason.List `json:"reasons,omitempty"` // why not
}

// view adds a unit's state and certificate, checked now against the trust.
func (svc *Service) view(u index.Unit) UnitView {
	v := UnitView{Unit: u, State: UnitActive}
	if u.Disabled {
		v.State = UnitDisabled
	}
	if u.CertPEM == "" {
		// Registered before the hub kept certificates: the serial alone.
		if u.CertSerial != "" {
			v.Certificate = &CertView{Serial: u.CertSerial, NotAfter: u.CertNotAfter}
		}
		return v
	}
	certs, err := pki.ParseCertificates([]byte(u.CertPEM))
	if err != nil {
		v.Certificate = &CertView{Serial: u.CertSerial, NotAfter: u.CertNotAfter, Reasons: reason.List{{Code: reason.SignatureMalformed, Message: err.Error()}}}
		return v
	}
	c := certs[0]
	cv := &CertView{Serial: c.SerialNumber.Text(16), Subject: pki.SubjectString(c.Subject), Issuer: pki.SubjectString(c.Issuer), NotAfter: c.NotAfter.UTC()}
	if svc.d.Trust != nil {
		_, cv.Reasons = svc.d.Trust.Check(c, certs[1:], svc.now())
	}
	cv.Valid = svc.d.Trust != nil && len(cv.Reasons) == 0
	if cv.Reasons.Has(reason.SignatureRevoked) {
		v.State = UnitRevoked
	}
	v.Certificate = cv
	return v
}

// Units lists the registered units; with counters, each unit's counters that
// who may see (every unit for archivists, auditors and admins; their own
// for records staff).
func (svc *Service) Units(ctx context.Context, who *auth.Identity, counters bool) ([]UnitView, error) {
	us := svc.d.Registry.List()
	out := make([]UnitView, len(us))
	for i, ru := range us {
		u := ru.Unit
		out[i] = svc.view(u)
		if counters && who.SeesUnit(u.ID) {
			c, err := svc.d.Index.UnitCounters(ctx, u.ID)
			if err != nil {
				return nil, err
			}
			out[i].Counters = &c
		}
	}
	return out, nil
}

// Unit returns a unit with its counters; ErrForbidden for records staff of
// another unit.
func (svc *Service) Unit(ctx context.Context, who *auth.Identity, id document.UnitID) (UnitView, error) {
	if err := id.Validate(); err != nil {
		return UnitView{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	u, err := svc.unit(ctx, id)
	if err != nil {
		return UnitView{}, err
	}
	if !who.SeesUnit(id) {
		return UnitView{}, fmt.Errorf("%w: unit %s is not yours", ErrForbidden, id)
	}
	c, err := svc.d.Index.UnitCounters(ctx, id)
	if err != nil {
		return UnitView{}, err
	}
	v := svc.view(u)
	v.Counters = &c
	return v, nil
}

// Registered lists the registered units (names and ids, for forms and
// labels), from the registry.
func (svc *Service) Registered() []index.Unit {
	us := svc.d.Registry.List()
	out := make([]index.Unit, len(us))
	for i, u := range us {
		out[i] = u.Unit
	}
	return out
}

// unit is a registered unit, from the registry.
func (svc *Service) unit(ctx context.Context, id document.UnitID) (index.Unit, error) {
	u, err := svc.d.Registry.Get(ctx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return index.Unit{}, fmt.Errorf("%w: unit %s is not registered", ErrNotFound, id)
	case errors.Is(err, registry.ErrInvalid):
		return index.Unit{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	case err != nil:
		return index.Unit{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return u.Unit, nil
}

// Overdue lists the documents the unit received, not finished, whose due
// date has passed; earliest due first.
func (svc *Service) Overdue(ctx context.Context, who *auth.Identity, id document.UnitID) ([]index.Summary, error) {
	if _, err := svc.Unit(ctx, who, id); err != nil {
		return nil, err
	}
	out, err := svc.d.Index.Overdue(ctx, id, svc.now())
	if out == nil {
		out = []index.Summary{}
	}
	return out, err
}

// pendingScan bounds how many received documents Pending looks through.
const pendingScan = 2000

// Pending lists up to limit documents the unit received and has not
// finished (no 06 finished, 02 refused or 13 cancelled from it), newest
// first, among its latest pendingScan received documents.
func (svc *Service) Pending(ctx context.Context, who *auth.Identity, id document.UnitID, limit int) ([]index.Summary, error) {
	if _, err := svc.Unit(ctx, who, id); err != nil {
		return nil, err
	}
	out := []index.Summary{}
	q := index.Query{To: id, Limit: 100}
	for scanned := 0; scanned < pendingScan; {
		p, err := svc.d.Index.Search(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, s := range p.Items {
			d, err := svc.d.Index.Get(ctx, s.ID)
			if err != nil {
				return nil, err
			}
			if i := slices.IndexFunc(d.Recipients, func(r index.Recipient) bool { return r.Unit == id }); i >= 0 && !d.Recipients[i].Done {
				out = append(out, s)
				if len(out) >= limit {
					return out, nil
				}
			}
		}
		scanned += len(p.Items)
		if p.NextCursor == "" {
			break
		}
		q.Cursor = p.NextCursor
	}
	return out, nil
}
