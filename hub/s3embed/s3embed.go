// Package s3embed runs a real S3-compatible server, versitygw with its posix
// backend, inside the current process. edx-hub uses it when no external S3 is
// configured; tests use ForTest.
//
// The gateway runs without object versioning, so a bucket created with
// object lock holds one object per key, and versitygw refuses every request
// that would replace or remove an object under retention: PutObject,
// CopyObject and CompleteMultipartUpload onto its key, DeleteObject and
// DeleteObjects (no delete markers), a shorter or weaker retention; nobody
// can turn versioning on. (On a versioned bucket, as AWS requires with
// object lock, an overwrite or a delete without a version id succeeds: the
// locked version stays but is no longer the one a GET returns.) This is
// what the hub's write-once archive needs; it holds against S3 clients, not
// against someone who can write to the data directory.
//
// Two process-wide constraints come from versitygw and shape this package:
//
//   - Only one gateway runs per process. Start returns an error while another
//     Server from this package is running.
//   - The posix backend changes the process's working directory to its data
//     directory and serves every request with paths relative to it. The
//     working directory therefore cannot be restored while the gateway runs;
//     Close restores it. Code in the same process must not rely on relative
//     paths while a Server is running (resolve them with filepath.Abs before
//     calling Start). ForTest avoids the problem by running the gateway in a
//     helper process.
package s3embed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v3"
	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/debuglogger"
	"github.com/versity/versitygw/embedgw"
	"github.com/versity/versitygw/s3api"
)

// Config configures an embedded gateway.
type Config struct {
	// Dir holds everything the gateway stores: buckets under Dir/data and,
	// where the file system has no extended attributes, metadata under
	// Dir/meta. Created if missing. (Dir/versions, where an earlier edx
	// kept object versions, is no longer read: the current object of each
	// key is.)
	// A relative Dir is resolved against the working directory at Start.
	Dir string `yaml:"dir"`
	// Addr is the TCP listen address. Default "127.0.0.1:0": a free port on
	// the loopback interface, reported by Endpoint.
	Addr string `yaml:"addr"`
	// AccessKey and SecretKey are the credentials of the gateway's only
	// account, which may do everything. Required.
	AccessKey string `yaml:"-"`
	SecretKey string `yaml:"-"`
	// Region reported to clients. Default "us-east-1".
	Region string `yaml:"region"`
}

const (
	defaultAddr   = "127.0.0.1:0"
	defaultRegion = "us-east-1"

	// Limits copied from versitygw's command line defaults.
	maxConnections = 250000
	maxRequests    = 100000
	maxParts       = 10000

	// bindAttempts bounds the retries when a free port chosen for Addr
	// ":0" is taken by someone else before the gateway binds it.
	bindAttempts = 3
)

// Server is a running embedded gateway.
type Server struct {
	endpoint string
	log      *slog.Logger
	cancel   context.CancelFunc
	done     chan struct{} // closed when the gateway has stopped
	runErr   error         // the gateway's exit error; read after done
	dataDir  string
	prevWD   string // working directory before Start; restored by Close
	closed   sync.Once
	closeErr error
}

// running guards the one-gateway-per-process limit. It is taken before the
// posix backend changes the working directory, so a second Start cannot
// disturb the first gateway.
var running atomic.Bool

// Start starts a gateway and returns once it accepts connections. ctx bounds
// the startup only; the gateway runs until Close.
//
// Start changes the process's working directory to cfg.Dir/data and leaves
// it there until Close (see the package documentation); resolve relative
// paths before calling it. Only one Server may run per process.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("s3embed: access key and secret key are required")
	}
	if cfg.Dir == "" {
		return nil, errors.New("s3embed: dir is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = defaultAddr
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("s3embed: addr %q: %w", cfg.Addr, err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("s3embed: dir: %w", err)
	}

	if !running.CompareAndSwap(false, true) {
		return nil, errors.New("s3embed: a gateway is already running in this process")
	}
	dataDir := filepath.Join(dir, "data")
	prevWD, err := os.Getwd()
	if err != nil {
		prevWD = "" // nothing to restore
	}
	started := false
	defer func() {
		if !started {
			restoreWD(prevWD, dataDir)
			running.Store(false)
		}
	}()

	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("s3embed: %w", err)
	}

	var lastErr error
	for attempt := range bindAttempts {
		addr := cfg.Addr
		if port == "0" {
			p, err := freePort(host)
			if err != nil {
				return nil, fmt.Errorf("s3embed: %w", err)
			}
			addr = net.JoinHostPort(host, strconv.Itoa(p))
		}
		s, err := start(ctx, cfg, dir, addr, log)
		if err == nil {
			s.prevWD = prevWD
			s.dataDir = dataDir
			started = true
			log.Info("embedded s3 started", "endpoint", s.endpoint, "dir", dir)
			return s, nil
		}
		lastErr = err
		if port != "0" || ctx.Err() != nil || !isBindError(err) {
			break
		}
		log.Debug("embedded s3 port taken, retrying", "addr", addr, "attempt", attempt+1)
	}
	return nil, fmt.Errorf("s3embed: start: %w", lastErr)
}

// start makes one attempt to run the gateway on addr, a concrete host:port.
func start(ctx context.Context, cfg Config, dir, addr string, log *slog.Logger) (*Server, error) {
	be, err := newBackend(dir, log)
	if err != nil {
		return nil, err
	}

	ready := make(chan struct{})
	var readyOnce sync.Once
	opts := []s3api.Option{
		s3api.WithOnListen(func() { readyOnce.Do(func() { close(ready) }) }),
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		opts = append(opts, s3api.WithMiddleware("/", requestLogger(log)))
	}
	gwcfg := &embedgw.Config{
		RootUserAccess:    cfg.AccessKey,
		RootUserSecret:    cfg.SecretKey,
		Region:            cfg.Region,
		Ports:             []string{addr},
		MaxConnections:    maxConnections,
		MaxRequests:       maxRequests,
		MultipartMaxParts: maxParts,
		LogLevel:          debuglogger.LevelSilent,
		Quiet:             true,
		KeepAlive:         true,
		S3Options:         opts,
		// The single-account IAM that embedgw would build itself, minus
		// the line it prints to stdout.
		IAMService: auth.NewIAMServiceSingle(auth.Account{
			Access: cfg.AccessKey,
			Secret: cfg.SecretKey,
			Role:   auth.RoleAdmin,
		}),
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s := &Server{
		endpoint: addr,
		log:      log,
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		s.runErr = embedgw.RunVersityGW(runCtx, be, gwcfg)
		if s.runErr != nil && runCtx.Err() == nil {
			log.Error("embedded s3 stopped", "err", s.runErr)
		}
	}()

	select {
	case <-ready:
		return s, nil
	case <-s.done:
		cancel()
		if s.runErr == nil {
			return nil, errors.New("gateway exited during startup")
		}
		return nil, s.runErr
	case <-ctx.Done():
		cancel()
		<-s.done
		return nil, ctx.Err()
	}
}

// newBackend opens the posix backend on dir/data, without object
// versioning (see the package documentation). Object metadata lives in
// extended attributes, or in dir/meta where the file system has none.
//
// posix.New changes the working directory, and may print to stdout; what it
// prints is captured and logged at debug level.
func newBackend(dir string, log *slog.Logger) (*posix.Posix, error) {
	dataDir := filepath.Join(dir, "data")
	var opts posix.PosixOpts
	opts.SetNewDirPerm(0o750)
	opts.SetNewFilePerm(0o640)

	var ms meta.MetadataStorer = meta.XattrMeta{}
	if err := (meta.XattrMeta{}).Test(dataDir); err != nil {
		sidecar := filepath.Join(dir, "meta")
		if err := os.MkdirAll(sidecar, 0o750); err != nil {
			return nil, err
		}
		sc, err := meta.NewSideCar(sidecar)
		if err != nil {
			return nil, fmt.Errorf("sidecar metadata: %w", err)
		}
		log.Debug("embedded s3: no extended attributes, using sidecar metadata", "dir", sidecar)
		ms = sc
		opts.SideCarDir = sidecar
	}

	var be *posix.Posix
	err := captureStdout(log, func() error {
		var err error
		be, err = posix.New(dataDir, ms, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("posix backend: %w", err)
	}
	return be, nil
}

// captureStdout runs fn with os.Stdout pointing to a pipe and logs what fn
// printed at debug level. Only for the short, startup-time calls into
// versitygw that print unconditionally: anything else printed in the same
// instant by another goroutine is logged rather than printed.
func captureStdout(log *slog.Logger, fn func() error) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fn()
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				log.Debug("embedded s3: " + line)
			}
		}
		_, _ = io.Copy(io.Discard, r)
		r.Close()
	}()
	old := os.Stdout
	os.Stdout = w
	err = fn()
	os.Stdout = old
	w.Close()
	<-copied
	return err
}

// requestLogger logs each S3 request at debug level: method, path, status
// and duration; never the query string (it may hold a presigned signature).
func requestLogger(log *slog.Logger) fiber.Handler {
	return func(c fiber.Ctx) error {
		start := time.Now()
		err := c.Next()
		attrs := []slog.Attr{
			slog.String("method", c.Method()),
			slog.String("path", c.Path()),
			slog.Int("status", c.Response().StatusCode()),
			slog.Duration("elapsed", time.Since(start)),
		}
		if err != nil {
			attrs = append(attrs, slog.String("err", err.Error()))
		}
		log.LogAttrs(context.Background(), slog.LevelDebug, "s3 request", attrs...)
		return err
	}
}

// freePort returns a TCP port on host that was free a moment ago.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func isBindError(err error) bool {
	return strings.Contains(err.Error(), "bind")
}

// restoreWD changes the working directory back to prev, unless someone has
// changed it since the posix backend moved it to dataDir.
func restoreWD(prev, dataDir string) {
	if prev == "" {
		return
	}
	wd, err := os.Stat(".")
	if err != nil {
		return
	}
	if dd, err := os.Stat(dataDir); err != nil || !os.SameFile(wd, dd) {
		return
	}
	_ = os.Chdir(prev)
}

// Endpoint returns the gateway's address as host:port, for an S3 client
// without TLS.
func (s *Server) Endpoint() string { return s.endpoint }

// Close stops the gateway, waits for it to finish, and restores the working
// directory that Start found. It is safe to call more than once.
func (s *Server) Close() error {
	s.closed.Do(func() {
		s.cancel()
		<-s.done
		restoreWD(s.prevWD, s.dataDir)
		running.Store(false)
		if s.runErr != nil && !errors.Is(s.runErr, context.Canceled) {
			s.closeErr = fmt.Errorf("s3embed: %w", s.runErr)
		}
		s.log.Info("embedded s3 stopped", "endpoint", s.endpoint)
	})
	return s.closeErr
}
