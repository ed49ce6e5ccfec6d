// Package broker is the NATS side of the hub: an embedded nats-server with
// JetStream in operator (decentralized JWT) mode, the keys that sign every
// credential, and the idempotent JetStream setup of the streams, the object
// stores and the units' consumers.
//
// Accounts (Keys). EDX holds the streams, the upload stream among them;
// only the hub has users there. UNITS holds one user per unit credential and
// nothing else: no JetStream, only service imports of what a unit may do
// (publish its submissions, statuses and upload chunks; look up, pull from
// and ack its two consumers; ask the hub's stage service for a staged
// delivery and pull it), each narrowed to the unit's own subjects by
// UnitPermissions. STAGE holds the stage store of large deliveries, which
// the hub writes and units read through the hub's stage service.
//
// Why three. NATS checks what a client publishes, not the reply subject it
// names, and the server publishes replies (PubAcks, API responses, direct
// gets) and push-consumer deliveries on subjects the requester chooses. In an
// account that holds the streams, or imports them, such a publish lands in a
// stream: a unit could have the server write another unit's statuses. Across
// a service import the server maps the reply to a private _R_ subject, so a
// unit's requests answer only the unit. The UNITS account has no JetStream,
// so nothing there turns a reply into a publish; and the stage store lives
// in STAGE, which imports nothing. TestNoForgeryAcrossAccounts holds these
// lines.
//
// Large containers are staged encrypted under random names with a key that
// travels only in the message (pkg/protocol, stage.go and upload.go). The
// upload stream is write-only for units (no read, no list, no rollup), one
// subject per unit. Units have no access of their own to the stage store's
// stream: the stage service creates, for the one object a unit names, a
// consumer among the unit's protocol.StageSlots, which the unit pulls from
// and deletes. Every unit permission is a literal subject wherever a
// wildcard token would let a literal "*" through (a permission's "*" matches
// a published "*" too).
//
// Limits (limits.go, streams.go). Every stream is bounded and refuses new
// messages when full; each unit has a bounded share of the streams it
// writes; each unit's user is bounded in subscriptions, payload and (with
// ConnLimiter) connections; see UnitLimits and StreamOptions.
//
// Credentials and JetStream setup work the same against the embedded server
// and an external cluster that trusts the same operator (Keys.ServerConfig).
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Defaults of Config.
const (
	DefaultListen     = "127.0.0.1:4222"
	DefaultMaxPayload = 8 << 20 // 8 MiB
	DefaultServerName = "edx-hub"
	// DefaultPingInterval is the NATS server's own default.
	DefaultPingInterval = 2 * time.Minute
)

// The bounds of Config.PingInterval: shorter floods the server with pings,
// longer leaves a dead client's pull requests waiting past their expiry.
const (
	MinPingInterval = time.Second
	MaxPingInterval = 10 * time.Minute
)

// Config configures the embedded NATS server.
type Config struct {
	// Listen is the client address, host:port. Port -1 picks a random port.
	Listen string `yaml:"listen"`
	// StoreDir is where JetStream keeps its data. Required.
	StoreDir string `yaml:"store_dir"`
	// KeysDir holds the operator and account keys (LoadOrCreateKeys). Required.
	KeysDir string `yaml:"keys_dir"`
	// MaxPayload is the largest message the server accepts.
	MaxPayload int32 `yaml:"max_payload"`
	// MaxStore and MaxMemory bound JetStream file and memory storage; zero
	// lets the server pick (a share of the disk and of the RAM).
	MaxStore  int64 `yaml:"max_store"`
	MaxMemory int64 `yaml:"max_memory"`
	// ServerName names the server in logs and JetStream.
	ServerName string `yaml:"server_name"`
	// Monitor is an optional host:port for the HTTP monitoring endpoints
	// (/varz, /jsz ...); empty disables them.
	Monitor string `yaml:"monitor"`
	// StartTimeout bounds the wait for the server to accept clients.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// PingInterval is how often the server pings a client it has heard
	// nothing from (0: DefaultPingInterval, the NATS server's); a
	// client that misses two is disconnected. The server's side of the
	// units' keepalive (agent nats.keepalive): longer costs less at rest
	// with many units, and frees a dead client's requests later.
	PingInterval time.Duration `yaml:"ping_interval"`
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.ServerName == "" {
		c.ServerName = DefaultServerName
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
}

// Validate reports the first problem with a defaulted configuration.
func (c *Config) Validate() error {
	if c.StoreDir == "" {
		return errors.New("broker: config: store_dir is required")
	}
	if c.KeysDir == "" {
		return errors.New("broker: config: keys_dir is required")
	}
	if c.MaxPayload < 0 {
		return errors.New("broker: config: max_payload is negative")
	}
	if p := c.PingInterval; p != 0 && (p < MinPingInterval || p > MaxPingInterval) {
		return fmt.Errorf("broker: config: ping_interval %s: want %s to %s", c.PingInterval, MinPingInterval, MaxPingInterval)
	}
	if _, _, err := splitHostPort(c.Listen); err != nil {
		return fmt.Errorf("broker: config: listen: %w", err)
	}
	if c.Monitor != "" {
		if _, _, err := splitHostPort(c.Monitor); err != nil {
			return fmt.Errorf("broker: config: monitor: %w", err)
		}
	}
	return nil
}

// Server is the embedded NATS server.
type Server struct {
	mu       sync.Mutex // guards ns across Restart
	ns       *server.Server
	opts     *server.Options
	timeout  time.Duration
	keys     *Keys
	log      *slog.Logger
	resolver *server.MemAccResolver // kept across Restart (opts hold it)

	sysMu sync.Mutex
	sys   *SystemConn // opened by the first SystemConn or PushAccount
}

// Start loads (or creates) the keys in cfg.KeysDir and starts the NATS server
// with JetStream in operator mode, returning once it accepts clients. ctx
// bounds the start only; the server runs until Shutdown.
//
// Accounts are resolved by a MEMORY resolver preloaded with the system, EDX,
// UNITS and STAGE account JWTs. Users are never stored on the server: each
// presents a JWT signed by its account's signing key, which the server checks against
// the account JWT, so units issued after start connect without a restart or a
// resolver update. Revoking a user changes the UNITS account JWT, which
// PushAccount gives the running server. The account JWTs are re-read from
// KeysDir at every start, revocations included.
//
// keysOpts apply to the keys (LoadOrCreateKeys): the units' limits
// (WithUnitLimits), JetStream limits.
func Start(ctx context.Context, cfg Config, log *slog.Logger, keysOpts ...KeysOption) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	keys, err := LoadOrCreateKeys(cfg.KeysDir, keysOpts...)
	if err != nil {
		return nil, err
	}
	op, err := jwt.DecodeOperatorClaims(keys.OperatorJWT())
	if err != nil {
		return nil, fmt.Errorf("broker: operator jwt: %w", err)
	}
	resolver := &server.MemAccResolver{}
	for pub, tok := range keys.ResolverPreload() {
		if err := resolver.Store(pub, tok); err != nil {
			return nil, fmt.Errorf("broker: resolver: %w", err)
		}
	}
	host, port, _ := splitHostPort(cfg.Listen)
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		Host:               host,
		Port:               port,
		MaxPayload:         cfg.MaxPayload,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		JetStreamMaxStore:  cfg.MaxStore,
		JetStreamMaxMemory: cfg.MaxMemory,
		TrustedOperators:   []*jwt.OperatorClaims{op},
		SystemAccount:      keys.SystemAccount(),
		AccountResolver:    resolver,
		NoSigs:             true,
		PingInterval:       cfg.PingInterval,
	}
	if cfg.Monitor != "" {
		opts.HTTPHost, opts.HTTPPort, _ = splitHostPort(cfg.Monitor)
	}
	// A client's pending buffer must hold several maximal messages.
	opts.MaxPending = max(4*int64(opts.MaxPayload), server.MAX_PENDING_SIZE)
	s := &Server{keys: keys, log: log, opts: opts, timeout: cfg.StartTimeout, resolver: resolver}
	ns, err := s.start(ctx)
	if err != nil {
		return nil, err
	}
	s.ns = ns
	// A restart listens where clients were told to connect.
	if addr, ok := ns.Addr().(*net.TCPAddr); ok {
		opts.Port = addr.Port
	}
	log.Info("nats server ready", "url", ns.ClientURL(), "store_dir", cfg.StoreDir, "account", keys.Account())
	return s, nil
}

// start runs a server on s.opts and waits until it accepts clients with
// JetStream enabled.
func (s *Server) start(ctx context.Context) (*server.Server, error) {
	ns, err := server.NewServer(s.opts.Clone())
	if err != nil {
		return nil, fmt.Errorf("broker: new server: %w", err)
	}
	sl := newServerLogger(s.log)
	ns.SetLoggerV2(sl, sl.debug, sl.trace, false)
	ns.Start()

	deadline := time.Now().Add(s.timeout)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, fmt.Errorf("broker: start: %w", err)
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, fmt.Errorf("broker: start: not ready after %s", s.timeout)
		}
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, errors.New("broker: start: jetstream is not enabled")
	}
	return ns, nil
}

// Health is JetStream's own health check of this server: nil, or why it
// cannot store messages now: JetStream disabled, or a stream holding a
// write error. A stream that failed a write (a full disk) keeps refusing
// every write until the server restarts, even once the disk has room again;
// Restart clears it.
func (s *Server) Health() error {
	hs := s.server().Healthz(&server.HealthzOptions{})
	if hs.StatusCode == 0 || hs.StatusCode == http.StatusOK {
		return nil
	}
	msg := hs.Error
	for _, e := range hs.Errors {
		msg += "; " + e.Error
	}
	return fmt.Errorf("broker: jetstream: %s", strings.TrimPrefix(msg, "; "))
}

// Restart stops the server and starts it again on the same address, store
// and keys. Clients reconnect by themselves (the hub's and the agents'
// connections retry forever); unacknowledged messages are redelivered.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	ns, err := s.start(ctx)
	if err != nil {
		return err
	}
	s.ns = ns
	s.log.Warn("nats server restarted", "url", ns.ClientURL())
	return nil
}

func (s *Server) server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns
}

// ClientURL is the URL clients connect to, nats://host:port.
func (s *Server) ClientURL() string { return s.server().ClientURL() }

// Keys returns the keys the server trusts, to issue credentials.
func (s *Server) Keys() *Keys { return s.keys }

// NATS returns the embedded server, for in-process connections
// (nats.InProcessServer) and monitoring.
func (s *Server) NATS() *server.Server { return s.server() }

// SystemConn is the hub's connection to the system account of this server
// (Keys.IssueSystemCreds), opened at the first call and closed by Shutdown:
// the account pushes (PushAccount) and the connection limiter
// (StartConnLimiter) share it. It connects to ClientURL, so it reconnects
// after a Restart.
func (s *Server) SystemConn(ctx context.Context, opts ...nats.Option) (*SystemConn, error) {
	s.sysMu.Lock()
	defer s.sysMu.Unlock()
	return s.systemConnLocked(ctx, opts...)
}

func (s *Server) systemConnLocked(ctx context.Context, opts ...nats.Option) (*SystemConn, error) {
	if s.sys != nil {
		return s.sys, nil
	}
	creds, err := s.keys.IssueSystemCreds()
	if err != nil {
		return nil, err
	}
	if s.sys, err = ConnectSystem(ctx, s.ClientURL(), creds, opts...); err != nil {
		return nil, err
	}
	return s.sys, nil
}

// PushAccount makes the server use a new account JWT (Keys.RevokeUnitUsers):
// the resolver keeps it for when the account is loaded (and for a Restart),
// and a claims update through the system account applies it to the account
// in use, which closes the connections of revoked users.
func (s *Server) PushAccount(ctx context.Context, accountJWT string) error {
	ac, err := jwt.DecodeAccountClaims(accountJWT)
	if err != nil {
		return fmt.Errorf("broker: push account: %w", err)
	}
	if err := s.resolver.Store(ac.Subject, accountJWT); err != nil {
		return fmt.Errorf("broker: resolver: %w", err)
	}
	s.sysMu.Lock()
	sys, err := s.systemConnLocked(ctx)
	s.sysMu.Unlock()
	if err != nil {
		return err
	}
	err = sys.PushAccount(ctx, accountJWT)
	if errors.Is(err, ErrAccountNotLoaded) {
		return nil // stored in the resolver: loaded from there
	}
	return err
}

// Shutdown stops the server and waits until it has stopped.
func (s *Server) Shutdown() {
	s.sysMu.Lock()
	if s.sys != nil {
		s.sys.Close()
		s.sys = nil
	}
	s.sysMu.Unlock()
	ns := s.server()
	ns.Shutdown()
	ns.WaitForShutdown()
	s.log.Info("nats server stopped")
}

func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("invalid port %q", ps)
	}
	return host, port, nil
}

// serverLogger routes nats-server logs to slog: notices at info (banner at
// debug), debug and
// trace at debug (trace only when the logger is enabled below debug), fatal at
// error.
type serverLogger struct {
	log          *slog.Logger
	debug, trace bool
}

// levelTrace is below slog.LevelDebug; the server's protocol trace is only
// produced when the logger is enabled at this level.
const levelTrace = slog.LevelDebug - 4

func newServerLogger(log *slog.Logger) *serverLogger {
	l := log.With("component", "nats")
	ctx := context.Background()
	return &serverLogger{
		log:   l,
		debug: l.Enabled(ctx, slog.LevelDebug),
		trace: l.Enabled(ctx, levelTrace),
	}
}

func (l *serverLogger) logf(level slog.Level, format string, v ...any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, fmt.Sprintf(format, v...))
}

// Noticef logs notices at info, except the start-up banner and its indented
// detail lines (version, limits, directories), which go to debug.
func (l *serverLogger) Noticef(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	level := slog.LevelInfo
	if strings.TrimSpace(msg) == "" || strings.ContainsAny(msg[:1], " _|-\\/") {
		level = slog.LevelDebug
	}
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, msg)
	}
}

func (l *serverLogger) Warnf(format string, v ...any)  { l.logf(slog.LevelWarn, format, v...) }
func (l *serverLogger) Fatalf(format string, v ...any) { l.logf(slog.LevelError, format, v...) }
func (l *serverLogger) Errorf(format string, v ...any) { l.logf(slog.LevelError, format, v...) }
func (l *serverLogger) Debugf(format string, v ...any) { l.logf(slog.LevelDebug, format, v...) }
func (l *serverLogger) Tracef(format string, v ...any) { l.logf(levelTrace, format, v...) }
