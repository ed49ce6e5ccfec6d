// Command edx-hub runs the edx hub. With no configuration it runs everything
// embedded under ./edx-data: NATS with JetStream, an S3 gateway, the SQLite
// index and a development CA.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/edxhub/edx/hub"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `edx-hub — the edx document exchange hub

Usage:
  edx-hub [flags]            run the hub
  edx-hub reindex [flags]    rebuild the index from the archive alone
  edx-hub nats-config        a NATS server's configuration for the hubs' cluster (operator, accounts,
                             JetStream, routes), and the hub's credentials; -h for its flags
  edx-hub -check -config F   validate a configuration and exit

With no -config, everything runs embedded under -data (default ./edx-data):
NATS with JetStream, an S3 gateway (versitygw), the SQLite index and a
development CA. See configs/hub.yaml for an external NATS cluster and S3.

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && args[0] == "reindex" {
		cmd, args = "reindex", args[1:]
	}
	if len(args) > 0 && args[0] == "nats-config" {
		return natsConfig(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("edx-hub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "YAML configuration file (configs/hub.yaml)")
	data := fs.String("data", "", "data directory (overrides the file's data:)")
	check := fs.Bool("check", false, "validate the configuration and exit")
	httpAddr := fs.String("http", "", "HTTP listen address (overrides http.listen)")
	natsAddr := fs.String("nats", "", "embedded NATS listen address (overrides nats.embedded.listen)")
	s3Addr := fs.String("s3", "", "embedded S3 listen address (overrides s3.embedded_listen)")
	updateConsumers := fs.Bool("update-consumers", false,
		"update the pipeline's consumers every hub shares to this hub's pipeline.ack_wait and max_ack_pending (without it, existing ones are kept as they are)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg := &hub.Config{}
	if *cfgPath != "" {
		c, err := hub.LoadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, "edx-hub:", err)
			return 2
		}
		cfg = c
	}
	if *data != "" {
		cfg.Data = *data
	}
	if *httpAddr != "" {
		cfg.HTTP.Listen = *httpAddr
	}
	if *natsAddr != "" {
		cfg.NATS.Embedded.Listen = *natsAddr
	}
	if *s3Addr != "" {
		cfg.S3.EmbeddedListen = *s3Addr
	}
	cfg.Pipeline.UpdateConsumers = *updateConsumers
	if err := cfg.SetDefaults(); err != nil {
		fmt.Fprintln(stderr, "edx-hub:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "edx-hub: invalid configuration:", err)
		return 2
	}
	if *check {
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}
	log := newLogger(cfg.Log, stderr)
	slog.SetDefault(log)
	// The transparency log's library (tessera) logs through klog: into the
	// hub's log, with its level and format.
	klog.SetSlogLogger(log.With("component", "tessera"))
	if os.Getenv("GOMEMLIMIT") == "" && cfg.MemoryLimitMiB >= 0 {
		limit, from := memoryLimit(cfg.MemoryLimitMiB, "/")
		debug.SetMemoryLimit(limit)
		log.Info("soft memory limit", "mib", limit>>20, "from", from)
	}
	if cmd == "reindex" {
		if err := reindex(ctx, *cfg, log, stderr); err != nil {
			fmt.Fprintln(stderr, "edx-hub reindex:", err)
			return 1
		}
		return 0
	}
	if addr := os.Getenv("EDX_PPROF_ADDR"); addr != "" {
		// Profiling for operators and benchmarks, on an address of their choosing.
		go func() { log.Info("pprof", "addr", addr, "err", http.ListenAndServe(addr, nil)) }()
	}
	if terminal(stderr) {
		// A new hub rebuilds its index from the archive before it
		// processes documents: show how far it is.
		cfg.Progress = &bar{w: stderr, desc: "catching up"}
	}
	h, err := hub.New(ctx, *cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "edx-hub:", err)
		return 1
	}
	i := h.Info()
	fmt.Fprintf(stdout, `edx hub running
  HTTP         %s   (/healthz /readyz /metrics /api/v1)
  NATS         %s
  S3           %s   bucket %s
  data         %s
  trust roots  %s
  dev CA       %s
  admin token  %s
Register a unit:  edx unit add --data %s --unit 000.01.00.H29 --name "Sở Nội vụ"
`, i.HTTP, i.NATSURL, i.S3Endpoint, i.Bucket, i.Data, i.TrustRoots, orNone(i.DevCA), i.AdminTokenFile, i.Data)
	if err := h.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "edx-hub:", err)
		return 1
	}
	return 0
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func newLogger(c hub.LogConfig, w io.Writer) *slog.Logger {
	var lvl slog.Level
	switch c.Level {
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// terminal reports whether w is a terminal.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
