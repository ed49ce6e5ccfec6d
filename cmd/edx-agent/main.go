// Command edx-agent runs a unit's edx agent: the local API and folders for
// the agency's document system, the durable spool, and the link to the hub.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/edxhub/edx/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `edx-agent — a unit's edx agent

Usage:
  edx-agent -config FILE            run the agent
  edx-agent -check -config FILE     validate the configuration (and the files it names) and exit

The agent signs the documents its document system hands it (POST /v1/documents
or the outbox folder), spools them durably, sends them to the hub, receives the
unit's documents into its inbox after verifying them, and carries statuses both
ways. See configs/agent.yaml; secrets come from files or environment variables.

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edx-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	cfgPath := fs.String("config", "", "YAML configuration file (configs/agent.yaml); required")
	check := fs.Bool("check", false, "validate the configuration and exit")
	listen := fs.String("listen", "", "API listen address (overrides api.listen)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	cfg, err := agent.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "edx-agent:", err)
		return 2
	}
	if *listen != "" {
		cfg.API.Listen = *listen
	}
	if err := cfg.SetDefaults(); err != nil {
		fmt.Fprintln(stderr, "edx-agent:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "edx-agent: %s:\n  %s\n", *cfgPath, strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 2
	}
	if *check {
		if _, err := cfg.Check(); err != nil {
			fmt.Fprintf(stderr, "edx-agent: %s: %v\n", *cfgPath, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: configuration OK (unit %s)\n", *cfgPath, cfg.Unit)
		return 0
	}
	log := newLogger(cfg.Log, stderr)
	slog.SetDefault(log)
	a, err := agent.New(ctx, *cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "edx-agent:", err)
		return 1
	}
	fmt.Fprintf(stdout, "edx-agent: unit %s, API on http://%s\n", a.Unit(), a.Addr())
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "edx-agent:", err)
		return 1
	}
	return 0
}

func newLogger(c agent.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
