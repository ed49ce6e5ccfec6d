package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// Unit is a registered unit (agency).
type Unit struct {
	ID         document.UnitID `json:"id"`
	Name       string          `json:"name"`
	Created    time.Time       `json:"created"`
	CertSerial string          `json:"cert_serial"` // serial of the unit's current certificate (hex)
	Disabled   bool            `json:"disabled"`
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
		_, err := tx.ExecContext(ctx, `INSERT INTO units(id, name, created_at, cert_serial, disabled) VALUES(?, ?, ?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET name = excluded.name, created_at = excluded.created_at,
			cert_serial = excluded.cert_serial, disabled = excluded.disabled`,
			string(u.ID), u.Name, us(u.Created), u.CertSerial, u.Disabled)
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
	u := Unit{ID: id}
	var created int64
	err := ix.r.QueryRowContext(ctx, "SELECT name, created_at, cert_serial, disabled FROM units WHERE id = ?", string(id)).
		Scan(&u.Name, &created, &u.CertSerial, &u.Disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return Unit{}, fmt.Errorf("%w: unit %s", ErrNotFound, id)
	}
	if err != nil {
		return Unit{}, fmt.Errorf("index: get unit %s: %w", id, err)
	}
	u.Created = fromUS(created)
	return u, nil
}

// ListUnits returns every registered unit, by id.
func (ix *Index) ListUnits(ctx context.Context) ([]Unit, error) {
	rows, err := ix.r.QueryContext(ctx, "SELECT id, name, created_at, cert_serial, disabled FROM units ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("index: list units: %w", err)
	}
	defer rows.Close()
	var us []Unit
	for rows.Next() {
		var (
			u       Unit
			id      string
			created int64
		)
		if err := rows.Scan(&id, &u.Name, &created, &u.CertSerial, &u.Disabled); err != nil {
			return nil, fmt.Errorf("index: list units: %w", err)
		}
		u.ID, u.Created = document.UnitID(id), fromUS(created)
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
