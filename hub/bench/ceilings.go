package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/broker"
	"github.com/edxhub/edx/pkg/container"
	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
	"github.com/edxhub/edx/pkg/protocol"
)

// asyncWindow bounds the bytes of asynchronous publishes in flight.
const asyncWindow = 32 << 20

// ceilings measures the bare components on containers of the scenario's
// size, as many as the scenario sent, on the hub's own NATS and S3.
func ceilings(ctx context.Context, h *hubProc, o Options) ([]Ceiling, error) {
	// The same bytes: a signed container of the scenario's size.
	ca, err := pki.OpenCA(filepath.Join(h.data, "pki"))
	if err != nil {
		return nil, err
	}
	trust, err := pki.LoadTrust(ca.RootsPath())
	if err != nil {
		return nil, err
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	cert, err := ca.Issue(pki.IssueRequest{Identifier: "999.99.99.B99", Name: "ceiling", Key: key.Public()})
	if err != nil {
		return nil, err
	}
	s, _ := pki.NewSignerFromKey(key, []*x509.Certificate{cert, ca.Issuing})
	d := document.Template(time.Now())
	d.From, d.To = "999.99.99.B99", []document.UnitID{"000.00.00.B01"}
	meta, _ := d.Marshal()
	payload := make([]byte, o.Size)
	rand.Read(payload)
	data, err := container.Build(meta, []container.File{{Name: "van-ban.pdf", Data: payload}}, s)
	if err != nil {
		return nil, err
	}
	n := o.Docs
	mk := func(name, part string, el time.Duration, count int) Ceiling {
		dps := float64(count) / el.Seconds()
		return Ceiling{Name: name, Part: part, DocsPerSec: dps, MBPerSec: dps * float64(len(data)) / 1e6}
	}
	var out []Ceiling

	// JetStream, with the hub's own credentials on the hub's server.
	keys, err := broker.LoadOrCreateKeys(filepath.Join(h.data, "nats", "keys"))
	if err != nil {
		return nil, err
	}
	creds, err := keys.IssueHubCreds()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(h.info.NATSURL, nats.UserCredentialBytes(creds))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	o.Progress("ceiling: JetStream", 0, 3)
	if len(data) <= protocol.InlineLimit {
		st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCH_CEILING", Subjects: []string{"bench.ceiling"},
			Storage: jetstream.FileStorage, Duplicates: time.Hour, MaxMsgSize: 8 << 20})
		if err != nil {
			return nil, err
		}
		defer js.DeleteStream(context.WithoutCancel(ctx), "BENCH_CEILING")
		el, err := publishCeiling(js, "bench.ceiling", data, n)
		if err != nil {
			return nil, err
		}
		out = append(out, mk("JetStream publish (async, Msg-Id)", partPublish, el, n))
		cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		got := 0
		batch := max(1, min(256, (32<<20)/len(data))) // within the client's pending limits
		for got < n {
			b, err := cons.Fetch(min(batch, n-got), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				return nil, err
			}
			k := 0
			for m := range b.Messages() {
				m.Ack()
				k++
			}
			if k == 0 {
				return nil, fmt.Errorf("jetstream consume stalled at %d", got)
			}
			got += k
		}
		out = append(out, mk("JetStream consume (pull, ack)", partConsume, time.Since(t0), n))
	} else {
		obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "BENCH_CEILING", Storage: jetstream.FileStorage})
		if err != nil {
			return nil, err
		}
		defer js.DeleteObjectStore(context.WithoutCancel(ctx), "BENCH_CEILING")
		t0 := time.Now()
		for i := 0; i < n; i++ {
			if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: fmt.Sprintf("o%d", i)}, bytes.NewReader(data)); err != nil {
				return nil, err
			}
		}
		out = append(out, mk("JetStream object store put", partPublish, time.Since(t0), n))
		t0 = time.Now()
		for i := 0; i < n; i++ {
			if _, err := obs.GetBytes(ctx, fmt.Sprintf("o%d", i)); err != nil {
				return nil, err
			}
		}
		out = append(out, mk("JetStream object store get", partConsume, time.Since(t0), n))
	}

	// S3 PUT with If-None-Match, on the hub's S3 endpoint.
	o.Progress("ceiling: S3", 1, 3)
	secret, err := os.ReadFile(filepath.Join(h.data, "s3", "secret.key"))
	if err != nil {
		return nil, err
	}
	arch, err := archive.New(ctx, archive.Config{Endpoint: h.info.S3Endpoint, AccessKey: "edx-hub",
		SecretKey: strings.TrimSpace(string(secret)), Bucket: fmt.Sprintf("bench-ceiling-%d", time.Now().UnixNano())}, nil)
	if err != nil {
		return nil, err
	}
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < min(o.Concurrency, 64); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if int(i) >= n {
					return
				}
				if _, err := arch.Put(ctx, fmt.Sprintf("c/%d/container.asice", i), data, container.Mimetype, nil); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	out = append(out, mk("S3 PUT (If-None-Match)", partS3Put, time.Since(t0), n))

	// CMS verification with the chain, on every core.
	o.Progress("ceiling: verify", 2, 3)
	next.Store(0)
	t0 = time.Now()
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for int(next.Add(1)) <= n {
				if _, r := container.VerifyBytes(data, container.DefaultLimits, container.Options{Trust: trust}); !r.Valid {
					mu.Lock()
					firstErr = fmt.Errorf("verify: %v", r.Reasons)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	out = append(out, mk("CMS verify with chain", partVerify, time.Since(t0), n))
	o.Progress("ceilings", 3, 3)
	return out, nil
}

// publishCeiling publishes n messages of data on subject asynchronously,
// each with its Msg-Id, and returns how long until the stream had them all.
// At most asyncWindow bytes are in flight: the server refuses a stream's
// messages beyond what its ingest queue holds (128 MiB: "429 too many
// requests"), as it would any client's.
func publishCeiling(js jetstream.JetStream, subject string, data []byte, n int) (time.Duration, error) {
	t0 := time.Now()
	window := max(1, asyncWindow/len(data))
	futs := make([]jetstream.PubAckFuture, 0, n)
	wait := func(f jetstream.PubAckFuture) error {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return fmt.Errorf("jetstream publish: %w", err)
		case <-time.After(5 * time.Minute):
			return fmt.Errorf("jetstream publish: no ack")
		}
	}
	for i := 0; i < n; i++ {
		if i >= window {
			if err := wait(futs[i-window]); err != nil {
				return 0, err
			}
		}
		m := nats.NewMsg(subject)
		m.Data = data
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("c-%d", i))
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return 0, err
		}
		futs = append(futs, f)
	}
	for _, f := range futs[max(0, n-window):] {
		if err := wait(f); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}
