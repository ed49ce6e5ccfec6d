package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func TestRetriesWithIdempotencyKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	got := make(chan Event, 10)
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte("k"))
		m.Write(body)
		if r.Header.Get("X-Edx-Signature") != "sha256="+hex.EncodeToString(m.Sum(nil)) {
			t.Errorf("bad signature")
		}
		if calls < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var ev Event
		json.Unmarshal(body, &ev)
		got <- ev
	}))
	defer srv.Close()
	n := New(Config{URL: srv.URL}, []byte("k"), nil)
	n.backoff = func(int) time.Duration { return 10 * time.Millisecond }
	go n.Run(t.Context())
	n.Notify(Event{ID: "inbox.X", Type: InboxDocument, DocumentID: "X", Time: time.Now()})
	select {
	case ev := <-got:
		if ev.ID != "inbox.X" || ev.Type != InboxDocument {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event not delivered")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 3 || keys[0] != "inbox.X" || keys[2] != "inbox.X" {
		t.Fatalf("keys %v", keys)
	}
}

func TestPermanentFailureNotRetried(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
	}))
	defer srv.Close()
	n := New(Config{URL: srv.URL}, nil, nil)
	n.backoff = func(int) time.Duration { return time.Millisecond }
	n.deliver(t.Context(), Event{ID: "a"})
	if calls != 1 {
		t.Fatalf("%d calls", calls)
	}
	var nilN *Notifier
	nilN.Notify(Event{}) // disabled: no panic
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{{"", true}, {"https://dms.local/hook", true}, {"ftp://x", false}, {"not a url", false}} {
		c := Config{URL: tt.url}
		if err := c.Validate(); (err == nil) != tt.ok {
			t.Errorf("%q: %v", tt.url, err)
		}
	}
}
