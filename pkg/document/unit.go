package document

import (
	"fmt"
	"regexp"
	"strings"
)

// UnitID is an agency's electronic identifier (mã định danh điện tử), four
// dot-separated levels 4.3.2.1, e.g. 000.00.00.H29.
type UnitID string

var unitRE = regexp.MustCompile(`^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}$`)

// ParseUnitID validates s strictly and returns it as a UnitID.
func ParseUnitID(s string) (UnitID, error) {
	u := UnitID(s)
	if err := u.Validate(); err != nil {
		return "", err
	}
	return u, nil
}

// Validate reports whether u has the shape ddd.dd.dd.Ldd.
func (u UnitID) Validate() error {
	if !unitRE.MatchString(string(u)) {
		return fmt.Errorf("unit id %q: want the form 000.00.00.H29 (ddd.dd.dd.Ldd)", string(u))
	}
	return nil
}

func (u UnitID) String() string { return string(u) }

// Parent returns the unit one level up: the lowest non-zero level is zeroed.
// A level-1 body (000.00.00.H29) has no parent and returns "", false.
func (u UnitID) Parent() (UnitID, bool) {
	if u.Validate() != nil {
		return "", false
	}
	p := strings.Split(string(u), ".")
	for i := 0; i < 3; i++ {
		if strings.Trim(p[i], "0") != "" {
			p[i] = strings.Repeat("0", len(p[i]))
			return UnitID(strings.Join(p, ".")), true
		}
	}
	return "", false
}
