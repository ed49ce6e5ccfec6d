package pipeline

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/edxhub/edx/pkg/document"
)

// Gateway names the city's unit that carries documents to and from an
// upstream axis (the national axis), and the recipients outside the city
// it may carry documents to. This is the one place where the hub decides
// which recipients are outside: a recipient registered in the city is
// always the city's; one that is not registered goes to the gateway when
// it matches Outside, and is unknown (recipient.unknown) otherwise.
//
// The gateway unit's agent (agent/bridge) sends what it carries up with the
// axis's sendEdoc, brings documents from the upstream into the city as
// documents it sent itself (document.Upstream says from whom), and relays
// statuses both ways: the hub takes from the gateway the statuses of the
// outside recipients it carries, and sends it the city senders' 13 for
// them.
type Gateway struct {
	// Unit is the gateway unit, a unit of its own (e.g. 000.99.00.H29);
	// empty: no gateway, every recipient must be registered.
	Unit document.UnitID `yaml:"unit"`
	// Outside lists the codes outside the city the gateway carries to: a
	// whole unit id (000.00.00.G22), a level-1 code (H30: every unit of
	// that province), or a letter (G: every ministry and central body); a
	// pattern starting with ! excludes (e.g. H with !H29: every other
	// province's units). A unit registered in the city is never outside,
	// whatever the patterns say.
	Outside []string `yaml:"outside"`
}

var gatewayPattern = regexp.MustCompile(`^!?(?:[A-Z]|[A-Z]\d{2}|\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2})$`)

// Validate checks the gateway's configuration.
func (g *Gateway) Validate() error {
	if g.Unit == "" {
		if len(g.Outside) > 0 {
			return errors.New("pipeline: gateway.outside without gateway.unit: name the unit that carries documents outside the city")
		}
		return nil
	}
	if err := g.Unit.Validate(); err != nil {
		return fmt.Errorf("pipeline: gateway.unit: %w", err)
	}
	positive := false
	for i, p := range g.Outside {
		if !gatewayPattern.MatchString(p) {
			return fmt.Errorf("pipeline: gateway.outside[%d] %q: want a unit id (000.00.00.G22), a level-1 code (H30) or a letter (G), optionally after !", i, p)
		}
		positive = positive || !strings.HasPrefix(p, "!")
	}
	if !positive {
		return errors.New("pipeline: gateway.outside: list at least one code outside the city (e.g. G, or H with !H29)")
	}
	if g.matches(g.Unit) {
		return fmt.Errorf("pipeline: gateway.outside covers the gateway unit %s itself", g.Unit)
	}
	return nil
}

// matches reports whether u matches the outside patterns (a positive one
// and no exclusion).
func (g *Gateway) matches(u document.UnitID) bool {
	if g == nil || g.Unit == "" || u.Validate() != nil {
		return false
	}
	s := string(u)
	level1 := s[len(s)-3:]
	in := false
	for _, p := range g.Outside {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		var hit bool
		switch len(p) {
		case 1:
			hit = level1[:1] == p
		case 3:
			hit = level1 == p
		default:
			hit = s == p
		}
		if hit && neg {
			return false
		}
		in = in || hit
	}
	return in
}

// route says where a recipient of a document goes.
type route int

const (
	routeUnit     route = iota // a unit of the city (registered, perhaps disabled)
	routeGateway               // outside the city, through the gateway unit
	routeUpstream              // outside the city, served by the upstream itself (a document the gateway brought in)
	routeUnknown               // neither registered nor outside
)

// routeOf decides, for one recipient of a document, where it goes: the
// rule of Gateway, in one place. upstream says the document came in from
// the upstream (document.Upstream set); state is the recipient's registry
// state.
func (p *Pipeline) routeOf(ctx context.Context, upstream bool, r document.UnitID) (route, unitState, error) {
	state, err := p.unitState(ctx, r)
	switch {
	case err != nil:
		return 0, 0, err
	case state != unitUnknown:
		return routeUnit, state, nil
	case !p.cfg.Gateway.matches(r):
		return routeUnknown, state, nil
	case upstream:
		return routeUpstream, state, nil
	}
	return routeGateway, state, nil
}

// noticeTarget is where a notice meant for a recipient of a document goes
// (upstream as for routeOf): the recipient itself, the gateway for one
// outside the city it carries, or nowhere ("") for one the upstream serves.
func (p *Pipeline) noticeTarget(ctx context.Context, upstream bool, r document.UnitID) (document.UnitID, error) {
	rt, _, err := p.routeOf(ctx, upstream, r)
	switch {
	case err != nil:
		return "", err
	case rt == routeGateway:
		return p.cfg.Gateway.Unit, nil
	case rt == routeUpstream:
		return "", nil
	}
	return r, nil
}
