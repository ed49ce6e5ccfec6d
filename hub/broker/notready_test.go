package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNotReady: what a starting hub waits out (a JetStream cluster that
// cannot take a stream or bucket yet) and what it reports at once.
func TestNotReady(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("bucket: %w", nats.ErrTimeout), true},
		{&jetstream.APIError{ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{fmt.Errorf("stream: %w", &jetstream.APIError{ErrorCode: 10005, Description: "no suitable peers for placement"}), true},
		{&jetstream.APIError{ErrorCode: 10039, Description: "jetstream not enabled for account"}, true},
		{fmt.Errorf("object store: %w", &jetstream.APIError{Code: 503, ErrorCode: 10035, Description: "account not found"}), true},
		{&jetstream.APIError{ErrorCode: 10047, Description: "insufficient storage resources available"}, false},
		{errors.New("nats: authorization violation"), false},
	} {
		if got := NotReady(c.err); got != c.want {
			t.Errorf("NotReady(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
