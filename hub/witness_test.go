package hub

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/evidence"
	"github.com/edxhub/edx/pkg/protocol"
	"github.com/edxhub/edx/pkg/reason"
	"github.com/edxhub/edx/pkg/witness"
)

// appendEntries logs n decisions directly (the pipeline's appends are not
// what these tests are about) and waits until a checkpoint covers them.
func (r *running) appendEntries(n int) {
	r.t.Helper()
	var last uint64
	for range n {
		idx, err := r.tlog.Append(r.t.Context(), &evidence.Entry{V: evidence.Version, Kind: evidence.Trust, Time: time.Now().UTC(),
			Action: "replaced", Digest: strings.Repeat(fmt.Sprintf("%02x", rand.Text()[0]), 32)})
		if err != nil {
			r.t.Fatal(err)
		}
		last = idx
	}
	if _, err := r.tlog.Await(r.t.Context(), last); err != nil {
		r.t.Fatal(err)
	}
}

// witnessOf is a unit's witness: its key, its state, its requests.
type witnessOf struct {
	t      *testing.T
	w      *witness.Witness
	svc    *protocol.Witness
	vkey   string
	origin string
}

func newWitness(t *testing.T, h *running, a *agent) *witnessOf {
	t.Helper()
	skey, vkey, err := witness.NewKey(service.WitnessName(a.id))
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.New(witness.Config{StateFile: filepath.Join(t.TempDir(), "witness"), Origin: h.tlog.Origin(), LogKey: h.tlogVKey, Key: skey})
	if err != nil {
		t.Fatal(err)
	}
	return &witnessOf{t: t, w: w, svc: &protocol.Witness{NC: a.nc, Unit: a.id}, vkey: vkey, origin: h.tlog.Origin()}
}

// cosignNewest verifies the newest offered checkpoint and hands the hub
// its cosignature; it returns the hub's answer.
func (w *witnessOf) cosignNewest() (*protocol.WitnessReply, uint64, error) {
	w.t.Helper()
	rep, err := w.svc.Do(w.t.Context(), &protocol.WitnessRequest{Op: protocol.WitnessCheckpoint, Origin: w.origin})
	if err != nil {
		w.t.Fatal(err)
	}
	line, err := w.w.Update(w.t.Context(), rep.Checkpoint, w.svc.Proofs(w.origin))
	if err != nil {
		w.t.Fatal(err)
	}
	size := checkpointSize(w.t, rep.Checkpoint)
	rep, err = w.svc.Do(w.t.Context(), &protocol.WitnessRequest{Op: protocol.WitnessCosign, Origin: w.origin, Size: size, Cosignature: string(line)})
	return rep, size, err
}

func checkpointSize(t *testing.T, cp []byte) uint64 {
	t.Helper()
	lines := strings.SplitN(string(cp), "\n", 3)
	var n uint64
	if len(lines) < 3 {
		t.Fatalf("checkpoint %q", cp)
	}
	fmt.Sscan(lines[1], &n)
	return n
}

func refusedWith(t *testing.T, what string, err error, c reason.Code) {
	t.Helper()
	if !protocol.IsWitnessRefusal(err, c) {
		t.Fatalf("%s: %v, want a refusal %s", what, err, c)
	}
}

// TestWitnessService: through the real hub and NATS, units witness the
// hub's log: the hub offers each new checkpoint to every unit, gives
// consistency proofs, keeps a cosignature verified with the unit's
// registered witness key (given at registration, or registered by the
// unit's own signed statement), serves the checkpoint with the cosignatures
// collected, and refuses what it must: a forged cosignature, one on a
// checkpoint it did not offer, a witness key statement signed by another
// unit, a second key, a unit with no key, a request too large, a proof
// beyond the log; and one unit's flood of requests is cut by its rate
// while the others go on.
func TestWitnessService(t *testing.T) {
	cfg := testConfig(t)
	cfg.Witness.Interval = time.Hour // offered by the test (h.witness.offer), so that no new offer races it
	cfg.Witness.MaxCosignatures = 2
	cfg.Witness.Rate, cfg.Witness.Burst = 1, 40
	h := startHub(t, cfg)

	// A is registered with a witness key, as edx unit add does; B and C
	// without.
	skeyA, vkeyA, err := witness.NewKey(service.WitnessName(uA))
	if err != nil {
		t.Fatal(err)
	}
	var bundle service.UnitBundle
	if code := h.api("POST", "/api/v1/units", service.UnitRequest{ID: uA, Name: "A", WitnessKey: vkeyA}, &bundle); code != http.StatusCreated {
		t.Fatalf("register A: %d", code)
	}
	if bundle.LogKey != h.tlogVKey || !slices.Equal(bundle.LogKeys, []string{h.tlogVKey}) || bundle.WitnessKey != vkeyA {
		t.Fatalf("bundle: log key %q, witness key %q", bundle.LogKey, bundle.WitnessKey)
	}
	// A witness key of another unit's name is refused.
	_, vkeyWrong, _ := witness.NewKey(service.WitnessName(uB))
	if code := h.api("POST", "/api/v1/units", service.UnitRequest{ID: uC, Name: "C", WitnessKey: vkeyWrong}, nil); code != http.StatusBadRequest {
		t.Fatalf("a witness key named for B registered for C: %d", code)
	}
	a := h.agentFrom(uA, &bundle)
	b, c := h.register(uB), h.register(uC)

	offered, err := a.nc.SubscribeSync(protocol.SubjectCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	a.nc.Flush()
	h.appendEntries(5)
	if err := h.witness.offer(t.Context()); err != nil {
		t.Fatal(err)
	}
	var cp []byte
	for cp == nil || checkpointSize(t, cp) < 5 {
		m, err := offered.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("no checkpoint offered: %v", err)
		}
		cp = m.Data
	}
	if _, err := evidence.OpenCheckpoint(cp, h.tlog.Origin(), h.tlog.Verifier()); err != nil {
		t.Fatalf("the offered checkpoint: %v", err)
	}

	wa := newWitness(t, h, a)
	wa.w, _ = witness.New(witness.Config{StateFile: filepath.Join(t.TempDir(), "a"), Origin: h.tlog.Origin(), LogKey: h.tlogVKey, Key: skeyA})
	wa.vkey = vkeyA
	rep, size, err := wa.cosignNewest()
	if err != nil || !rep.Kept {
		t.Fatalf("A's cosignature: %+v %v", rep, err)
	}
	// Again: the same cosignature, not kept twice.
	if rep, _, err := wa.cosignNewest(); err != nil || rep.Kept {
		t.Fatalf("A's cosignature again: %+v %v", rep, err)
	}

	// B has no key yet.
	wb := newWitness(t, h, b)
	_, _, err = wb.cosignNewest()
	refusedWith(t, "B without a key", err, reason.WitnessNoKey)
	// B registers its key with a statement signed by C's certificate:
	// refused; by its own: registered; another key afterwards: refused.
	wc := newWitness(t, h, c)
	forged, _ := container.SignWitnessKey(uB, wb.vkey, time.Now(), c.signer)
	_, err = wb.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessRegister, Binding: forged})
	refusedWith(t, "B's key signed by C", err, reason.WitnessInvalid)
	_, err = wc.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessRegister, Binding: forged})
	refusedWith(t, "B's key sent by C", err, reason.WitnessInvalid)
	binding, _ := container.SignWitnessKey(uB, wb.vkey, time.Now(), b.signer)
	if _, err := wb.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessRegister, Binding: binding}); err != nil {
		t.Fatalf("B registers its key: %v", err)
	}
	u, err := h.units.Get(t.Context(), uB)
	if err != nil || u.WitnessKey != wb.vkey || !bytes.Equal(u.WitnessBinding, binding) {
		t.Fatalf("B's record: %q %v", u.WitnessKey, err)
	}
	_, other, _ := witness.NewKey(service.WitnessName(uB))
	second, _ := container.SignWitnessKey(uB, other, time.Now(), b.signer)
	_, err = wb.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessRegister, Binding: second})
	refusedWith(t, "B's second key", err, reason.WitnessKeyMismatch)
	if rep, _, err := wb.cosignNewest(); err != nil || !rep.Kept {
		t.Fatalf("B's cosignature: %+v %v", rep, err)
	}
	// C's is verified but not kept: the checkpoint has enough.
	cbind, _ := container.SignWitnessKey(uC, wc.vkey, time.Now(), c.signer)
	if _, err := wc.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessRegister, Binding: cbind}); err != nil {
		t.Fatal(err)
	}
	if rep, _, err := wc.cosignNewest(); err != nil || rep.Kept {
		t.Fatalf("C's cosignature past max_cosignatures: %+v %v", rep, err)
	}

	// The log serves the checkpoint with A's and B's cosignatures: a
	// quorum of two of the registered witnesses. (By its size: B's
	// registration was logged, so a newer checkpoint may be out.)
	if bs := wb.w.Last(); checkpointSize(t, bs) != size {
		t.Fatalf("A cosigned size %d, B %d", size, checkpointSize(t, bs))
	}
	resp, err := http.Get(fmt.Sprintf("%s/log/checkpoints/%d", h.Info().HTTP, size))
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ws []note.Verifier
	for _, w := range []*witnessOf{wa, wb, wc} {
		v, _ := witness.NewVerifier(w.vkey)
		ws = append(ws, v)
	}
	vcp, got, err := witness.VerifyQuorum(served, h.tlog.Origin(), h.tlog.Verifier(), ws, 2)
	if err != nil || vcp.Size != size || len(got) != 2 {
		t.Fatalf("the served checkpoint (cosigned: %d) %s: %v %v", size, served, got, err)
	}

	// Refusals.
	line := func() string { // A's name and key hash, a signature of nobody's
		sig := make([]byte, 4+8+64)
		v, _ := witness.NewVerifier(vkeyA)
		sig[0], sig[1], sig[2], sig[3] = byte(v.KeyHash()>>24), byte(v.KeyHash()>>16), byte(v.KeyHash()>>8), byte(v.KeyHash())
		rand.Read(sig[4:])
		return "— " + v.Name() + " " + base64.StdEncoding.EncodeToString(sig) + "\n"
	}()
	h.appendEntries(1)
	if err := h.witness.offer(t.Context()); err != nil || h.witness.newest() <= size {
		t.Fatalf("a new checkpoint offered: %d, %v", h.witness.newest(), err)
	}
	_, err = wa.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessCosign, Size: h.witness.newest(), Cosignature: line})
	refusedWith(t, "a forged cosignature", err, reason.WitnessCosignature)
	// A size the log never had (a small one may have been offered on a
	// slow machine, as the log grew between two offers).
	_, err = wa.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessCosign, Size: h.witness.newest() + 1000, Cosignature: line})
	refusedWith(t, "a checkpoint not offered", err, reason.WitnessCheckpoint)
	_, err = wa.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessConsistency, From: 2, To: 1 << 40})
	refusedWith(t, "a proof beyond the log", err, reason.WitnessBeyondLog)
	big, _ := json.Marshal(protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessCosign, Size: size, Cosignature: strings.Repeat("x", protocol.MaxWitnessRequest)})
	m, err := a.nc.RequestWithContext(t.Context(), protocol.WitnessSubject(h.tlog.Origin(), string(uA)), big)
	if err != nil || !bytes.Contains(m.Data, []byte(reason.WitnessInvalid)) {
		t.Fatalf("a request too large: %v %s", err, m.Data)
	}

	// C floods the service: cut by its rate, while A is still answered.
	limited := 0
	for range 60 {
		_, err := wc.svc.Do(t.Context(), &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessCheckpoint})
		if protocol.IsWitnessRefusal(err, reason.WitnessRate) {
			limited++
		}
	}
	if limited < 10 {
		t.Fatalf("%d of C's 60 requests refused for its rate", limited)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := wa.svc.Do(ctx, &protocol.WitnessRequest{Origin: h.tlog.Origin(), Op: protocol.WitnessCheckpoint}); err != nil {
		t.Fatalf("A during C's flood: %v", err)
	}
	if n := gauge(t, h.Registry(), "edx_hub_witness_requests_total"); n < 60 {
		t.Fatalf("edx_hub_witness_requests_total %v", n)
	}
}
