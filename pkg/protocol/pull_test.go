package protocol

import (
	"strings"
	"testing"
	"time"
)

// TestPullUnitHeartbeatBounds: a pull's heartbeat (the unit's keepalive)
// outside MinUnitKeepalive to MaxUnitKeepalive is refused before anything
// is sent: above, nats.go would refuse each request (the heartbeat must be
// under half the request's life), below, an idle unit would flood the hub.
func TestPullUnitHeartbeatBounds(t *testing.T) {
	for _, hb := range []time.Duration{time.Second, MinUnitKeepalive - 1, MaxUnitKeepalive + 1, UnitPullExpiry / 2, -time.Minute} {
		if _, err := PullUnit(nil, nil, 1<<20, hb); err == nil || !strings.Contains(err.Error(), "heartbeat") {
			t.Errorf("heartbeat %s: %v, want it refused", hb, err)
		}
	}
	if 2*MaxUnitKeepalive >= UnitPullExpiry {
		t.Errorf("the longest keepalive %s is not under half a request's life %s", MaxUnitKeepalive, UnitPullExpiry)
	}
}
