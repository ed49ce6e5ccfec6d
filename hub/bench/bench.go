// Package bench measures edx end to end against the bare components of the
// same machine, in one run: it starts an edx-hub process (embedded stack, or
// a configuration with an external NATS and S3), registers units over the
// hub's API, connects each as an agent would (its own NATS credentials and
// durable consumer), sends signed documents from random units to random
// recipients, and times submit → accepted notice and submit → delivered.
// Before the units connect, it measures on the same bytes the ceilings of the
// parts on the hub's own NATS and S3: JetStream publish and consume, S3 PUT
// with If-None-Match, and CMS verification with the chain. Every document is
// counted: none may be lost or doubled.
//
// With Options.HubURL it drives an existing deployment instead (one hub or
// several behind one address, on a NATS cluster): it registers its units
// through that hub's API with an admin token, or uses units registered
// before (UnitsDir, the bundles edx unit add writes); the hub's resources
// and the ceilings are then not measured. A rejected document counts as
// rejected; the run ends when every document is decided, or when nothing
// has moved for Options.Wait, with the undecided and undelivered counted.
package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/hub/fsinfo"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// Options describe one scenario.
type Options struct {
	Units       int     // units registered and connected (default 2)
	Docs        int     // documents sent (default 1000)
	Size        int     // payload bytes of each document (default 64 KiB)
	Concurrency int     // documents in flight (default 64); ignored with Rate
	Rate        float64 // documents per second; 0 sends as fast as Concurrency allows
	Recipients  int     // most recipients of a document (default 3, at most Units-1)
	HubBinary   string  // the edx-hub program
	HubConfig   string  // optional hub configuration (external NATS and S3)
	Data        string  // data directory for the hub (default a temporary one)
	Ceilings    bool    // also measure the bare components
	// HubURL drives an existing hub (http://host:port) instead of
	// starting one; Token is its admin token, for registering units.
	HubURL string
	Token  string
	// UnitsDir holds units registered before, one directory per unit as
	// edx unit add writes them (nats.creds, key.pem, cert.pem, and
	// agent.yaml for the NATS URL): they are used instead of registering
	// Units new ones. No agent may run for them meanwhile (the bench reads
	// their deliveries and notices).
	UnitsDir string
	// NATSURL overrides the NATS URL the units connect to (default: the
	// one the hub gives, or the units' agent.yaml).
	NATSURL string
	// Wait ends a run that has not moved for this long (default 60s):
	// what is not decided or delivered by then is counted as missing.
	Wait time.Duration
	// Evidence, for the edx-hub the bench starts: "on" runs it with its
	// transparency log time-stamped every second (sixty times the default,
	// so the cost of the TSA and the archive mirror shows), "off" with the
	// log disabled (tlog.disabled), "" as configured.
	Evidence string
	// LogBatchInterval, with Evidence "on", is the hub's
	// tlog.batch_interval (0: the hub's default).
	LogBatchInterval time.Duration
	// Keepalive is the units' keepalive, as an agent's nats.keepalive
	// (their pings and their pulls' heartbeats), and the ping interval of
	// the NATS server of a hub the bench starts (0: the defaults).
	Keepalive time.Duration
	// UnitConsumers is how the hub the bench starts reads its units
	// (nats.streams.unit_consumers: memory, file or cursor; default the
	// hub's); with cursor the units read by cursor, a hub the bench did
	// not start too.
	UnitConsumers string
	// HubMemoryLimitMiB is the memory_limit_mib of the hub the bench starts
	// (0: the hub's default; -1: none).
	HubMemoryLimitMiB int
	// Statuses, when not "", makes each recipient report 01 (delivered) on
	// each document it is delivered, as its agent would: "signed" with the
	// unit's key over the status and the container's digest
	// (container.SignStatus), "unsigned" as agents did before #11. The run
	// then also waits for the sender to be told of every status.
	Statuses string
	// Idle is how long the hub's CPU is measured with every unit
	// connected and nothing sent, before the run (default 10s; negative:
	// not measured). Only for the hub the bench started.
	Idle time.Duration
	// RemoteIdle, with HubURL, is how long every unit stays connected and
	// idle before the documents are sent: the servers' CPU at rest is then
	// measured from outside, over Result.IdleWindow.
	RemoteIdle time.Duration
	// Ready, when set, is called once the documents are built, just
	// before the measured send: runs side by side wait there for each
	// other (SideBySide), so that they send over the same seconds.
	Ready    func(ctx context.Context) error
	Progress func(stage string, done, total int)
	Log      *slog.Logger
}

func (o *Options) defaults() {
	if o.Units < 2 {
		o.Units = 2
	}
	if o.Docs <= 0 {
		o.Docs = 1000
	}
	if o.Size <= 0 {
		o.Size = 64 << 10
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Recipients <= 0 {
		o.Recipients = 3
	}
	if o.UnitsDir == "" {
		o.Recipients = min(o.Recipients, o.Units-1) // else once the units are loaded
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = func(string, int, int) {}
	}
	if o.Wait <= 0 {
		o.Wait = 60 * time.Second
	}
	if o.Idle == 0 {
		o.Idle = 10 * time.Second
	}
}

// Latency summarises durations.
type Latency struct {
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
	N   int           `json:"n"`
}

func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	return Latency{P50: q(.50), P90: q(.90), P99: q(.99), Max: ds[len(ds)-1], N: len(ds)}
}

// Tail is where a run's slowest deliveries, those slower than its p99,
// came from: the second of the run in which their documents were sent. Most
// of them in a few seconds is a stall (something in the path paused);
// spread over the run, it is queueing.
type Tail struct {
	Over    int `json:"over_p99"` // deliveries slower than the run's p99
	Seconds int `json:"seconds"`  // how many seconds of the run they were sent in
	// Worst are the seconds that sent most of them (up to 3), most first.
	Worst []TailSecond `json:"worst,omitempty"`
}

// TailSecond is one second of a run in Tail.
type TailSecond struct {
	At   time.Duration `json:"at"` // its start, from the run's start
	Over int           `json:"over_p99"`
	Max  time.Duration `json:"max"` // its slowest delivery
}

// tailOf finds Tail for deliveries sent at sent[i] (from the run's start)
// that took took[i], p99 being the run's.
func tailOf(sent, took []time.Duration, p99 time.Duration) *Tail {
	type second struct {
		over int
		max  time.Duration
	}
	by := map[time.Duration]*second{}
	t := &Tail{}
	for i, d := range took {
		if d <= p99 {
			continue
		}
		t.Over++
		at := sent[i].Truncate(time.Second)
		s := by[at]
		if s == nil {
			s = &second{}
			by[at] = s
		}
		s.over++
		s.max = max(s.max, d)
	}
	if t.Over == 0 {
		return nil
	}
	t.Seconds = len(by)
	for at, s := range by {
		t.Worst = append(t.Worst, TailSecond{At: at, Over: s.over, Max: s.max})
	}
	sort.Slice(t.Worst, func(i, j int) bool {
		a, b := t.Worst[i], t.Worst[j]
		if a.Over != b.Over {
			return a.Over > b.Over
		}
		return a.At < b.At
	})
	t.Worst = t.Worst[:min(3, len(t.Worst))]
	return t
}

// Ceiling is the throughput of one bare component on the same bytes.
type Ceiling struct {
	Name string `json:"name"`
	// Part is the part of a document's path it bounds (Part.Name).
	Part       string  `json:"part"`
	DocsPerSec float64 `json:"docs_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
}

// Result is what one scenario measured.
type Result struct {
	Units       int           `json:"units"`
	Docs        int           `json:"docs"`
	Size        int           `json:"size"`
	Concurrency int           `json:"concurrency"`
	Rate        float64       `json:"rate,omitempty"`
	Deliveries  int           `json:"deliveries"`
	Elapsed     time.Duration `json:"elapsed"`
	DocsPerSec  float64       `json:"docs_per_sec"`
	MBPerSec    float64       `json:"mb_per_sec"`
	Accepted    Latency       `json:"submit_to_accepted"`
	Delivered   Latency       `json:"submit_to_delivered"`
	// DeliveredTail is where the deliveries slower than Delivered.P99
	// came from: a stall or queueing.
	DeliveredTail *Tail     `json:"delivered_tail,omitempty"`
	Ceilings      []Ceiling `json:"ceilings,omitempty"`
	Slowest       string    `json:"slowest_ceiling,omitempty"`
	Ratio         float64   `json:"ratio_to_slowest,omitempty"`
	// Parts are what one accepted document cost the hub the bench
	// started (S3 requests and stream messages counted during the run),
	// each with its ceiling; Bound is the throughput of doing them one
	// after the other at their ceilings (1 / Σ per_doc / ceiling), the
	// most edx could reach with these parts; RatioToBound is edx's share
	// of it.
	Parts        []Part  `json:"parts,omitempty"`
	Bound        float64 `json:"summed_parts_bound,omitempty"`
	RatioToBound float64 `json:"ratio_to_bound,omitempty"`
	// Hub is the hub driven: its URL, or "" for the edx-hub the bench
	// started, whose resources it measures (HubMeasured).
	Hub          string        `json:"hub,omitempty"`
	HubMeasured  bool          `json:"hub_measured"`
	HubPeakRSS   int64         `json:"hub_peak_rss_bytes"`
	HubRSS       int64         `json:"hub_rss_bytes"`
	HubCPUPerDoc time.Duration `json:"hub_cpu_per_doc"`
	// DataFS is the filesystem of the data directory of the hub the bench
	// started, as the hub told it (its store, archive and index are
	// there). Its kind moves the figures: on an ext4 without a journal,
	// creating a file slows down after many deletions, and so do the
	// hub's S3 PUTs and its ceiling (package fsinfo).
	DataFS *fsinfo.Info `json:"data_fs,omitempty"`
	// UnitReading is how the units read what they receive: "consumer"
	// (one per unit) or "cursor" (Options.UnitConsumers).
	UnitReading string `json:"unit_reading"`
	// AgentsCPUPerDoc is the bench's own CPU per document over the same
	// window: its units' agents (signing statuses, witnessing the log) and
	// its load generator. With the hub's, it is what the machine spends on
	// a document when both share its cores.
	AgentsCPUPerDoc time.Duration `json:"agents_cpu_per_doc"`
	// HubIdleCPU is the hub's CPU, in cores, with every unit connected
	// and nothing sent, over IdleFor.
	HubIdleCPU float64       `json:"hub_idle_cpu_cores"`
	IdleFor    time.Duration `json:"idle_for,omitempty"`
	// IdleSettled is how long the bench waited, every unit connected, for
	// the hub's CPU to stop falling before it measured IdleFor: the
	// settling after registration is not what a connected unit costs at
	// rest.
	IdleSettled time.Duration `json:"idle_settled_after,omitempty"`
	// IdleWindow, with Options.RemoteIdle, is when every unit was
	// connected and idle (a hub the bench did not start: measure its
	// servers over it).
	IdleWindow *[2]time.Time `json:"idle_window,omitempty"`
	// LoadStart and LoadEnd are the machine's load averages (1, 5, 15
	// minutes) when the run started and ended: the machine may be shared,
	// so compare figures of one run with each other.
	LoadStart [3]float64 `json:"load_average_start"`
	LoadEnd   [3]float64 `json:"load_average_end"`
	// Lost counts documents neither accepted nor rejected (Undecided) and
	// deliveries of accepted documents that never came (Undelivered).
	Lost        int `json:"lost"`
	Undecided   int `json:"undecided"`
	Undelivered int `json:"undelivered"`
	Doubled     int `json:"doubled"`
	Rejected    int `json:"rejected"`
	// Reconnects counts the times the units' connections reconnected
	// while the bench held them (idle and sending), Redelivered the
	// deliveries and notices the server sent a unit again (after the
	// consumer's ack wait, 30 s): a message on its way when a unit
	// reconnects comes again then, so these explain a delivery's time of
	// 30 s or more.
	Reconnects  int `json:"reconnects"`
	Redelivered int `json:"redelivered"`
	// ReaderRestarts counts the units' cursor pulls that ended (no hub
	// answered a first request in time, or requests kept going
	// unanswered) and were started again from their floor, as an agent
	// does.
	ReaderRestarts int `json:"reader_restarts,omitempty"`
	// Stalled: the run ended because nothing moved for Options.Wait.
	Stalled bool `json:"stalled,omitempty"`
	// Missing names the first maxMissing documents lost, the earliest
	// sent first, to look for in the hubs' logs: "undecided DOC from
	// UNIT, sent at +S" (its sender was never told), "undelivered DOC to
	// UNIT, sent at +S".
	Missing []string `json:"missing,omitempty"`
	Cores   int      `json:"cores"`
	// Evidence is Options.Evidence; the hub's transparency log during the
	// run (from its metrics): entries appended, their rate over the run,
	// and the mean wait from an append to its entry durably sequenced.
	Evidence         string        `json:"evidence,omitempty"`
	LogEntries       int           `json:"log_entries,omitempty"`
	LogAppendsPerSec float64       `json:"log_appends_per_sec,omitempty"`
	LogAppendMean    time.Duration `json:"log_append_mean,omitempty"`
	// Statuses is Options.Statuses; StatusNotices the statuses the
	// senders were told of (StatusesSigned of them with the recipient's
	// signature, as the hub verified and archived it), Status the time from a document's submission
	// to its sender told of a recipient's status, StatusesMissing those
	// never told of (a status not recorded is not counted as lost: the
	// document was delivered).
	Statuses        string  `json:"statuses,omitempty"`
	StatusNotices   int     `json:"status_notices,omitempty"`
	StatusesSigned  int     `json:"statuses_signed,omitempty"`
	StatusesMissing int     `json:"statuses_missing,omitempty"`
	Status          Latency `json:"status"`

	start      time.Time   // when the measured send began
	acceptedAt []time.Time // when each accepted document was first told accepted
}

// SideBySide compares two runs made at the same time (Options.Ready) over
// the seconds both were sending: from the later start to the earlier of
// their last acceptances. Counted over each run's own length, the run that
// finishes first would flatter the other, which then has the machine to
// itself. It returns each run's accepted documents per second over that
// window, and the window.
func SideBySide(a, b *Result) (rateA, rateB float64, window time.Duration) {
	last := func(r *Result) time.Time {
		var t time.Time
		for _, at := range r.acceptedAt {
			if at.After(t) {
				t = at
			}
		}
		return t
	}
	from := a.start
	if b.start.After(from) {
		from = b.start
	}
	to := last(a)
	if lb := last(b); lb.Before(to) {
		to = lb
	}
	window = to.Sub(from)
	if window <= 0 {
		return 0, 0, 0
	}
	count := func(r *Result) float64 {
		n := 0
		for _, at := range r.acceptedAt {
			if !at.Before(from) && !at.After(to) {
				n++
			}
		}
		return float64(n)
	}
	return count(a) / window.Seconds(), count(b) / window.Seconds(), window
}

// unit is one simulated agent.
type unit struct {
	id     document.UnitID
	signer *pki.Signer
	nc     *nats.Conn
	js     jetstream.JetStream
	stage  *protocol.Stage
	its    []unitReader
	// uploads bounds the unit's staged uploads at once to what its quota
	// holds (nats.streams.upload_unit_quota): an upload cut short by the
	// quota would hold part of it until the hub sweeps it away.
	uploads chan struct{}
}

// unitReader reads what a unit receives: a pull of its consumer
// (protocol.UnitPull) or by cursor (protocol.CursorPull).
type unitReader interface {
	Next() (jetstream.Msg, error)
	Stop()
	Pulls() int
}

// run is one bench in progress.
type run struct {
	o       Options
	hub     *hubProc // the edx-hub the bench started; nil with HubURL
	base    string   // the hub's HTTP address
	token   string   // its admin token
	natsURL string
	units   []*unit
	mu      sync.Mutex
	sent    map[document.ID]time.Time
	expect  map[document.ID][]document.UnitID
	from    map[document.ID]document.UnitID
	acc     map[document.ID]map[uint64]time.Time // accepted notices by stream sequence
	del     map[string]map[uint64]time.Time      // deliveries (doc/recipient) by stream sequence
	rej     map[document.ID]bool
	stat    map[string]time.Time // statuses (doc/recipient) as their senders were told
	signed  int                  // of those, told with the recipient's signature
	slots   chan struct{}
	nAcc    atomic.Int64
	nDel    atomic.Int64
	nStat   atomic.Int64
	// reconnects of the units' connections, and messages the server
	// delivered to a unit more than once (each after the ack wait: a
	// reconnect or a lost pull request on their way)
	reconnects  atomic.Int64
	redelivered atomic.Int64
	restarts    atomic.Int64  // cursor pulls that ended and were started again
	idle        time.Duration // measured, or 0
	settled     time.Duration // waited before measuring idle
	idleWindow  *[2]time.Time // Options.RemoteIdle
	idleCPU     float64
	conns       *hubConns // to count what the hub stores; nil with HubURL
	before      *counts
}

// Run runs one scenario.
func Run(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	load := loadAvg()
	r := &run{o: o, sent: map[document.ID]time.Time{}, expect: map[document.ID][]document.UnitID{}, from: map[document.ID]document.UnitID{},
		acc: map[document.ID]map[uint64]time.Time{}, del: map[string]map[uint64]time.Time{}, rej: map[document.ID]bool{},
		stat: map[string]time.Time{}}
	if o.HubURL != "" {
		r.base, r.token, r.natsURL = strings.TrimRight(o.HubURL, "/"), o.Token, o.NATSURL
	} else {
		var err error
		if r.hub, err = startHub(ctx, o); err != nil {
			return nil, err
		}
		defer r.hub.stop()
		r.base, r.token, r.natsURL = r.hub.info.HTTP, r.hub.token, r.hub.info.NATSURL
		if o.NATSURL != "" {
			r.natsURL = o.NATSURL
		}
	}
	defer r.close()
	// The bare parts first, on the hub alone: measured after the run, with
	// every unit still connected, they are the parts' share of a hub busy
	// with its units (at 10,000 units, below the hub's own rate).
	var ceils []Ceiling
	if o.Ceilings && o.HubConfig == "" && r.hub != nil {
		var err error
		if ceils, err = ceilings(ctx, r.hub, o); err != nil {
			return nil, fmt.Errorf("ceilings: %w", err)
		}
	}
	if o.UnitsDir != "" {
		if err := r.loadUnits(ctx); err != nil {
			return nil, err
		}
	} else if err := r.register(ctx); err != nil {
		return nil, err
	}
	if r.hub != nil {
		var err error
		if r.conns, err = r.hub.conns(); err != nil {
			return nil, fmt.Errorf("hub connection: %w", err)
		}
		defer r.conns.close()
		if o.Idle > 0 {
			// Every unit connected, nothing sent: what they cost the hub
			// at rest (heartbeats, pull requests, timers).
			o.Progress("idle", 0, 1)
			if r.settled, err = r.hub.settle(ctx); err != nil {
				return nil, fmt.Errorf("idle CPU: %w", err)
			}
			if r.idleCPU, err = r.hub.idleCPU(ctx, o.Idle); err != nil {
				return nil, fmt.Errorf("idle CPU: %w", err)
			}
			r.idle = o.Idle
			o.Progress("idle", 1, 1)
		}
		if r.before, err = r.hub.count(ctx, r.conns); err != nil {
			return nil, fmt.Errorf("count: %w", err)
		}
	} else if o.RemoteIdle > 0 {
		// A hub the bench did not start: every unit connected and idle,
		// for its servers to be measured from outside.
		o.Progress("idle", 0, 1)
		from := time.Now()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(o.RemoteIdle):
		}
		r.idleWindow = &[2]time.Time{from, time.Now()}
		o.Progress("idle", 1, 1)
	}
	res, err := r.send(ctx)
	if err != nil {
		return nil, err
	}
	res.Hub = o.HubURL
	res.LoadStart = load
	res.Reconnects, res.Redelivered = int(r.reconnects.Load()), int(r.redelivered.Load())
	res.ReaderRestarts = int(r.restarts.Load())
	res.HubIdleCPU, res.IdleFor, res.IdleSettled, res.IdleWindow = r.idleCPU, r.idle, r.settled, r.idleWindow
	if r.before != nil {
		after, err := r.hub.count(ctx, r.conns)
		if err != nil {
			return nil, fmt.Errorf("count: %w", err)
		}
		res.Parts = parts(r.before, after, res.Accepted.N, o.Size)
	}
	if ceils != nil {
		res.Ceilings = ceils
		slow := res.Ceilings[0]
		for _, c := range res.Ceilings[1:] {
			if c.DocsPerSec < slow.DocsPerSec {
				slow = c
			}
		}
		res.Slowest, res.Ratio = slow.Name, res.DocsPerSec/slow.DocsPerSec
		if res.Parts, res.Bound = bound(res.Parts, res.Ceilings); res.Bound > 0 {
			res.RatioToBound = res.DocsPerSec / res.Bound
		}
	}
	res.LoadEnd = loadAvg()
	return res, nil
}

func (r *run) close() {
	for _, u := range r.units {
		if u == nil {
			continue // registration stopped before it
		}
		for _, it := range u.its {
			it.Stop()
		}
		if u.nc != nil {
			u.nc.Close()
		}
	}
}

// register adds the units through the hub's API and connects each.
func (r *run) register(ctx context.Context) error {
	r.units = make([]*unit, r.o.Units)
	var next atomic.Int64
	var done atomic.Int64
	var failed atomic.Bool // the first error ends the run: the others stop too
	errc := make(chan error, 16)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= r.o.Units || ctx.Err() != nil || failed.Load() {
					return
				}
				u, err := r.addUnit(ctx, i)
				if err != nil {
					failed.Store(true)
					errc <- err
					return
				}
				r.units[i] = u
				r.o.Progress("units", int(done.Add(1)), r.o.Units)
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func unitID(i int) document.UnitID {
	return document.UnitID(fmt.Sprintf("%03d.%02d.%02d.B%02d", i%1000, (i/1000)%100, 0, 1))
}

func (r *run) addUnit(ctx context.Context, i int) (*unit, error) {
	id := unitID(i)
	var b struct {
		KeyPEM  string `json:"key_pem"`
		CertPEM string `json:"cert_pem"`
		Creds   string `json:"nats_creds"`
		NATSURL string `json:"nats_url"`
	}
	if err := r.post(ctx, "/api/v1/units", map[string]string{"id": string(id), "name": "Bench unit " + string(id)}, &b); err != nil {
		return nil, fmt.Errorf("register %s: %w", id, err)
	}
	url := r.natsURL
	if url == "" {
		url = b.NATSURL
	}
	return r.connect(ctx, id, []byte(b.KeyPEM), []byte(b.CertPEM), []byte(b.Creds), url)
}

// connectAttempts is how many times a unit's connection, and then the
// lookup of its consumer, is tried before the run fails.
const connectAttempts = 10

// connect connects a unit as its agent would and consumes its deliveries
// and notices.
func (r *run) connect(ctx context.Context, id document.UnitID, keyPEM, certPEM, creds []byte, url string) (*unit, error) {
	s, err := pki.NewSigner(keyPEM, certPEM)
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", id, err)
	}
	u := &unit{id: id, signer: s, uploads: make(chan struct{}, max(1, broker.DefaultUploadUnitQuota/(2*(r.o.Size+1))))}
	// As an agent does, a first connection that times out (a loaded
	// machine) is tried again.
	for attempt := 1; ; attempt++ {
		opts := []nats.Option{nats.ReconnectWait(100 * time.Millisecond), nats.Timeout(5 * time.Second),
			nats.ReconnectHandler(func(*nats.Conn) { r.reconnects.Add(1) })}
		if r.o.Keepalive > 0 {
			opts = append(opts, nats.PingInterval(r.o.Keepalive))
		}
		u.nc, u.js, u.stage, err = protocol.ConnectUnit(ctx, url, creds, id, opts...)
		if err == nil {
			break
		}
		if attempt == connectAttempts || ctx.Err() != nil {
			return nil, fmt.Errorf("unit %s: connect %s: %w", id, url, err)
		}
		r.o.Log.Warn("bench: connect, will retry", "unit", id, "err", err)
		time.Sleep(time.Second)
	}
	it, err := r.reader(ctx, u)
	if err != nil {
		u.nc.Close()
		return nil, err
	}
	u.its = append(u.its, it)
	go func() {
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if err != jetstream.ErrMsgIteratorClosed {
					r.o.Log.Warn("bench: a unit stopped receiving", "unit", u.id, "err", err)
				}
				return
			}
			if err != nil {
				continue
			}
			if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
				r.redelivered.Add(1)
			}
			if protocol.IsNotice(m.Headers()) {
				r.notice(m)
			} else {
				r.delivered(u, m)
			}
		}
	}()
	return u, nil
}

// cursorReader reads u's messages by cursor as an agent does: a pull that
// ends with an error (no hub answered its first request in time, or its
// requests kept going unanswered: a loaded machine) is started again from
// its floor after a pause, not left ended (before, such a unit heard
// nothing more, and its documents counted as lost).
type cursorReader struct {
	r    *run
	u    *unit
	mu   sync.Mutex
	cur  *protocol.CursorPull
	done int // pulls of the pulls that ended
	stop bool
}

func (r *run) cursorReader(u *unit) *cursorReader {
	return &cursorReader{r: r, u: u, cur: protocol.PullCursor(u.nc, string(u.id), 0, 32<<20, r.o.Keepalive, nil, r.o.Log)}
}

func (c *cursorReader) Next() (jetstream.Msg, error) {
	for {
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		m, err := cur.Next()
		if err == nil || err == jetstream.ErrMsgIteratorClosed || !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return m, err
		}
		c.r.o.Log.Warn("bench: a unit's pull ended, started again", "unit", c.u.id, "err", err)
		c.r.restarts.Add(1)
		time.Sleep(time.Second)
		c.mu.Lock()
		if c.stop {
			c.mu.Unlock()
			return nil, jetstream.ErrMsgIteratorClosed
		}
		c.done += cur.Pulls()
		c.cur = protocol.PullCursor(c.u.nc, string(c.u.id), cur.Floor(), 32<<20, c.r.o.Keepalive, nil, c.r.o.Log)
		c.mu.Unlock()
	}
}

func (c *cursorReader) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stop = true
	c.cur.Stop()
}

func (c *cursorReader) Pulls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done + c.cur.Pulls()
}

// reader starts reading what u receives, as its agent would: by cursor
// when the hub keeps no consumer per unit (Options.UnitConsumers cursor),
// else from its one consumer for everything it receives, deliveries (what
// the agent would put into its inbox) and notices.
func (r *run) reader(ctx context.Context, u *unit) (unitReader, error) {
	if r.o.UnitConsumers == "cursor" {
		return r.cursorReader(u), nil
	}
	// Looked up as an agent does too: again, while the hub's NATS does not
	// answer in time (a loaded machine, thousands of units) or has not
	// made the consumer yet.
	var c jetstream.Consumer
	var err error
	for attempt := 1; ; attempt++ {
		if c, err = u.js.Consumer(ctx, protocol.StreamDeliver, protocol.UnitConsumer(string(u.id))); err == nil {
			break
		}
		if attempt == connectAttempts || ctx.Err() != nil {
			return nil, fmt.Errorf("unit %s: its consumer: %w", u.id, err)
		}
		r.o.Log.Warn("bench: unit's consumer, will look again", "unit", u.id, "err", err)
		time.Sleep(time.Second)
	}
	return protocol.PullUnit(u.nc, c, 32<<20, r.o.Keepalive)
}

func seq(m jetstream.Msg) uint64 {
	if md, err := m.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}

func (r *run) notice(m jetstream.Msg) {
	now := time.Now()
	n, err := protocol.ParseNotice(&nats.Msg{Data: m.Data()})
	m.Ack()
	if err != nil {
		return
	}
	switch n.Type {
	case protocol.NoticeAccepted:
		r.mu.Lock()
		if r.acc[n.DocumentID] == nil {
			r.acc[n.DocumentID] = map[uint64]time.Time{}
			r.nAcc.Add(1)
			if r.slots != nil {
				select {
				case <-r.slots:
				default:
				}
			}
		}
		r.acc[n.DocumentID][seq(m)] = now
		r.mu.Unlock()
	case protocol.NoticeRejected:
		// A rejection decides the document as an acceptance does: it
		// frees its slot, and no delivery is waited for.
		r.mu.Lock()
		if !r.rej[n.DocumentID] && r.acc[n.DocumentID] == nil {
			r.rej[n.DocumentID] = true
			if r.slots != nil {
				select {
				case <-r.slots:
				default:
				}
			}
		}
		r.mu.Unlock()
		r.o.Log.Warn("bench: rejected", "doc_id", n.DocumentID, "reasons", n.Reasons)
	case protocol.NoticeStatus:
		if n.Status == nil {
			return
		}
		k := string(n.DocumentID) + "/" + string(n.Status.Unit)
		r.mu.Lock()
		if _, ok := r.stat[k]; !ok {
			r.stat[k] = now
			r.nStat.Add(1)
			if len(n.StatusSignature) > 0 {
				r.signed++
			}
		}
		r.mu.Unlock()
	}
}

func (r *run) delivered(u *unit, m jetstream.Msg) {
	now := time.Now()
	d, err := protocol.ParseDelivery(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	if err == nil && d.Staged != "" {
		// The agent fetches a staged container before it has the document.
		if _, err = protocol.GetStaged(context.Background(), u.stage, d.Staged, d.StageKey, 1<<30); err == nil {
			now = time.Now()
		}
	}
	m.Ack()
	if err != nil {
		r.o.Log.Warn("bench: delivery", "unit", u.id, "err", err)
		return
	}
	k := string(d.DocumentID) + "/" + string(u.id)
	r.mu.Lock()
	first := r.del[k] == nil
	if first {
		r.del[k] = map[uint64]time.Time{}
		r.nDel.Add(1)
	}
	r.del[k][seq(m)] = now
	r.mu.Unlock()
	if first && r.o.Statuses != "" {
		go r.report(u, d.DocumentID, d.Container.SHA256)
	}
}

// report sends a recipient's 01 (delivered) on a document, as its agent
// would once the document is in its inbox: signed over the status and the
// container's digest when Options.Statuses is "signed".
func (r *run) report(u *unit, doc document.ID, sha string) {
	rep := &protocol.StatusReport{Status: document.Status{DocumentID: doc, Unit: u.id, Code: document.StatusDelivered,
		Time: time.Now().UTC().Truncate(time.Millisecond)}}
	if r.o.Statuses == "signed" {
		sig, err := container.SignStatus(rep.Status, sha, u.signer)
		if err != nil {
			r.o.Log.Warn("bench: sign status", "unit", u.id, "doc_id", doc, "err", err)
			return
		}
		rep.Signature = sig
	}
	m, err := protocol.StatusReportMsg(rep)
	if err != nil {
		r.o.Log.Warn("bench: status", "unit", u.id, "doc_id", doc, "err", err)
		return
	}
	for attempt := 1; attempt <= 5; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = u.js.PublishMsg(ctx, m)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	r.o.Log.Warn("bench: report status", "unit", u.id, "doc_id", doc, "err", err)
}

// doc builds one signed container from a random unit to random others.
func (r *run) doc(rng *rand.Rand, payload []byte) (*unit, *protocol.Container, []document.UnitID, error) {
	from := r.units[rng.IntN(len(r.units))]
	n := 1 + rng.IntN(r.o.Recipients)
	to := make([]document.UnitID, 0, n)
	for _, i := range rng.Perm(len(r.units)) {
		if len(to) == n {
			break
		}
		if r.units[i] != from {
			to = append(to, r.units[i].id)
		}
	}
	d := document.Template(time.Now())
	d.From, d.FromName, d.To = from.id, "Bench unit", to
	d.Subject = "Về việc đo hiệu năng trục liên thông văn bản"
	meta, err := d.Marshal()
	if err != nil {
		return nil, nil, nil, err
	}
	data, err := container.Build(meta, []container.File{{Name: "van-ban.pdf", Data: payload}}, from.signer)
	if err != nil {
		return nil, nil, nil, err
	}
	sum := sha256.Sum256(data)
	return from, &protocol.Container{DocumentID: d.ID, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Data: data}, to, nil
}

type job struct {
	from *unit
	c    *protocol.Container
	to   []document.UnitID
}

// send drives the documents and waits for every notice and delivery.
func (r *run) send(ctx context.Context) (*Result, error) {
	o := r.o
	payload := make([]byte, o.Size)
	for i := range payload {
		payload[i] = byte(i*7 + i/251) // not very compressible, like a PDF
	}
	// Build ahead while it fits in memory, so that signing is not timed.
	rng := rand.New(rand.NewPCG(1, 2))
	prebuilt := int64(o.Docs)*int64(o.Size) <= 1<<30
	var jobs []job
	if prebuilt {
		for i := 0; i < o.Docs; i++ {
			from, c, to, err := r.doc(rng, payload)
			if err != nil {
				return nil, err
			}
			jobs = append(jobs, job{from, c, to})
			o.Progress("build", i+1, o.Docs)
		}
	}
	if o.Ready != nil {
		if err := o.Ready(ctx); err != nil {
			return nil, err
		}
	}
	var cpu0 time.Duration
	if r.hub != nil {
		cpu0, _ = r.hub.cpu()
	}
	self0 := selfCPU()
	log0 := r.logStats(ctx)
	if o.Rate <= 0 {
		r.slots = make(chan struct{}, o.Concurrency)
	}
	var tick *time.Ticker
	if o.Rate > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
		defer tick.Stop()
	}
	start := time.Now()
	var pubErr error
	pubs := make(chan job, 64)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range pubs {
				if err := r.publish(ctx, j); err != nil && pubErr == nil {
					pubErr = err
				}
			}
		}()
	}
	for i := 0; i < o.Docs && ctx.Err() == nil; i++ {
		var j job
		if prebuilt {
			j = jobs[i]
			jobs[i] = job{}
		} else {
			from, c, to, err := r.doc(rng, payload)
			if err != nil {
				return nil, err
			}
			j = job{from, c, to}
		}
		if tick != nil {
			<-tick.C
		} else {
			r.slots <- struct{}{}
		}
		pubs <- j
		o.Progress("send", int(r.nAcc.Load()), o.Docs)
	}
	close(pubs)
	wg.Wait()
	if pubErr != nil {
		return nil, pubErr
	}
	// Every document decided, every accepted one delivered to each of
	// its recipients; or nothing moved for o.Wait.
	last, lastN := time.Now(), int64(-1)
	stalled := false
	for {
		a, d, st := r.nAcc.Load(), r.nDel.Load(), r.nStat.Load()
		o.Progress("send", int(a), o.Docs)
		r.mu.Lock()
		rej := len(r.rej)
		want := 0
		for id := range r.acc {
			want += len(r.expect[id])
		}
		r.mu.Unlock()
		if int(a)+rej >= o.Docs && int(d) >= want && (o.Statuses == "" || int(st) >= want) {
			break
		}
		if n := a + d + st + int64(rej); n != lastN {
			last, lastN = time.Now(), n
		} else if time.Since(last) > o.Wait {
			stalled = true // what is missing is counted below
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // anything doubled shows now
	res := &Result{Units: len(r.units), Docs: o.Docs, Size: o.Size, Concurrency: o.Concurrency, Rate: o.Rate, Cores: runtime.NumCPU(), Stalled: stalled,
		UnitReading: "consumer"}
	if o.UnitConsumers == "cursor" {
		res.UnitReading = "cursor"
	}
	if r.hub != nil {
		cpu1, _ := r.hub.cpu()
		res.HubMeasured = true
		res.HubPeakRSS, res.HubRSS = r.hub.rss()
		res.DataFS = r.hub.info.DataFS
		if n := len(r.acc); n > 0 {
			res.HubCPUPerDoc = (cpu1 - cpu0) / time.Duration(n)
		}
	}
	if n := len(r.acc); n > 0 {
		res.AgentsCPUPerDoc = (selfCPU() - self0) / time.Duration(n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var accs, dels, delSent, stats []time.Duration
	end := start
	res.start = start
	var lost []missed
	for id, t0 := range r.sent {
		seqs, ok := r.acc[id]
		if !ok {
			if !r.rej[id] {
				res.Undecided++
				lost = append(lost, missed{t0, fmt.Sprintf("undecided %s from %s, sent at +%s", id, r.from[id], t0.Sub(start).Round(time.Millisecond))})
			}
			continue
		}
		res.Doubled += len(seqs) - 1
		accs = append(accs, first(seqs).Sub(t0))
		res.acceptedAt = append(res.acceptedAt, first(seqs))
		for _, u := range r.expect[id] {
			seqs, ok := r.del[string(id)+"/"+string(u)]
			if !ok {
				res.Undelivered++
				lost = append(lost, missed{t0, fmt.Sprintf("undelivered %s to %s, sent at +%s", id, u, t0.Sub(start).Round(time.Millisecond))})
				continue
			}
			res.Doubled += len(seqs) - 1
			t := first(seqs)
			dels = append(dels, t.Sub(t0))
			delSent = append(delSent, t0.Sub(start))
			if t.After(end) {
				end = t
			}
			if o.Statuses == "" {
				continue
			}
			ts, ok := r.stat[string(id)+"/"+string(u)]
			if !ok {
				res.StatusesMissing++
				continue
			}
			stats = append(stats, ts.Sub(t0))
			if ts.After(end) {
				end = ts
			}
		}
	}
	res.Statuses, res.StatusNotices, res.StatusesSigned, res.Status = o.Statuses, len(stats), r.signed, summarize(stats)
	res.Rejected = len(r.rej)
	res.Undecided += o.Docs - len(r.sent) // never sent (a cancelled run)
	res.Lost = res.Undecided + res.Undelivered
	res.Missing = firstMissed(lost)
	res.Deliveries = len(dels)
	took := slices.Clone(dels) // summarize sorts dels
	res.Accepted, res.Delivered = summarize(accs), summarize(dels)
	res.DeliveredTail = tailOf(delSent, took, res.Delivered.P99)
	res.Elapsed = end.Sub(start)
	res.DocsPerSec = float64(len(r.acc)) / res.Elapsed.Seconds()
	res.MBPerSec = res.DocsPerSec * float64(o.Size) / 1e6
	res.Evidence = o.Evidence
	if log1 := r.logStats(ctx); log1.count > log0.count {
		res.LogEntries = int(log1.entries - log0.entries)
		res.LogAppendsPerSec = float64(res.LogEntries) / res.Elapsed.Seconds()
		res.LogAppendMean = time.Duration((log1.sum - log0.sum) / (log1.count - log0.count) * float64(time.Second))
	}
	return res, nil
}

// logSample is the hub's transparency log metrics at one time.
type logSample struct {
	entries, count, sum float64
}

// logStats reads the hub's log metrics (zero when it has none).
func (r *run) logStats(ctx context.Context) logSample {
	var s logSample
	req, err := http.NewRequestWithContext(ctx, "GET", r.base+"/metrics", nil)
	if err != nil {
		return s
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	for _, line := range strings.Split(string(b), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "edx_hub_tlog_entries_total{"):
			s.entries += v
		case name == "edx_hub_tlog_append_seconds_sum":
			s.sum = v
		case name == "edx_hub_tlog_append_seconds_count":
			s.count = v
		}
	}
	return s
}

func first(m map[uint64]time.Time) time.Time {
	var t time.Time
	for _, v := range m {
		if t.IsZero() || v.Before(t) {
			t = v
		}
	}
	return t
}

// maxMissing is how many lost documents a Result names.
const maxMissing = 20

// missed is a document lost, and when it was sent.
type missed struct {
	sent time.Time
	what string
}

// firstMissed names the maxMissing lost documents sent first, in the order
// they were sent (the run went over them in a map's order).
func firstMissed(lost []missed) []string {
	slices.SortStableFunc(lost, func(a, b missed) int { return a.sent.Compare(b.sent) })
	var names []string
	for _, m := range lost[:min(len(lost), maxMissing)] {
		names = append(names, m.what)
	}
	return names
}

// publish submits one document as its sender's agent would.
func (r *run) publish(ctx context.Context, j job) error {
	t0 := time.Now()
	r.mu.Lock()
	r.sent[j.c.DocumentID] = t0
	r.expect[j.c.DocumentID] = j.to
	r.from[j.c.DocumentID] = j.from.id
	r.mu.Unlock()
	if len(j.c.Data) > protocol.InlineLimit {
		select {
		case j.from.uploads <- struct{}{}:
			defer func() { <-j.from.uploads }()
		case <-ctx.Done():
			return ctx.Err()
		}
		for {
			err := protocol.UploadStaged(ctx, j.from.js, j.from.id, j.c)
			if err == nil {
				break
			}
			if !strings.Contains(err.Error(), "maximum messages per subject exceeded") || ctx.Err() != nil {
				return fmt.Errorf("stage: %w", err)
			}
			time.Sleep(50 * time.Millisecond) // the hub frees the quota as it reads uploads
		}
	}
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := j.from.js.PublishMsg(pctx, protocol.SubmitMsg(j.from.id, j.c))
		cancel()
		// A unit has a bounded number of submissions waiting for the hub
		// (nats.streams.submit_unit_pending): past it the server refuses
		// more, and an agent, like this, waits for the hub to catch up.
		if err != nil && strings.Contains(err.Error(), "maximum messages per subject exceeded") && ctx.Err() == nil {
			attempt = 0
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err == nil || attempt == 5 {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hubProc is the edx-hub child process.
type hubProc struct {
	cmd  *exec.Cmd
	data string
	tmp  bool
	info struct {
		NATSURL        string       `json:"nats_url"`
		S3Endpoint     string       `json:"s3_endpoint"`
		HTTP           string       `json:"http"`
		Data           string       `json:"data"`
		AdminTokenFile string       `json:"admin_token_file"`
		DataFS         *fsinfo.Info `json:"data_fs"`
	}
	token string
}

func startHub(ctx context.Context, o Options) (*hubProc, error) {
	h := &hubProc{data: o.Data}
	if h.data == "" {
		d, err := os.MkdirTemp("", "edx-bench")
		if err != nil {
			return nil, err
		}
		h.data, h.tmp = d, true
	} else if err := os.MkdirAll(h.data, 0o750); err != nil {
		return nil, fmt.Errorf("bench: --data: %w", err)
	}
	args := []string{"--data", h.data, "--http", "127.0.0.1:0", "--nats", "127.0.0.1:-1", "--s3", "127.0.0.1:0"}
	cfg := o.HubConfig
	if o.Evidence != "" || o.Keepalive > 0 || o.UnitConsumers != "" || o.HubMemoryLimitMiB != 0 {
		if cfg != "" {
			return nil, errors.New("bench: evidence on or off, a keepalive, unit consumers and a memory limit need the bench's own configuration, not --hub-config")
		}
		var y string
		if o.HubMemoryLimitMiB != 0 {
			y = fmt.Sprintf("memory_limit_mib: %d\n", o.HubMemoryLimitMiB)
		}
		switch o.Evidence {
		case "on":
			y += "tlog:\n  timestamp_interval: 1s\n"
			if o.LogBatchInterval > 0 {
				y += fmt.Sprintf("  batch_interval: %s\n", o.LogBatchInterval)
			}
		case "off":
			y += "tlog:\n  disabled: true\n"
		}
		if o.Keepalive > 0 || o.UnitConsumers != "" {
			y += "nats:\n"
		}
		if o.Keepalive > 0 {
			y += fmt.Sprintf("  embedded:\n    ping_interval: %s\n", o.Keepalive)
		}
		if o.UnitConsumers != "" {
			y += fmt.Sprintf("  streams:\n    unit_consumers: %s\n", o.UnitConsumers)
		}
		cfg = filepath.Join(h.data, "bench-hub.yaml")
		if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
			return nil, err
		}
	}
	if cfg != "" {
		args = append(args, "-config", cfg)
	}
	logf, err := os.Create(filepath.Join(h.data, "hub.log"))
	if err != nil {
		return nil, err
	}
	h.cmd = exec.Command(o.HubBinary, args...)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	os.Remove(filepath.Join(h.data, "hub.json"))
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.HubBinary, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, err := os.ReadFile(filepath.Join(h.data, "hub.json")); err == nil && json.Unmarshal(b, &h.info) == nil {
			if resp, err := http.Get(h.info.HTTP + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			h.stop()
			b, _ := os.ReadFile(filepath.Join(h.data, "hub.log"))
			return nil, fmt.Errorf("edx-hub did not become ready:\n%s", tail(b, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, err := os.ReadFile(h.info.AdminTokenFile)
	if err != nil {
		h.stop()
		return nil, err
	}
	h.token = strings.TrimSpace(string(b))
	return h, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (h *hubProc) stop() {
	if h.cmd.Process != nil && h.cmd.ProcessState == nil {
		h.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { h.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			h.cmd.Process.Kill()
			<-done
		}
	}
	if h.tmp {
		os.RemoveAll(h.data)
	}
}

func (r *run) post(ctx context.Context, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", r.base+path, strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %s", resp.Status, rb)
	}
	return json.Unmarshal(rb, out)
}

// rss returns the hub's peak and current resident set size (Linux /proc).
func (h *hubProc) rss() (peak, cur int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			peak = v << 10
		case "VmRSS:":
			cur = v << 10
		}
	}
	return peak, cur
}

// selfCPU is the bench process's CPU time so far (user + system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpu returns the hub's CPU time so far (user + system, Linux /proc).
func (h *hubProc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bench: unreadable /proc stat")
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0, errors.New("bench: short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}
