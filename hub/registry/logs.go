package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edxhub/edx/hub/broker"
)

// Each hub has a transparency log of its own (hub/tlog: its origin, its
// key). The registry records every hub's log, so that any hub can hand a
// unit's agent the keys of all of them (the unit bundle's log keys) and
// the agent witnesses every log from the start. A log's record is written
// once, by its hub, under logKeyPrefix and the SHA-256 of its origin;
// another key under the same origin is refused (two hubs must never share
// an origin). The unit view's watch skips these keys (metaPrefix).

// logKeyPrefix starts the keys of the logs' records.
const logKeyPrefix = metaPrefix + "log."

// Log is one hub's transparency log.
type Log struct {
	Origin string `json:"origin"`
	// VKey is the log's note verifier key (its name is the origin).
	VKey string `json:"vkey"`
	// Hub is the id of the hub that writes it; At when it was recorded.
	Hub string    `json:"hub,omitempty"`
	At  time.Time `json:"at"`
}

// ErrLogKey: the registry holds another key for a log's origin.
var ErrLogKey = errors.New("registry: another key is recorded for the log")

func logKey(origin string) string {
	s := sha256.Sum256([]byte(origin))
	return logKeyPrefix + hex.EncodeToString(s[:16])
}

// RecordLog records a hub's log, once: a log recorded with the same key
// is left as it is; with another, ErrLogKey.
func (r *Registry) RecordLog(ctx context.Context, l Log) error {
	if l.Origin == "" || !strings.HasPrefix(l.VKey, l.Origin+"+") {
		return fmt.Errorf("%w: log %q with key %q", ErrInvalid, l.Origin, l.VKey)
	}
	if l.At.IsZero() {
		l.At = r.now().UTC()
	}
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("registry: log %s: %w", l.Origin, err)
	}
	key := logKey(l.Origin)
	_, err = r.b.Create(ctx, key, b, 0)
	if !errors.Is(err, broker.ErrRevision) {
		if err != nil {
			return fmt.Errorf("registry: log %s: %w", l.Origin, err)
		}
		return nil
	}
	e, err := r.b.Latest(ctx, key)
	if err != nil {
		return fmt.Errorf("registry: log %s: %w", l.Origin, err)
	}
	var had Log
	if err := json.Unmarshal(e.Value, &had); err != nil {
		return fmt.Errorf("%w: the record of log %s: %v", ErrInvalid, l.Origin, err)
	}
	if had.VKey != l.VKey {
		return fmt.Errorf("%w: log %s is recorded with key %s (hub %s), not %s: give each hub its own tlog.origin", ErrLogKey, l.Origin, had.VKey, had.Hub, l.VKey)
	}
	return nil
}

// Logs returns every hub's log recorded, oldest first.
func (r *Registry) Logs(ctx context.Context) ([]Log, error) {
	es, err := r.b.Values(ctx, logKeyPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("registry: logs: %w", err)
	}
	var out []Log
	for _, e := range es {
		var l Log
		if err := json.Unmarshal(e.Value, &l); err != nil || l.Origin == "" || !strings.HasPrefix(l.VKey, l.Origin+"+") {
			r.log.Error("registry: a log record not read", "key", e.Key, "err", err)
			continue
		}
		out = append(out, l)
	}
	slices.SortStableFunc(out, func(a, b Log) int { return a.At.Compare(b.At) })
	return out, nil
}
