package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edxhub/edx/hub"
	"github.com/edxhub/edx/hub/broker"
)

// natsServer is what nats-config writes about one server of the cluster.
type natsServer struct {
	name, listen, monitor      string
	clusterName, clusterListen string
	routes                     []string
	storeDir, resolverDir      string
	maxStore                   string
	maxPayload                 int64
	accountsOnly               bool
}

// natsConfig prepares an external NATS cluster for the hub: it prints one
// server's whole configuration (its name, addresses and cluster routes when
// given; the message size, JetStream, the operator, accounts and resolver
// always) and writes the hub's two credential files.
func natsConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edx-hub nats-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keys := fs.String("keys", "edx-data/nats/keys", "operator and account keys (created when missing); the hub's nats.keys_dir.\nEvery hub of the cluster needs a copy of this directory")
	out := fs.String("out", ".", "where to write hub.creds and hub-stage.creds")
	cfgPath := fs.String("config", "", "the hub's configuration file, for the units' limits (nats.units) and the message size (nats.streams.max_msg_size); default: the defaults")
	var s natsServer
	fs.StringVar(&s.storeDir, "store-dir", "jetstream", "this server's JetStream store directory")
	fs.StringVar(&s.resolverDir, "resolver-dir", "jwt", "this server's directory for account JWTs (a full resolver, which keeps the\ncredential revocations the hub pushes); \"memory\" for a MEMORY resolver, which forgets them when a server restarts")
	fs.StringVar(&s.name, "name", "", "server_name, unique in the cluster (required with --cluster-listen)")
	fs.StringVar(&s.listen, "listen", "", "client address host:port (default: nats-server's, 0.0.0.0:4222)")
	fs.StringVar(&s.monitor, "monitor", "", "HTTP monitoring address host:port (/healthz, /jsz); default: none")
	fs.StringVar(&s.clusterName, "cluster-name", "edx", "the cluster's name, the same on every server")
	fs.StringVar(&s.clusterListen, "cluster-listen", "", "route address host:port of this server; with --routes, makes it one server of a cluster")
	routes := fs.String("routes", "", "comma-separated route URLs of the cluster's servers (nats://host:port), this one's may be among them")
	fs.BoolVar(&s.accountsOnly, "accounts-only", false, "print only the operator, the system account and the accounts (no resolver, no server settings):\nthe file a server configuration includes (configs/nats-1.conf includes edx-accounts.conf)")
	fs.StringVar(&s.maxStore, "max-store", "", "JetStream's file store limit (e.g. 64GB); default: nats-server's, 75% of the disk's free space.\nEvery stream reserves its nats.streams.*_max_bytes on each server")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: edx-hub nats-config [--keys DIR] [--out DIR] [--config FILE] [--name N --listen ADDR\n"+
			"       --cluster-listen ADDR --routes URL,URL,URL] [--store-dir DIR] [--resolver-dir DIR] > nats.conf\n\n"+
			"Prints one NATS server's configuration (nats-server --config nats.conf): its name,\n"+
			"addresses and cluster routes when given; max_payload, JetStream, the operator, the\n"+
			"accounts and the resolver always. Run it once per server of a cluster with that\n"+
			"server's name, addresses and directories. It writes the hub's credentials too.\n"+
			"The hub pushes the units' account (credential revocations) to the servers\n"+
			"through the system account, with a user it signs from --keys.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *routes != "" {
		for _, r := range strings.Split(*routes, ",") {
			if r = strings.TrimSpace(r); r != "" {
				s.routes = append(s.routes, r)
			}
		}
	}
	if err := s.validate(); err != nil {
		fmt.Fprintln(stderr, "edx-hub nats-config:", err)
		return 2
	}
	units := broker.DefaultUnitLimits
	streams := broker.StreamOptions{}
	if *cfgPath != "" {
		c, err := hub.LoadConfig(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, "edx-hub nats-config:", err)
			return 1
		}
		units, streams = c.NATS.Units, c.NATS.Streams
	}
	units.SetDefaults()
	streams.SetDefaults()
	// A unit's message (an inline submission) and the hub's (an inline
	// delivery, a stage chunk) must pass the server's own limit, whose
	// default (1 MB) is below both.
	s.maxPayload = max(int64(broker.DefaultMaxPayload), units.MaxPayload, int64(streams.MaxMsgSize))
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
	s.write(stdout, k)
	fmt.Fprintf(stderr, "wrote %s and %s (mode 0600); set nats.creds_file and nats.stage_creds_file to them, "+
		"and give every hub a copy of %s as its nats.keys_dir\n",
		filepath.Join(*out, "hub.creds"), filepath.Join(*out, "hub-stage.creds"), *keys)
	return 0
}

func (s *natsServer) validate() error {
	var errs []error
	for _, a := range []struct{ flag, v string }{{"--listen", s.listen}, {"--monitor", s.monitor}, {"--cluster-listen", s.clusterListen}} {
		if a.v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", a.flag, a.v))
		} else if _, err := strconv.Atoi(port); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", a.flag, a.v))
		}
	}
	if (s.clusterListen != "") != (len(s.routes) > 0) {
		errs = append(errs, errors.New("a cluster needs both --cluster-listen (this server's route address) and --routes (the cluster's)"))
	}
	if s.clusterListen != "" && s.name == "" {
		errs = append(errs, errors.New("--name is required in a cluster: JetStream tells its servers apart by name"))
	}
	for _, r := range s.routes {
		if !strings.HasPrefix(r, "nats://") && !strings.HasPrefix(r, "nats-route://") {
			errs = append(errs, fmt.Errorf("--routes %q: want nats://host:port", r))
		}
	}
	if strings.ContainsAny(s.name+s.clusterName, " \t\"{}") {
		errs = append(errs, errors.New("--name and --cluster-name: no spaces, quotes or braces"))
	}
	return errors.Join(errs...)
}

func (s *natsServer) write(w io.Writer, k *broker.Keys) {
	if s.accountsOnly {
		fmt.Fprintf(w, "# edx-hub nats-config --accounts-only: the operator and accounts of the edx hubs, for every server's configuration\n"+
			"# (include it; the server's own file sets its resolver, a full one: resolver { type: full, dir: ... }).\n")
		w.Write(k.AccountsConfig())
		return
	}
	fmt.Fprintf(w, "# edx-hub nats-config: a NATS server for edx hubs (nats-server --config FILE).\n")
	if s.name != "" {
		fmt.Fprintf(w, "server_name: %q\n", s.name)
	}
	if s.listen != "" {
		fmt.Fprintf(w, "listen: %q\n", s.listen)
	}
	if s.monitor != "" {
		fmt.Fprintf(w, "http: %q\n", s.monitor)
	}
	fmt.Fprintf(w, "max_payload: %d\n", s.maxPayload)
	// A client's pending buffer must hold several of the largest messages.
	fmt.Fprintf(w, "max_pending: %d\n", max(4*s.maxPayload, 64<<20))
	fmt.Fprintf(w, "jetstream {\n  store_dir: %q\n", s.storeDir)
	if s.maxStore != "" {
		fmt.Fprintf(w, "  max_file_store: %s\n", s.maxStore)
	}
	fmt.Fprintf(w, "}\n")
	if s.clusterListen != "" {
		fmt.Fprintf(w, "cluster {\n  name: %q\n  listen: %q\n  routes: [\n", s.clusterName, s.clusterListen)
		for _, r := range s.routes {
			fmt.Fprintf(w, "    %q\n", r)
		}
		fmt.Fprintf(w, "  ]\n}\n")
	}
	if s.resolverDir == "memory" || s.resolverDir == "" {
		w.Write(k.ServerConfig())
	} else {
		w.Write(k.FullResolverConfig(s.resolverDir))
	}
}
