// Package webhook tells the document system about new inbox documents and
// notices by POSTing JSON events to a URL it configured.
//
// Each event carries a stable id, sent as the Idempotency-Key header, so a
// document system that receives an event twice (a retry after a lost answer)
// can tell. Delivery is retried with backoff; events wait in memory, in
// order, and an event still undelivered when the agent stops is not sent
// again: the webhook is a nudge, and the API (GET /v1/inbox?since=...,
// GET /v1/documents/{id}) stays the truth to reconcile with.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/edxhub/edx/pkg/document"
)

// Config configures the webhook; an empty URL disables it.
type Config struct {
	URL string `yaml:"url"`
	// SecretFile holds a secret; when set, each event is signed:
	// X-Edx-Signature: sha256=<hex HMAC-SHA256 of the body>.
	SecretFile  string        `yaml:"secret_file"`
	Timeout     time.Duration `yaml:"timeout"`      // per attempt, default 10s
	MaxAttempts int           `yaml:"max_attempts"` // default 10
	Queue       int           `yaml:"queue"`        // events waiting, default 10000
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.URL == "" {
		return nil
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook: url %q: want an http or https URL", c.URL)
	}
	if c.Timeout < 0 || c.MaxAttempts < 0 || c.Queue < 0 {
		return fmt.Errorf("webhook: negative timeout, max_attempts or queue")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10
	}
	if c.Queue == 0 {
		c.Queue = 10000
	}
}

// Event types.
const (
	InboxDocument    = "inbox.document"    // a document arrived, verified, in the inbox
	DocumentAccepted = "document.accepted" // the hub accepted a sent document
	DocumentRejected = "document.rejected" // the hub rejected a sent document
	DocumentStatus   = "document.status"   // a recipient reported a status on a sent document
	StatusRejected   = "status.rejected"   // the hub refused a status this unit sent
	InboxStatus      = "inbox.status"      // the sender of a received document reported on it (13: it takes it back)
	WitnessAlert     = "witness.alert"     // the hub's transparency log is inconsistent (a fork, a rewrite, a rollback): not cosigned, evidence kept
)

// Event is one POST.
type Event struct {
	ID         string      `json:"id"` // stable: the same event always has the same id
	Type       string      `json:"type"`
	DocumentID document.ID `json:"document_id"`
	Time       time.Time   `json:"time"`
	Data       any         `json:"data,omitempty"`
}

// Notifier posts events in order, retrying each.
type Notifier struct {
	cfg     Config
	secret  []byte
	client  *http.Client
	log     *slog.Logger
	ch      chan Event
	backoff func(attempt int) time.Duration
}

// New returns a notifier, or nil when cfg has no URL (a nil Notifier drops
// every event).
func New(cfg Config, secret []byte, log *slog.Logger) *Notifier {
	if cfg.URL == "" {
		return nil
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{cfg: cfg, secret: secret, client: &http.Client{Timeout: cfg.Timeout}, log: log,
		ch: make(chan Event, cfg.Queue), backoff: func(n int) time.Duration {
			return min(time.Second<<min(n, 9), 5*time.Minute)
		}}
}

// Notify queues an event; it never blocks (a full queue drops the event,
// logged).
func (n *Notifier) Notify(ev Event) {
	if n == nil {
		return
	}
	select {
	case n.ch <- ev:
	default:
		n.log.Warn("webhook: queue full, event dropped", "event", ev.ID, "doc_id", ev.DocumentID)
	}
}

// Run posts queued events until ctx is done.
func (n *Notifier) Run(ctx context.Context) {
	if n == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-n.ch:
			n.deliver(ctx, ev)
		}
	}
}

func (n *Notifier) deliver(ctx context.Context, ev Event) {
	body, err := json.Marshal(ev)
	if err != nil {
		n.log.Error("webhook: encode", "event", ev.ID, "err", err)
		return
	}
	for attempt := 1; ; attempt++ {
		retry, err := n.post(ctx, ev, body)
		if err == nil {
			return
		}
		if !retry || attempt >= n.cfg.MaxAttempts || ctx.Err() != nil {
			n.log.Warn("webhook: event not delivered", "event", ev.ID, "doc_id", ev.DocumentID, "attempts", attempt, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(n.backoff(attempt)):
		}
	}
}

// post makes one attempt; it reports whether a failure is worth retrying.
func (n *Notifier) post(ctx context.Context, ev Event, body []byte) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", ev.ID)
	req.Header.Set("X-Edx-Event", ev.Type)
	if len(n.secret) > 0 {
		m := hmac.New(sha256.New, n.secret)
		m.Write(body)
		req.Header.Set("X-Edx-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return true, fmt.Errorf("webhook: %s", resp.Status)
	}
	return false, fmt.Errorf("webhook: %s (not retried)", resp.Status)
}
