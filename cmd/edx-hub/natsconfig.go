package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edxhub/edx/hub"
	"github.com/edxhub/edx/hub/broker"
)

// natsConfig prepares an external NATS cluster for the hub: it prints what
// every server's configuration needs (the message size, JetStream, the
// operator, accounts and resolver) and writes the hub's two credential
// files.
func natsConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edx-hub nats-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keys := fs.String("keys", "edx-data/nats/keys", "operator and account keys (created when missing); the hub's nats.keys_dir")
	out := fs.String("out", ".", "where to write hub.creds and hub-stage.creds")
	cfgPath := fs.String("config", "", "the hub's configuration file, for the units' limits (nats.units); default: the defaults")
	storeDir := fs.String("store-dir", "jetstream", "each server's JetStream store directory")
	resolverDir := fs.String("resolver-dir", "jwt", "each server's directory for account JWTs (a full resolver, which keeps the\ncredential revocations the hub pushes); \"memory\" for a MEMORY resolver, which forgets them when a server restarts")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: edx-hub nats-config [--keys DIR] [--out DIR] [--config FILE] [--store-dir DIR] [--resolver-dir DIR] > edx.conf\n\n"+
			"Prints what every NATS server of the cluster includes in its configuration\n"+
			"(max_payload, JetStream, the operator, accounts and resolver; add server_name,\n"+
			"listen and cluster) and writes the hub's credentials.\n"+
			"The hub pushes the units' account (credential revocations) to the servers\n"+
			"through the system account, with a user it signs from --keys.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	units := broker.DefaultUnitLimits
	if *cfgPath != "" {
		c, err := hub.LoadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, "edx-hub nats-config:", err)
			return 1
		}
		units = c.NATS.Units
		units.SetDefaults()
	}
	k, err := broker.LoadOrCreateKeys(*keys, broker.WithUnitLimits(units))
	if err != nil {
		fmt.Fprintln(stderr, "edx-hub nats-config:", err)
		return 1
	}
	for name, issue := range map[string]func() ([]byte, error){"hub.creds": k.IssueHubCreds, "hub-stage.creds": k.IssueHubStageCreds} {
		b, err := issue()
		if err == nil {
			err = os.WriteFile(filepath.Join(*out, name), b, 0o600)
		}
		if err != nil {
			fmt.Fprintln(stderr, "edx-hub nats-config:", err)
			return 1
		}
	}
	// A unit's message (an inline submission) and the hub's (an inline
	// delivery, a stage chunk) must pass the server's own limit, whose
	// default (1 MB) is below both.
	fmt.Fprintf(stdout, "# edx-hub nats-config: include in every server's configuration; add server_name, listen and cluster.\n")
	fmt.Fprintf(stdout, "max_payload: %d\n", max(int64(broker.DefaultMaxPayload), units.MaxPayload))
	fmt.Fprintf(stdout, "jetstream {\n  store_dir: %q\n}\n", *storeDir)
	if *resolverDir == "memory" || *resolverDir == "" {
		stdout.Write(k.ServerConfig())
	} else {
		stdout.Write(k.FullResolverConfig(*resolverDir))
	}
	fmt.Fprintf(stderr, "wrote %s and %s (mode 0600); set nats.creds_file and nats.stage_creds_file to them\n",
		filepath.Join(*out, "hub.creds"), filepath.Join(*out, "hub-stage.creds"))
	return 0
}
