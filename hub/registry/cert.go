package registry

import (
	"context"
	"strings"

	"github.com/edxhub/edx/pkg/document"
)

// UnitCert reports whether serial (hex) is the serial of the certificate
// unit is registered with, and the registered one's. A unit registered
// without a certificate on record (before the registry kept them) has none
// to compare with: any serial is its. As UnitStatus does, a "no" from this
// hub's view is asked again of the bucket's leader, so that a certificate
// rotated a moment ago through another hub is never refused for a lagging
// view. An error says nothing about the unit: retry.
func (r *Registry) UnitCert(ctx context.Context, id document.UnitID, serial string) (ok bool, registered string, err error) {
	u, err := r.Get(ctx, id)
	if err != nil {
		return false, "", err
	}
	if u.CertSerial == "" || strings.EqualFold(u.CertSerial, serial) {
		return true, u.CertSerial, nil
	}
	if u, err = r.Lookup(ctx, id); err != nil {
		return false, "", err
	}
	return u.CertSerial == "" || strings.EqualFold(u.CertSerial, serial), u.CertSerial, nil
}
