package index

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// Unit is a registered unit (agency). It is also the record the hub
// archives under units/ at each change (with Event and At), from which
// reindex rebuilds the registry: the last record of a unit wins.
type Unit struct {
	ID           document.UnitID `json:"id"`
	Name         string          `json:"name"`
	Created      time.Time       `json:"created"`
	CertSerial   string          `json:"cert_serial"` // serial of the unit's current certificate (hex)
	CertNotAfter time.Time       `json:"cert_not_after,omitzero"`
	// CertPEM is the unit's current certificate, then its chain: the hub
	// checks it against its trust (revocation) to tell the unit's state.
	CertPEM  string `json:"cert_pem,omitempty"`
	Disabled bool   `json:"disabled"`
	// NATSUsers are the public keys of the unit's NATS users in force; the
	// hub revokes them when it issues new credentials, disables the unit,
	// or finds its certificate revoked.
	NATSUsers []string `json:"nats_users,omitempty"`
	// CredsExpire is when the newest of those credentials expires (zero:
	// never, or issued before credentials had an expiry).
	CredsExpire time.Time `json:"creds_expire,omitzero"`

	// Event and At say what change a record in the archive is (registered,
	// rotated, disabled, enabled, revoked) and when; the index keeps
	// neither.
	Event string    `json:"event,omitempty"`
	At    time.Time `json:"at,omitzero"`
}

func usOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromUSOrZero(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return fromUS(v)
}

const unitColumns = "id, name, created_at, cert_serial, disabled, cert_not_after, cert_pem, nats_users, creds_expire_at"

type scanner interface{ Scan(...any) error }

func scanUnit(r scanner) (Unit, error) {
	var (
		u                 Unit
		id, users         string
		created, na, cexp int64
	)
	if err := r.Scan(&id, &u.Name, &created, &u.CertSerial, &u.Disabled, &na, &u.CertPEM, &users, &cexp); err != nil {
		return Unit{}, err
	}
	u.ID, u.Created, u.CertNotAfter, u.CredsExpire = document.UnitID(id), fromUS(created), fromUSOrZero(na), fromUSOrZero(cexp)
	if err := json.Unmarshal([]byte(users), &u.NATSUsers); err != nil {
		return Unit{}, fmt.Errorf("unit %s: nats_users: %w", id, err)
	}
	if len(u.NATSUsers) == 0 {
		u.NATSUsers = nil
	}
	return u, nil
}

// PutUnit registers u or replaces its registration.
func (ix *Index) PutUnit(ctx context.Context, u Unit) error {
	if err := u.ID.Validate(); err != nil {
		return invalid("unit: %v", err)
	}
	if u.Created.IsZero() {
		u.Created = ix.now()
	}
	// putUnitMu orders the cache updates as the writes; lookups only wait
	// for the map update, not for the write.
	ix.putUnitMu.Lock()
	defer ix.putUnitMu.Unlock()
	err := ix.write(ctx, "put unit", func(tx *sql.Tx) error {
		users := u.NATSUsers
		if users == nil {
			users = []string{}
		}
		ub, err := json.Marshal(users)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO units(`+unitColumns+`) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET name = excluded.name, created_at = excluded.created_at,
			cert_serial = excluded.cert_serial, disabled = excluded.disabled, cert_not_after = excluded.cert_not_after,
			cert_pem = excluded.cert_pem, nats_users = excluded.nats_users, creds_expire_at = excluded.creds_expire_at`,
			string(u.ID), u.Name, us(u.Created), u.CertSerial, u.Disabled, usOrZero(u.CertNotAfter), u.CertPEM, string(ub), usOrZero(u.CredsExpire))
		return err
	})
	if err != nil {
		return err
	}
	ix.unitsMu.Lock()
	ix.units[u.ID] = u.Disabled
	ix.unitsMu.Unlock()
	return nil
}

// GetUnit returns a registered unit or ErrNotFound.
func (ix *Index) GetUnit(ctx context.Context, id document.UnitID) (Unit, error) {
	u, err := scanUnit(ix.r.QueryRowContext(ctx, "SELECT "+unitColumns+" FROM units WHERE id = ?", string(id)))
	if errors.Is(err, sql.ErrNoRows) {
		return Unit{}, fmt.Errorf("%w: unit %s", ErrNotFound, id)
	}
	if err != nil {
		return Unit{}, fmt.Errorf("index: get unit %s: %w", id, err)
	}
	return u, nil
}

// ListUnits returns every registered unit, by id.
func (ix *Index) ListUnits(ctx context.Context) ([]Unit, error) {
	rows, err := ix.r.QueryContext(ctx, "SELECT "+unitColumns+" FROM units ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("index: list units: %w", err)
	}
	defer rows.Close()
	var us []Unit
	for rows.Next() {
		u, err := scanUnit(rows)
		if err != nil {
			return nil, fmt.Errorf("index: list units: %w", err)
		}
		us = append(us, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("index: list units: %w", err)
	}
	return us, nil
}

// UnitExists reports whether id is registered, disabled or not. It answers
// from memory.
func (ix *Index) UnitExists(ctx context.Context, id document.UnitID) (bool, error) {
	ix.unitsMu.RLock()
	_, ok := ix.units[id]
	ix.unitsMu.RUnlock()
	return ok, nil
}

// UnitActive reports whether id is registered and not disabled. It answers
// from memory.
func (ix *Index) UnitActive(ctx context.Context, id document.UnitID) (bool, error) {
	ix.unitsMu.RLock()
	disabled, ok := ix.units[id]
	ix.unitsMu.RUnlock()
	return ok && !disabled, nil
}

func (ix *Index) loadUnits(ctx context.Context) error {
	rows, err := ix.w.QueryContext(ctx, "SELECT id, disabled FROM units")
	if err != nil {
		return fmt.Errorf("index: load units: %w", err)
	}
	defer rows.Close()
	m := make(map[document.UnitID]bool)
	for rows.Next() {
		var (
			id       string
			disabled bool
		)
		if err := rows.Scan(&id, &disabled); err != nil {
			return fmt.Errorf("index: load units: %w", err)
		}
		m[document.UnitID(id)] = disabled
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("index: load units: %w", err)
	}
	ix.unitsMu.Lock()
	ix.units = m
	ix.unitsMu.Unlock()
	return nil
}
