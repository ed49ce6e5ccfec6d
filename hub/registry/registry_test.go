package registry

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/index"
	"github.com/edxhub/edx/hub/projection"
	"github.com/edxhub/edx/hub/s3embed"
	"github.com/edxhub/edx/pkg/document"
)

const (
	uA = document.UnitID("000.01.00.H29")
	uB = document.UnitID("000.02.00.H29")
)

var bucketSeq struct {
	sync.Mutex
	n int
}

// newArchive is an archive in a bucket of its own on the shared test S3
// gateway (versitygw).
func newArchive(t *testing.T) *archive.Store {
	t.Helper()
	endpoint, ak, sk := s3embed.ForTest(t)
	bucketSeq.Lock()
	bucketSeq.n++
	bucket := fmt.Sprintf("registry-%d-%d", os.Getpid(), bucketSeq.n)
	bucketSeq.Unlock()
	a, err := archive.New(t.Context(), archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: bucket}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// open opens a registry on a connection of its own to srv, as one hub of a
// deployment does.
func open(t *testing.T, srv *broker.Server, arch *archive.Store) *Registry {
	t.Helper()
	r, err := Open(t.Context(), srv.HubJetStream(t), broker.BucketOptions{}, arch, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func register(t *testing.T, r *Registry, id document.UnitID, name string) Unit {
	t.Helper()
	u, err := r.Update(t.Context(), id, func(cur Unit, exists bool) (Unit, error) {
		cur.Name, cur.Event = name, "registered"
		cur.NATSUsers = []string{"U" + strings.Repeat("A", 55)}
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// eventually waits (at most 30s) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s", what)
		}
	}
}

// TestDecodeVersions: every record version this code reads, upgraded; a
// newer one is refused, not misread.
func TestDecodeVersions(t *testing.T) {
	for _, tc := range []struct {
		name, rec string
		want      Unit
		err       error
	}{
		{"v0: a unit as archived before the registry",
			`{"id":"000.01.00.H29","name":"Sở Nội vụ","created":"2026-01-02T03:04:05Z","cert_serial":"1f","disabled":true,
			  "nats_users":["UKEY"],"event":"disabled","at":"2026-02-01T00:00:00Z"}`,
			Unit{Unit: index.Unit{ID: uA, Name: "Sở Nội vụ", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), CertSerial: "1f",
				Disabled: true, NATSUsers: []string{"UKEY"}, Event: "disabled", At: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)}}, nil},
		{"v1",
			`{"v":1,"id":"000.01.00.H29","name":"Sở Nội vụ","created":"2026-01-02T03:04:05Z","cert_serial":"1f","disabled":false,
			  "nats_users":["UNEW"],"creds_expire":"2026-04-01T00:00:00Z",
			  "revoked":[{"key":"UOLD","at":"2026-02-01T00:00:00Z","expires":"2026-03-01T00:00:00Z"}],"event":"rotated","at":"2026-02-01T00:00:00Z"}`,
			Unit{Unit: index.Unit{ID: uA, Name: "Sở Nội vụ", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), CertSerial: "1f",
				NATSUsers: []string{"UNEW"}, CredsExpire: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), Event: "rotated", At: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)},
				Revoked: []Revocation{{Key: "UOLD", At: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), Expires: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}}}, nil},
		{"v1 with a witness key (not a v1 field): dropped",
			`{"v":1,"id":"000.01.00.H29","name":"x","created":"2026-01-02T03:04:05Z","cert_serial":"","disabled":false,"witness_key":"k"}`,
			Unit{Unit: index.Unit{ID: uA, Name: "x", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}, nil},
		{"v2: a witness key",
			`{"v":2,"id":"000.01.00.H29","name":"x","created":"2026-01-02T03:04:05Z","cert_serial":"","disabled":false,
			  "witness_key":"edx-witness/000.01.00.H29+01020304+BAAA","witness_binding":"MAMCAQE="}`,
			Unit{Unit: index.Unit{ID: uA, Name: "x", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
				WitnessKey: "edx-witness/000.01.00.H29+01020304+BAAA", WitnessBinding: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}, nil},
		{"v3: from a newer hub", `{"v":3,"id":"000.01.00.H29","name":"x"}`, Unit{}, ErrNewer},
		{"v0 written out", `{"v":0,"id":"000.01.00.H29"}`, Unit{}, ErrInvalid},
		{"not JSON", `{"v":1,`, Unit{}, ErrInvalid},
		{"no unit id", `{"v":1,"name":"x"}`, Unit{}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := Decode([]byte(tc.rec))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", u) != fmt.Sprintf("%+v", tc.want) {
				t.Fatalf("got  %+v\nwant %+v", u, tc.want)
			}
			// Written again, it is the lowest version that holds it (2
			// with a witness key) and reads the same.
			want := `"v": 1`
			if u.WitnessKey != "" {
				want = `"v": 2`
			}
			b, err := Encode(u)
			if err != nil || !strings.Contains(string(b), want) {
				t.Fatalf("encoded %s %v", b, err)
			}
			if u2, err := Decode(b); err != nil || fmt.Sprintf("%+v", u2) != fmt.Sprintf("%+v", u) {
				t.Fatalf("round trip: %+v %v", u2, err)
			}
		})
	}
}

// TestSharedAcrossHubs: a unit registered through one hub's registry is
// found by another's at once, even with that hub's view frozen (its watch
// stopped): a unit the view does not know is asked of the bucket. The view
// of a watching hub follows by itself. A unit disabled in a lagging view
// but enabled since is asked of the bucket too before any refusal.
func TestSharedAcrossHubs(t *testing.T) {
	srv, arch := broker.ForTest(t), newArchive(t)
	r1, r2, frozen := open(t, srv, arch), open(t, srv, arch), open(t, srv, arch)
	frozen.Close() // its view no longer follows the bucket

	register(t, r1, uA, "Sở Nội vụ")
	for _, r := range []*Registry{r2, frozen} {
		u, err := r.Get(t.Context(), uA)
		if err != nil || u.Name != "Sở Nội vụ" {
			t.Fatalf("get through another hub: %+v %v", u, err)
		}
	}
	if reg, dis, err := frozen.UnitStatus(t.Context(), uB); err != nil || reg || dis {
		t.Fatalf("unknown unit: %v %v %v", reg, dis, err)
	}
	register(t, r1, uB, "Sở Tài nguyên và Môi trường")
	if reg, dis, err := frozen.UnitStatus(t.Context(), uB); err != nil || !reg || dis {
		t.Fatalf("a unit registered a moment ago through another hub: registered %v disabled %v %v", reg, dis, err)
	}
	eventually(t, "the watching hub's view holds both units", func() bool { return len(r2.List()) == 2 })

	// Disabled then enabled through r1; the frozen view saw "disabled".
	setDisabled := func(d bool) {
		if _, err := r1.Update(t.Context(), uB, func(u Unit, _ bool) (Unit, error) { u.Disabled = d; return u, nil }); err != nil {
			t.Fatal(err)
		}
	}
	setDisabled(true)
	// (The frozen view still says active: a disabling reaches a view with
	// its watch; a lookup brings it in.)
	if u, err := frozen.Lookup(t.Context(), uB); err != nil || !u.Disabled {
		t.Fatalf("lookup: %+v %v", u, err)
	}
	if reg, dis, _ := frozen.UnitStatus(t.Context(), uB); !reg || !dis {
		t.Fatal("a disabled unit is not disabled")
	}
	setDisabled(false)
	if reg, dis, err := frozen.UnitStatus(t.Context(), uB); err != nil || !reg || dis {
		t.Fatalf("a unit enabled through another hub is refused by a lagging view: %v %v %v", reg, dis, err)
	}
	if _, err := frozen.Get(t.Context(), "000.09.00.H29"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown unit: %v", err)
	}
	if _, err := frozen.Get(t.Context(), "not.a.unit"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
}

// TestConcurrentUpdates: hubs changing one unit at once lose no change:
// each Update is a compare-and-set on the unit's revision, redone on a
// conflict.
func TestConcurrentUpdates(t *testing.T) {
	srv, arch := broker.ForTest(t), newArchive(t)
	regs := []*Registry{open(t, srv, arch), open(t, srv, arch)}
	register(t, regs[0], uA, "Sở Nội vụ")
	const each = 10
	var (
		wg    sync.WaitGroup
		calls sync.Map
	)
	for i, r := range regs {
		for j := range each {
			wg.Go(func() {
				key := fmt.Sprintf("U%d-%d", i, j)
				_, err := r.Update(t.Context(), uA, func(u Unit, exists bool) (Unit, error) {
					n, _ := calls.LoadOrStore(key, new(int))
					*n.(*int)++
					u.Revoked = append(u.Revoked, Revocation{Key: key, At: time.Now()})
					return u, nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	u, err := regs[1].Lookup(t.Context(), uA)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, rv := range u.Revoked {
		got[rv.Key] = true
	}
	retried := 0
	calls.Range(func(_, n any) bool {
		retried += *n.(*int) - 1
		return true
	})
	if len(got) != 2*each || len(u.Revoked) != 2*each {
		t.Fatalf("%d changes kept of %d (%d distinct), %d retried", len(u.Revoked), 2*each, len(got), retried)
	}
	t.Logf("%d concurrent changes, %d redone after a conflict", 2*each, retried)
}

// TestArchived: every change is archived as the unit's full record under
// units/<id>/<at>.json, which reads back as the record.
func TestArchived(t *testing.T) {
	srv, arch := broker.ForTest(t), newArchive(t)
	r := open(t, srv, arch)
	u := register(t, r, uA, "Sở Nội vụ")
	b, _, err := arch.Get(t.Context(), projection.UnitKey(uA, u.At))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil || got.Name != "Sở Nội vụ" || got.Event != "registered" || !got.At.Equal(u.At) {
		t.Fatalf("archived %+v %v", got, err)
	}
	// As reindex reads it: an index.Unit.
	var iu index.Unit
	if err := getJSON(b, &iu); err != nil || iu.ID != uA || len(iu.NATSUsers) != 1 {
		t.Fatalf("read as index.Unit: %+v %v", iu, err)
	}
}

// TestImport: units of an index from before the registry are copied once
// per source; a unit the registry holds already keeps its record; a second
// import of the same source does nothing, another source is imported.
func TestImport(t *testing.T) {
	srv, arch := broker.ForTest(t), newArchive(t)
	r := open(t, srv, arch)
	register(t, r, uB, "B as the registry has it")
	old := []Unit{
		{Unit: index.Unit{ID: uA, Name: "Sở Nội vụ", Created: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), NATSUsers: []string{"UA"}}},
		{Unit: index.Unit{ID: uB, Name: "B as the old index had it"}},
	}
	n, err := r.Import(t.Context(), "host:/data/index/edx.db", old)
	if err != nil || n != 1 {
		t.Fatalf("import: %d %v", n, err)
	}
	if u, _ := r.Lookup(t.Context(), uB); u.Name != "B as the registry has it" {
		t.Fatalf("B overwritten: %+v", u)
	}
	if u, _ := r.Lookup(t.Context(), uA); u.Name != "Sở Nội vụ" || len(u.NATSUsers) != 1 || !u.Created.Equal(old[0].Created) {
		t.Fatalf("A: %+v", u)
	}
	// Done: the marker stops a second copy (one that would now find A
	// changed since and keep it anyway).
	if n, err := r.Import(t.Context(), "host:/data/index/edx.db", []Unit{{Unit: index.Unit{ID: "000.03.00.H29", Name: "C"}}}); err != nil || n != 0 {
		t.Fatalf("second import: %d %v", n, err)
	}
	if _, err := r.Lookup(t.Context(), "000.03.00.H29"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the second import copied: %v", err)
	}
	if n, err := r.Import(t.Context(), "other-host:/data/index/edx.db", []Unit{{Unit: index.Unit{ID: "000.03.00.H29", Name: "C"}}}); err != nil || n != 1 {
		t.Fatalf("another hub's index: %d %v", n, err)
	}
	// The markers are not units.
	eventually(t, "the view holds the three units", func() bool { return len(r.List()) == 3 })
}

// TestRevocations: the revocations of every unit, until the credentials
// they name expire.
func TestRevocations(t *testing.T) {
	srv, arch := broker.ForTest(t), newArchive(t)
	r := open(t, srv, arch)
	now := time.Now()
	if _, err := r.Update(t.Context(), uA, func(u Unit, _ bool) (Unit, error) {
		u.Revoked = []Revocation{{Key: "UFOREVER", At: now}, {Key: "ULATER", At: now, Expires: now.Add(time.Hour)}, {Key: "UGONE", At: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)}}
		return u, nil
	}); err != nil {
		t.Fatal(err)
	}
	got := r.Revocations(now)
	if len(got) != 2 || !got["UFOREVER"].Equal(now) || !got["ULATER"].Equal(now) {
		t.Fatalf("revocations %v", got)
	}
	if u, _ := r.Lookup(t.Context(), uA); len(u.Revoked) != 2 {
		t.Fatalf("an expired revocation is kept: %+v", u.Revoked)
	}
	if got := r.Revocations(now.Add(2 * time.Hour)); len(got) != 1 {
		t.Fatalf("revocations later %v", got)
	}
}

func getJSON(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestWatchSurvivesRestart: the NATS server restarts (the hubs' connections
// drop and reconnect); the view goes on following the bucket.
func TestWatchSurvivesRestart(t *testing.T) {
	srv, arch := broker.ForTest(t), newArchive(t)
	r1, r2 := open(t, srv, arch), open(t, srv, arch)
	register(t, r1, uA, "Sở Nội vụ")
	eventually(t, "r2 sees A", func() bool { return len(r2.List()) == 1 })
	if err := srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B registered after the restart", func() bool {
		_, err := r1.Update(t.Context(), uB, func(u Unit, _ bool) (Unit, error) { u.Name = "B"; return u, nil })
		return err == nil
	})
	eventually(t, "r2's view follows after the restart", func() bool {
		for _, u := range r2.List() {
			if u.ID == uB {
				return true
			}
		}
		return false
	})
}

// BenchmarkUnitStatus: the pipeline's check of a unit, answered from the
// view (an active unit) and from the bucket's leader (a unit the view does
// not know).
func BenchmarkUnitStatus(b *testing.B) {
	srv := broker.ForTest(b)
	endpoint, ak, sk := s3embed.ForTest(b)
	arch, err := archive.New(b.Context(), archive.Config{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Bucket: fmt.Sprintf("registry-bench-%d", os.Getpid())}, quiet())
	if err != nil {
		b.Fatal(err)
	}
	r, err := Open(b.Context(), srv.HubJetStream(b), broker.BucketOptions{}, arch, quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Update(b.Context(), uA, func(u Unit, _ bool) (Unit, error) { u.Name = "A"; return u, nil }); err != nil {
		b.Fatal(err)
	}
	b.Run("view", func(b *testing.B) {
		for b.Loop() {
			if reg, _, err := r.UnitStatus(b.Context(), uA); err != nil || !reg {
				b.Fatal(reg, err)
			}
		}
	})
	b.Run("bucket", func(b *testing.B) {
		for b.Loop() {
			if reg, _, err := r.UnitStatus(b.Context(), uB); err != nil || reg {
				b.Fatal(reg, err)
			}
		}
	})
}

// TestLogs: each hub records its log once in the shared registry; the same
// record again is fine, another key under the same origin is refused; every
// hub reads every log; the records are no units.
func TestLogs(t *testing.T) {
	srv, arch := broker.ForTest(t), newArchive(t)
	r1, r2 := open(t, srv, arch), open(t, srv, arch)
	_, k1, _ := note.GenerateKey(rand.Reader, "edx.local/hub/one")
	_, k2, _ := note.GenerateKey(rand.Reader, "edx.local/hub/two")
	_, k1b, _ := note.GenerateKey(rand.Reader, "edx.local/hub/one")
	if err := r1.RecordLog(t.Context(), Log{Origin: "edx.local/hub/one", VKey: k1, Hub: "one"}); err != nil {
		t.Fatal(err)
	}
	if err := r1.RecordLog(t.Context(), Log{Origin: "edx.local/hub/one", VKey: k1, Hub: "one"}); err != nil {
		t.Fatalf("the same log again: %v", err)
	}
	if err := r2.RecordLog(t.Context(), Log{Origin: "edx.local/hub/two", VKey: k2, Hub: "two"}); err != nil {
		t.Fatal(err)
	}
	if err := r2.RecordLog(t.Context(), Log{Origin: "edx.local/hub/one", VKey: k1b, Hub: "copy"}); !errors.Is(err, ErrLogKey) {
		t.Fatalf("another key for log one: %v", err)
	}
	if err := r2.RecordLog(t.Context(), Log{Origin: "edx.local/hub/three", VKey: k2}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a key named for another log: %v", err)
	}
	for _, r := range []*Registry{r1, r2} {
		logs, err := r.Logs(t.Context())
		if err != nil || len(logs) != 2 || logs[0].VKey != k1 || logs[1].VKey != k2 {
			t.Fatalf("logs: %+v %v", logs, err)
		}
	}
	register(t, r1, uA, "Sở Nội vụ")
	eventually(t, "the view holds the unit", func() bool { return len(r2.List()) == 1 })
	if us := r1.List(); len(us) != 1 || us[0].ID != uA {
		t.Fatalf("units: %+v", us)
	}
}
