package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edxhub/edx/pkg/document"
)

func TestSealOpenStage(t *testing.T) {
	plain := bytes.Repeat([]byte("container "), 1000)
	name := SubmitStageName()
	key, sealed, err := SealStage(name, plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != StageKeySize || len(sealed) != len(plain)+StageOverhead {
		t.Fatalf("key %d bytes, sealed %d bytes", len(key), len(sealed))
	}
	if bytes.Contains(sealed, []byte("container")) {
		t.Fatal("plaintext visible in the sealed object")
	}
	got, err := OpenStage(name, key, sealed)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v", err)
	}
	// A second seal of the same bytes uses another key and nonce.
	key2, sealed2, _ := SealStage(name, plain)
	if bytes.Equal(key, key2) || bytes.Equal(sealed[:12], sealed2[:12]) {
		t.Fatal("key or nonce reused")
	}

	flipped := bytes.Clone(sealed)
	flipped[len(flipped)/2] ^= 1
	otherKey := bytes.Clone(key)
	otherKey[0] ^= 1
	for _, tc := range []struct {
		name      string
		obj       string
		key, data []byte
	}{
		{"flipped byte", name, key, flipped},
		{"wrong key", name, otherKey, sealed},
		{"another name", SubmitStageName(), key, sealed},
		{"short key", name, key[:16], sealed},
		{"truncated", name, key, sealed[:10]},
		{"empty", name, key, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := OpenStage(tc.obj, tc.key, tc.data); !errors.Is(err, ErrStageInvalid) {
				t.Fatalf("err %v, want ErrStageInvalid", err)
			}
		})
	}
}

func TestStageNames(t *testing.T) {
	s, d := SubmitStageName(), DeliverStageName()
	if validStageName(s, submitStagePrefix) != nil || validStageName(d, deliverStagePrefix) != nil {
		t.Fatalf("names %q %q", s, d)
	}
	if s == SubmitStageName() || d == DeliverStageName() {
		t.Fatal("names repeat")
	}
	for _, bad := range []string{d, "s/", "s/" + strings.Repeat("A", 32), "s/" + strings.Repeat("a", 31), "submit/000.01.00.H29/x", s + "/x"} {
		if validStageName(bad, submitStagePrefix) == nil {
			t.Errorf("%q accepted as a submission name", bad)
		}
	}
}

func TestStagedContainerHeaders(t *testing.T) {
	data := []byte("PK staged")
	sum := sha256.Sum256(data)
	id := document.NewID(time.Now())
	key := bytes.Repeat([]byte{1}, StageKeySize)
	c := &Container{DocumentID: id, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Staged: SubmitStageName(), StageKey: key, StagedSeq: 7}
	m := SubmitMsg("000.01.00.H29", c)
	if len(m.Data) != 0 || m.Header.Get(HeaderStageKey) != base64.StdEncoding.EncodeToString(key) || m.Header.Get(HeaderStagedSeq) != "7" {
		t.Fatalf("msg %v %q", m.Header, m.Data)
	}
	_, got, err := ParseSubmit(m)
	if err != nil || got.Staged != c.Staged || !bytes.Equal(got.StageKey, key) || got.StagedSeq != 7 {
		t.Fatalf("%v %+v", err, got)
	}
	for _, tc := range []struct {
		name string
		edit func(h nats.Header)
	}{
		{"no key", func(h nats.Header) { h.Del(HeaderStageKey) }},
		{"short key", func(h nats.Header) { h.Set(HeaderStageKey, base64.StdEncoding.EncodeToString(key[:16])) }},
		{"key not base64", func(h nats.Header) { h.Set(HeaderStageKey, "%%%") }},
		{"delivery name on a submission", func(h nats.Header) { h.Set(HeaderStaged, DeliverStageName()) }},
		{"guessable name", func(h nats.Header) { h.Set(HeaderStaged, "submit/000.01.00.H29/"+string(id)) }},
		{"key without object", func(h nats.Header) { h.Del(HeaderStaged) }},
		{"no first chunk", func(h nats.Header) { h.Del(HeaderStagedSeq) }},
		{"first chunk 0", func(h nats.Header) { h.Set(HeaderStagedSeq, "0") }},
		{"first chunk not a number", func(h nats.Header) { h.Set(HeaderStagedSeq, "-1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := SubmitMsg("000.01.00.H29", c)
			tc.edit(m.Header)
			if tc.name == "key without object" {
				m.Data = data
			}
			if _, _, err := ParseSubmit(m); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzParseSubmit(f *testing.F) {
	f.Add("01J0000000000000000000000A", strings.Repeat("a", 64), "9", "", "", []byte("PK container"))
	f.Add("01J0000000000000000000000A", strings.Repeat("a", 64), "9", SubmitStageName(), base64.StdEncoding.EncodeToString(make([]byte, 32)), []byte(nil))
	f.Fuzz(func(t *testing.T, id, sha, size, staged, key string, body []byte) {
		m := nats.NewMsg("edx.submit.000.01.00.H29")
		for h, v := range map[string]string{HeaderDocID: id, HeaderSHA256: sha, HeaderSize: size, HeaderStaged: staged, HeaderStageKey: key} {
			if v != "" {
				m.Header.Set(h, v)
			}
		}
		m.Data = body
		_, c, err := ParseSubmit(m)
		if err == nil && (c.Staged != "") != (len(c.StageKey) == StageKeySize) {
			t.Fatalf("staged %q with a key of %d bytes accepted", c.Staged, len(c.StageKey))
		}
	})
}

func FuzzParseStageRequest(f *testing.F) {
	f.Add(`{"name":"`+DeliverStageName()+`","slot":1}`, "edx.stage.000.01.00.H29")
	f.Add(`{"name":"`+SubmitStageName()+`","slot":9}`, "edx.stage.x")
	f.Fuzz(func(t *testing.T, body, subject string) {
		m := nats.NewMsg(subject)
		m.Data = []byte(body)
		_, r, err := ParseStageRequest(m)
		if err == nil && (r.Slot < 0 || r.Slot >= StageSlots || validStageName(r.Name, deliverStagePrefix) != nil) {
			t.Fatalf("accepted %+v", r)
		}
	})
}
