package evidence

import (
	"strings"
	"testing"
	"time"
)

var (
	t0  = time.Date(2026, 11, 30, 8, 0, 0, 123000000, time.UTC)
	d1  = strings.Repeat("ab", 32)
	d2  = strings.Repeat("cd", 32)
	doc = "01KB2X3Y4Z5A6B7C8D9E0F1G2H"
)

func validEntries() map[string]Entry {
	return map[string]Entry{
		"accepted":                         {V: 1, Kind: Accepted, Time: t0, Doc: doc, Container: d1, Receipt: d2, Sender: "000.00.00.H29", Recipients: []string{"000.00.01.H29", "000.00.02.H29"}},
		"accepted, receipt not yet signed": {V: 1, Kind: Accepted, Time: t0, Doc: doc, Container: d1, Sender: "000.00.00.H29", Recipients: []string{"000.00.01.H29"}},
		"accepted, CRLs in force":          {V: 1, Kind: Accepted, Time: t0, Doc: doc, Container: d1, Sender: "000.00.00.H29", Recipients: []string{"000.00.01.H29"}, CRLs: []string{d1, d2}},
		"rejected, revoked":                {V: 1, Kind: Rejected, Time: t0, Container: d2, Reasons: []string{"signature.revoked"}, CRLs: []string{d2}},
		"rejected":                         {V: 1, Kind: Rejected, Time: t0, Container: d1, Reasons: []string{"signature.untrusted_root", "container.digest_mismatch"}},
		"rejected, known sender":           {V: 1, Kind: Rejected, Time: t0, Container: d1, Sender: "000.00.00.H29", Doc: doc, Reasons: []string{"recipient.unknown"}},
		"delivered":                        {V: 1, Kind: Delivered, Time: t0, Doc: doc, Container: d1, Unit: "000.00.01.H29"},
		"status":                           {V: 1, Kind: Status, Time: t0, Doc: doc, Unit: "000.00.01.H29", Status: "03", Digest: d2},
		"unit":                             {V: 1, Kind: UnitChange, Time: t0, Unit: "000.00.01.H29", Action: "registered", Digest: d1},
		"certificate":                      {V: 1, Kind: Certificate, Time: t0, Unit: "000.00.01.H29", Action: "revoked", Serial: "1f2e", Digest: d1},
		"hub cert":                         {V: 1, Kind: Certificate, Time: t0, Action: "issued", Serial: "01", Digest: d1},
		"trust":                            {V: 1, Kind: Trust, Time: t0, Action: "replaced", Digest: d1},
		"crl":                              {V: 1, Kind: CRL, Time: t0, Action: "installed", Digest: d1, Serial: "2a"},
	}
}

func TestEntryRoundTrip(t *testing.T) {
	for name, e := range validEntries() {
		t.Run(name, func(t *testing.T) {
			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseEntry(b)
			if err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			again, _ := got.Marshal()
			if string(again) != string(b) {
				t.Fatalf("round trip changed the bytes:\n%s\n%s", b, again)
			}
		})
	}
	// The canonical form is stable: a golden entry.
	e := validEntries()["accepted"]
	b, _ := e.Marshal()
	want := `{"v":1,"kind":"accepted","time":"2026-11-30T08:00:00.123Z","doc":"01KB2X3Y4Z5A6B7C8D9E0F1G2H","container":"` + d1 + `","receipt":"` + d2 + `","sender":"000.00.00.H29","recipients":["000.00.01.H29","000.00.02.H29"]}`
	if string(b) != want {
		t.Fatalf("canonical form changed:\n got %s\nwant %s", b, want)
	}
}

func TestEntryRefusals(t *testing.T) {
	bad := map[string]func(*Entry){
		"version 2":             func(e *Entry) { e.V = 2 },
		"no time":               func(e *Entry) { e.Time = time.Time{} },
		"local time":            func(e *Entry) { e.Time = t0.In(time.FixedZone("ICT", 7*3600)) },
		"unknown kind":          func(e *Entry) { e.Kind = "approved" },
		"no container":          func(e *Entry) { e.Container = "" },
		"upper-case digest":     func(e *Entry) { e.Container = strings.ToUpper(d1) },
		"short digest":          func(e *Entry) { e.Container = d1[:62] },
		"bad doc id":            func(e *Entry) { e.Doc = "doc-1" },
		"bad sender":            func(e *Entry) { e.Sender = "H29" },
		"bad recipient":         func(e *Entry) { e.Recipients = []string{"x"} },
		"recipient twice":       func(e *Entry) { e.Recipients = []string{"000.00.01.H29", "000.00.01.H29"} },
		"empty recipients":      func(e *Entry) { e.Recipients = []string{} },
		"field of another kind": func(e *Entry) { e.Status = "03" },
		"reasons on accepted":   func(e *Entry) { e.Reasons = []string{"a.b"} },
		"CRLs unsorted":         func(e *Entry) { e.CRLs = []string{d2, d1} },
		"CRL twice":             func(e *Entry) { e.CRLs = []string{d1, d1} },
		"CRLs empty":            func(e *Entry) { e.CRLs = []string{} },
		"CRL not a digest":      func(e *Entry) { e.CRLs = []string{"crl/" + d1} },
	}
	for name, f := range bad {
		e := validEntries()["accepted"]
		f(&e)
		if _, err := e.Marshal(); err == nil {
			t.Errorf("%s: marshalled", name)
		}
	}
	for name, e := range map[string]Entry{
		"bad reason":         {V: 1, Kind: Rejected, Time: t0, Container: d1, Reasons: []string{"Signature Untrusted"}},
		"bad status":         {V: 1, Kind: Status, Time: t0, Doc: doc, Unit: "000.00.01.H29", Status: "99"},
		"bad action":         {V: 1, Kind: UnitChange, Time: t0, Unit: "000.00.01.H29", Action: "hacked", Digest: d1},
		"bad serial":         {V: 1, Kind: Certificate, Time: t0, Action: "issued", Serial: "0x1F", Digest: d1},
		"delivered, no unit": {V: 1, Kind: Delivered, Time: t0, Doc: doc, Container: d1},
		"CRLs on a status":   {V: 1, Kind: Status, Time: t0, Doc: doc, Unit: "000.00.01.H29", Status: "03", CRLs: []string{d1}},
	} {
		if _, err := e.Marshal(); err == nil {
			t.Errorf("%s: marshalled", name)
		}
	}
	good, _ := func() ([]byte, error) { e := validEntries()["delivered"]; return e.Marshal() }()
	for name, b := range map[string]string{
		"unknown field":  strings.Replace(string(good), `{"v":1,`, `{"v":1,"extra":true,`, 1),
		"reordered":      strings.Replace(string(good), `{"v":1,"kind":"delivered",`, `{"kind":"delivered","v":1,`, 1),
		"spaces":         strings.Replace(string(good), `"v":1`, `"v": 1`, 1),
		"trailing":       string(good) + "\n",
		"two values":     string(good) + string(good),
		"offset time":    strings.Replace(string(good), "08:00:00.123Z", "15:00:00.123+07:00", 1),
		"escaped letter": strings.Replace(string(good), `"delivered"`, `"deliver\u0065d"`, 1),
		"not json":       "accepted",
		"huge":           strings.Repeat(" ", MaxEntrySize+1),
	} {
		if _, err := ParseEntry([]byte(b)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// TestKey: the same decision logged again (a redelivery, another hub) has
// the same key, whatever its time where the time is not the decision's; two
// decisions never share one.
func TestKey(t *testing.T) {
	acc := validEntries()["accepted, receipt not yet signed"]
	again := acc
	again.Time = t0.Add(time.Minute)
	again.CRLs = []string{d2}
	if acc.Key() != again.Key() {
		t.Errorf("an acceptance logged again has another key: %s, %s", acc.Key(), again.Key())
	}
	keys := map[string]string{}
	for name, e := range validEntries() {
		if name == "accepted" || name == "accepted, CRLs in force" {
			continue // the same acceptance, with or without the receipt's digest and CRLs
		}
		if other, ok := keys[e.Key()]; ok {
			t.Errorf("%s and %s share the key %s", name, other, e.Key())
		}
		keys[e.Key()] = name
	}
	st := validEntries()["status"]
	later := st
	later.Time = t0.Add(time.Second) // a 05 reported again, later
	if st.Key() == later.Key() {
		t.Error("two statuses of one code at two times share a key")
	}
}

func FuzzParseEntry(f *testing.F) {
	for _, e := range validEntries() {
		b, err := e.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEntry(data)
		if err != nil {
			return
		}
		// What parses is canonical: it encodes back to the same bytes.
		b, err := e.Marshal()
		if err != nil || string(b) != string(data) {
			t.Fatalf("a parsed entry does not re-encode to itself: %v\n%s\n%s", err, data, b)
		}
	})
}
