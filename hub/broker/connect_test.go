package broker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

// TestConnectErrorsSayWhatHappened: credentials the server refuses, another
// unit's credentials and a server that is not there each give a
// ConnectError of the right kind, at once.
func TestConnectErrorsSayWhatHappened(t *testing.T) {
	e := newEnv(t)
	other, err := broker.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := other.IssueUnitCreds(unitA, time.Hour)
	credsB, _ := e.srv.Keys().IssueUnitCreds(unitB, time.Hour)
	tests := []struct {
		name   string
		url    string
		creds  []byte
		kind   error
		local  bool
		reason string
	}{
		{"refused by the server", e.srv.ClientURL(), foreign, protocol.ErrCredentials, false, "authorization violation"},
		{"another unit's", e.srv.ClientURL(), credsB, protocol.ErrCredentials, true, "issued for unit " + unitB},
		{"not credentials", e.srv.ClientURL(), []byte("hello"), protocol.ErrCredentials, true, "not a NATS credentials file"},
		{"no server", "nats://127.0.0.1:1", foreign, protocol.ErrUnreachable, false, "no server answered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := connectUnit(t, tt.url, tt.creds, unitA)
			var ce *protocol.ConnectError
			if !errors.Is(err, tt.kind) || !errors.As(err, &ce) || ce.Local != tt.local || ce.Unit != unitA {
				t.Fatalf("err %v (%#v)", err, ce)
			}
			if len(ce.Reason) < len(tt.reason) || ce.Reason[:len(tt.reason)] != tt.reason {
				t.Fatalf("reason %q, want %q", ce.Reason, tt.reason)
			}
		})
	}
}

// TestHubReachesUnitInbox: what the hub publishes in EDX on a unit's inbox
// subject (a submission's decision, protocol.NoticeTo) reaches that unit,
// and only it.
func TestHubReachesUnitInbox(t *testing.T) {
	e := newEnv(t)
	a, b := e.unit(t, unitA), e.unit(t, unitB)
	inbox := a.nc.NewInbox()
	sub, err := a.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// unitB cannot listen there.
	if _, err := b.nc.SubscribeSync(inbox); err != nil {
		t.Fatal(err)
	}
	b.waitPermErr(t, inbox)
	if err := e.hub.PublishMsg(&nats.Msg{Subject: inbox, Data: []byte("decision")}); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil || string(m.Data) != "decision" {
		t.Fatalf("%v %v", m, err)
	}
	// Large deliveries still reach the unit through the STAGE account's
	// export of the same subjects (TestLargeObjects); no duplicate here.
	if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("a second copy: %s", m.Data)
	}
}
