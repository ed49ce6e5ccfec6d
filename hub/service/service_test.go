package service_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/registry"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/hub/service/servicetest"
	"github.com/edxhub/edx/pkg/document"
)

var admin = &auth.Identity{User: auth.AdminUser, Via: auth.ViaAdminToken}

// TestUnitsReadTheRegistry: a unit in the registry every hub shares is a
// registered unit for the unit pages, the lists and the accounts, before
// (and whether or not) this hub's index holds it.
func TestUnitsReadTheRegistry(t *testing.T) {
	f := servicetest.New(t)
	ctx := t.Context()
	const ud = document.UnitID("000.04.00.H29")
	if _, err := f.Registry.Update(ctx, ud, func(registry.Unit, bool) (registry.Unit, error) {
		return registry.Unit{Unit: index.Unit{Name: "Ủy ban nhân dân Quận 3", Event: "registered"}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Index.GetUnit(ctx, ud); err == nil {
		t.Fatal("the index holds the unit: the test shows nothing")
	}
	if v, err := f.Service.Unit(ctx, admin, ud); err != nil || v.Name != "Ủy ban nhân dân Quận 3" || v.State != service.UnitActive {
		t.Fatalf("unit page: %+v %v", v, err)
	}
	us, err := f.Service.Units(ctx, admin, true)
	if err != nil || !slices.ContainsFunc(us, func(v service.UnitView) bool { return v.ID == ud && v.Counters != nil }) {
		t.Fatalf("units: %v %v", us, err)
	}
	if !slices.ContainsFunc(f.Service.Registered(), func(u index.Unit) bool { return u.ID == ud }) {
		t.Fatal("the registered units lack it")
	}
	if _, err := f.Service.AddUser(ctx, admin, auth.NewUser{Name: "van-thu-q3", Role: auth.RoleStaff, Unit: ud, Password: servicetest.Password}); err != nil {
		t.Fatalf("a staff account of the unit: %v", err)
	}
	// A unit the registry does not hold is not registered, whatever the
	// index says.
	const ue = document.UnitID("000.05.00.H29")
	if err := f.Index.PutUnit(ctx, index.Unit{ID: ue, Name: "không có trong sổ"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Service.Unit(ctx, admin, ue); !errors.Is(err, service.ErrNotFound) {
		t.Fatalf("a unit only the index holds: %v", err)
	}
	if _, err := f.Service.AddUser(ctx, admin, auth.NewUser{Name: "van-thu-x", Role: auth.RoleStaff, Unit: ue, Password: servicetest.Password}); !errors.Is(err, service.ErrInvalid) {
		t.Fatalf("a staff account of a unit only the index holds: %v", err)
	}
}

// TestChangingUnits: only admins register and change units, and only
// through a service that has a registrar; the error kinds say which.
func TestChangingUnits(t *testing.T) {
	f := servicetest.New(t)
	ctx := t.Context()
	staff := &auth.Identity{User: auth.User{Name: "van-thu", Role: auth.RoleStaff, Unit: servicetest.UnitA}, Via: auth.ViaSession}
	req := service.UnitRequest{ID: "000.06.00.H29", Name: "Sở Y tế"}
	for _, tc := range []struct {
		who  *auth.Identity
		want error
	}{{staff, service.ErrForbidden}, {admin, service.ErrUnavailable}} {
		if _, err := f.Service.AddUnit(ctx, tc.who, req); !errors.Is(err, tc.want) {
			t.Errorf("%s: add: %v, want %v", tc.who.User.Role, err, tc.want)
		}
		if _, err := f.Service.DisableUnit(ctx, tc.who, servicetest.UnitA); !errors.Is(err, tc.want) {
			t.Errorf("%s: disable: %v, want %v", tc.who.User.Role, err, tc.want)
		}
		if _, err := f.Service.RotateUnit(ctx, tc.who, servicetest.UnitA, service.RotateRequest{}); !errors.Is(err, tc.want) {
			t.Errorf("%s: rotate: %v, want %v", tc.who.User.Role, err, tc.want)
		}
	}
	if got := service.Status(service.ErrUnavailable); got != 503 {
		t.Errorf("status of unavailable: %d", got)
	}
}
