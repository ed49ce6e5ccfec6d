package broker

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/edxhub/edx/pkg/protocol"
)

// BenchmarkUnitConnectionMemory measures what one connected unit costs the
// embedded NATS server: the live heap and the goroutine stacks it holds for
// each connection, with N units connected, each subscribed to its inbox as
// protocol.ConnectUnit does. The units speak the client protocol over bare
// TCP connections (no nats.go: its buffers would be counted), so nearly all
// of the heap measured is the server's.
//
//   - unit: the credentials IssueUnitCreds issues (UnitPermissions);
//   - unit-listed: a unit whose services are listed one by one, as for an
//     id whose first token has a log token's shape (unitMayWitnessAs):
//     what the permission edx.*.UNIT saves;
//   - unit-one-token: the same subjects with the unit's id as one token
//     ('.' as '_', as InboxPrefix and the consumer names already have it):
//     what that change of the subjects would save; no agent speaks it;
//   - no-permissions: a user without permissions, the server's own cost of
//     a connection.
//
// Run: go test ./hub/broker -run '^$' -bench UnitConnectionMemory -benchtime 1x
func BenchmarkUnitConnectionMemory(b *testing.B) {
	const n = 1000
	for _, v := range []struct {
		name   string
		perms  func(unit string) *jwt.Permissions
		prefix string // of every unit's id
	}{
		{"unit", func(u string) *jwt.Permissions { p := UnitPermissions(u); return &p }, ""},
		{"unit-listed", func(u string) *jwt.Permissions { p := UnitPermissions(u); return &p }, "0123456789abcdef."},
		{"unit-one-token", func(u string) *jwt.Permissions { p := UnitPermissions(strings.ReplaceAll(u, ".", "_")); return &p }, ""},
		{"no-permissions", func(string) *jwt.Permissions { return nil }, ""},
	} {
		b.Run(v.name, func(b *testing.B) {
			srv, err := Start(b.Context(), Config{Listen: "127.0.0.1:-1", StoreDir: b.TempDir(), KeysDir: b.TempDir(), MaxStore: TestMaxStore}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Shutdown()
			addr := hostPort(b, srv.ClientURL())
			k := srv.Keys()
			creds := make([][]byte, n)
			units := make([]string, n)
			for i := range n {
				units[i] = v.prefix + fmt.Sprintf("%03d.%02d.%02d.H29", i%1000, i/1000%100, i/100000)
				c, err := k.issueUser(&k.units, units[i], time.Hour, v.perms(units[i]), k.unitLimits.natsLimits())
				if err != nil {
					b.Fatal(err)
				}
				creds[i] = c
			}
			for b.Loop() {
				heap0, stack0 := liveMemory()
				conns := make([]net.Conn, 0, n)
				for i := range n {
					c, err := rawConnect(addr, creds[i], protocol.InboxPrefix(units[i])+".>")
					if err != nil {
						b.Fatalf("unit %d: %v", i, err)
					}
					conns = append(conns, c)
				}
				heap1, stack1 := liveMemory()
				b.ReportMetric(float64(heap1-heap0)/n, "heap-B/conn")
				b.ReportMetric(float64(stack1-stack0)/n, "stack-B/conn")
				for _, c := range conns {
					c.Close()
				}
				deadline := time.Now().Add(time.Minute)
				for srv.server().NumClients() > 0 && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
}

// liveMemory returns the live heap and the stacks in use, after two
// collections.
func liveMemory() (heap, stack int64) {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc), int64(m.StackInuse)
}

func hostPort(tb testing.TB, clientURL string) string {
	u, err := url.Parse(clientURL)
	if err != nil {
		tb.Fatal(err)
	}
	return u.Host
}

// rawConnect connects with creds over bare TCP: it signs the server's
// nonce, sends CONNECT, subscribes to sub and waits for the PONG that
// confirms both.
func rawConnect(addr string, creds []byte, sub string) (net.Conn, error) {
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.ParseDecoratedNKey(creds)
	if err != nil {
		return nil, err
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (net.Conn, error) { c.Close(); return nil, err }
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return fail(err)
	}
	var info struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "INFO ")), &info); err != nil {
		return fail(fmt.Errorf("INFO: %w", err))
	}
	sig, err := kp.Sign([]byte(info.Nonce))
	if err != nil {
		return fail(err)
	}
	connect, _ := json.Marshal(map[string]any{
		"jwt": tok, "sig": base64.RawURLEncoding.EncodeToString(sig),
		"verbose": false, "pedantic": false, "protocol": 1, "headers": true, "no_responders": true,
	})
	if _, err := fmt.Fprintf(c, "CONNECT %s\r\nSUB %s 1\r\nPING\r\n", connect, sub); err != nil {
		return fail(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fail(err)
		}
		switch {
		case strings.HasPrefix(line, "PONG"):
			c.SetDeadline(time.Time{})
			return c, nil
		case strings.HasPrefix(line, "-ERR"):
			return fail(fmt.Errorf("server: %s", strings.TrimSpace(line)))
		}
	}
}
