package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestExplainShareFull: a publish the server refuses because the unit's
// share of submissions or uploads is full (the error JetStream returns for
// discard new per subject) says so, and what to do.
func TestExplainShareFull(t *testing.T) {
	refused := &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages per subject exceeded"}
	err := fmt.Errorf("protocol: upload s/00: %w", refused)
	got := explainWait(err, "nats://127.0.0.1:4222", "000.00.00.H29", "nats.creds")
	if !strings.Contains(got, "as many submissions or uploads of unit 000.00.00.H29") || !strings.Contains(got, "send again") {
		t.Fatalf("explained as %q", got)
	}
}
