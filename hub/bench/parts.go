package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/protocol"
)

// Part is one bare component as edx uses it per accepted document: how
// many times (PerDoc, measured on the hub the bench started), and the
// ceiling the bench measured for it on the same bytes.
type Part struct {
	Name    string  `json:"name"`
	PerDoc  float64 `json:"per_doc"`
	Ceiling float64 `json:"ceiling_docs_per_sec,omitempty"`
}

// Names of the parts; each matches a Ceiling's Part.
const (
	partVerify  = "verify"
	partS3Put   = "s3_put"
	partPublish = "publish"
	partConsume = "consume"
	// partS3Other counts the other S3 requests (GET, HEAD, LIST...): listed,
	// not in the bound (their ceiling is not measured).
	partS3Other = "s3_other"
)

// counts is what the hub has done so far: the S3 requests its archive sent,
// by method, and the last sequence of each stream of the EDX and STAGE
// accounts (messages stored, acknowledged ones included).
type counts struct {
	s3      map[string]float64
	streams map[string]uint64
}

// hubConns are the bench's connections to the hub's NATS as the hub itself
// (its keys in the data directory), for counting what the hub stored.
type hubConns struct {
	edx, stage *nats.Conn
}

func (h *hubProc) conns() (*hubConns, error) {
	keys, err := broker.LoadOrCreateKeys(filepath.Join(h.data, "nats", "keys"))
	if err != nil {
		return nil, err
	}
	c := &hubConns{}
	for _, x := range []struct {
		issue func() ([]byte, error)
		nc    **nats.Conn
	}{{keys.IssueHubCreds, &c.edx}, {keys.IssueHubStageCreds, &c.stage}} {
		creds, err := x.issue()
		if err != nil {
			c.close()
			return nil, err
		}
		if *x.nc, err = nats.Connect(h.info.NATSURL, nats.UserCredentialBytes(creds)); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func (c *hubConns) close() {
	for _, nc := range []*nats.Conn{c.edx, c.stage} {
		if nc != nil {
			nc.Close()
		}
	}
}

// count reads the hub's counts now.
func (h *hubProc) count(ctx context.Context, c *hubConns) (*counts, error) {
	out := &counts{s3: map[string]float64{}, streams: map[string]uint64{}}
	for _, nc := range []*nats.Conn{c.edx, c.stage} {
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, err
		}
		l := js.ListStreams(ctx)
		for info := range l.Info() {
			out.streams[info.Config.Name] = info.State.LastSeq
		}
		if err := l.Err(); err != nil {
			return nil, fmt.Errorf("streams: %w", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, "GET", h.info.HTTP+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	const metric = `edx_hub_s3_requests_total{method="`
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), metric)
		if !ok {
			continue
		}
		method, value, ok := strings.Cut(line, `"} `)
		if v, err := strconv.ParseFloat(value, 64); ok && err == nil {
			out.s3[method] = v
		}
	}
	return out, sc.Err()
}

// parts returns what each accepted document of size bytes cost between two
// counts. Every message stored in an edx stream is read once (by the hub,
// its index, or the unit it is for), so consumes equal publishes with one
// hub. The chunks of a staged container (the upload stream, the stage
// store) count as one object put and get, as their ceilings measure them.
func parts(before, after *counts, accepted, size int) []Part {
	if accepted == 0 {
		return nil
	}
	n := float64(accepted)
	var put, other, msgs float64
	for m, v := range after.s3 {
		if m == http.MethodPut {
			put += v - before.s3[m]
		} else {
			other += v - before.s3[m]
		}
	}
	perObject := float64((size+4<<10+protocol.UploadChunkSize-1)/protocol.UploadChunkSize + 1) // chunks and the object's record
	for s, v := range after.streams {
		d := float64(v - before.streams[s])
		if s == protocol.StreamUpload || s == protocol.StageStream {
			d /= perObject
		}
		msgs += d
	}
	return []Part{
		{Name: partVerify, PerDoc: 1},
		{Name: partS3Put, PerDoc: put / n},
		{Name: partPublish, PerDoc: msgs / n},
		{Name: partConsume, PerDoc: msgs / n},
		{Name: partS3Other, PerDoc: other / n},
	}
}

// bound is the throughput of doing every part of a document one after the
// other at its ceiling: 1 / Σ (parts per document / ceiling). Parts with no
// ceiling are left out.
func bound(ps []Part, cs []Ceiling) ([]Part, float64) {
	ceil := map[string]float64{}
	for _, c := range cs {
		ceil[c.Part] = c.DocsPerSec
	}
	var sec float64
	for i := range ps {
		if c := ceil[ps[i].Name]; c > 0 {
			ps[i].Ceiling = c
			sec += ps[i].PerDoc / c
		}
	}
	if sec == 0 {
		return ps, 0
	}
	return ps, 1 / sec
}

// Settling before the idle measurement: right after the last unit
// connects, the hub is still busy with what registration left (consumers'
// first pulls, the collector, the page cache). settle samples the hub's
// CPU in windows of settleWindow until a window is no longer clearly below
// the one before (the fall has ended), for at most settleMax.
const (
	settleWindow = 5 * time.Second
	settleMax    = 90 * time.Second
	// settleFall is how much lower a window must be than the one before
	// for the hub to count as still settling.
	settleFall = 0.85
)

// settle waits until the hub's CPU stops falling (see settleWindow) and
// returns how long that took.
func (h *hubProc) settle(ctx context.Context) (time.Duration, error) {
	return settleCPU(ctx, settleWindow, settleMax, h.idleCPU)
}

// settleCPU samples CPU (sample measures it over one window) until a
// window is no longer below settleFall of the one before, for at most max;
// it returns the time the windows took.
func settleCPU(ctx context.Context, window, max time.Duration, sample func(context.Context, time.Duration) (float64, error)) (time.Duration, error) {
	var waited time.Duration
	last := -1.0
	for waited < max {
		c, err := sample(ctx, window)
		if err != nil {
			return waited, err
		}
		waited += window
		if last >= 0 && c >= settleFall*last {
			break
		}
		last = c
	}
	return waited, nil
}

// idleCPU measures the hub's CPU over d, as a fraction of one core.
func (h *hubProc) idleCPU(ctx context.Context, d time.Duration) (float64, error) {
	c0, err := h.cpu()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	c1, err := h.cpu()
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / float64(time.Since(t0)), nil
}

// loadAvg reads the machine's 1, 5 and 15 minute load averages (Linux).
func loadAvg() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}
