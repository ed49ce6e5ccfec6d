// Package axis serves the national document exchange axis's client
// protocol (pkg/axis) on the agent, so that a document system built on the
// axis's SDK switches to edx by changing its endpoint, system id and
// secret: sendEdoc, getReceivedEdocList, getEdoc, updateStatus,
// getSentEdocList, getAgenciesList, countReceiveEdoc and
// countReceiveStatus, each at <path>/<call>.
//
// Every call is authenticated (pkg/axis.Verify): the system id must be
// configured, the hash header must be the HMAC of the sign header as
// received under that system's secret, the timestamp within the window,
// and a signature is taken once within the window (a replayed request is
// refused). Calls are limited in size and in rate per system. Failures are
// answered as the protocol answers them: status FAIL, an ErrorCode and an
// ErrorDesc (in English, ASCII: the SDK reads error answers in the
// platform's default charset).
//
// What the calls do with edx: sendEdoc takes a document or status packet as
// the API does (agent/packets); getReceivedEdocList lists the documents
// (messagetype edoc) or statuses (messagetype status) the document system
// has not taken yet; getEdoc gives one as a packet; updateStatus done
// records that the document system took it (it is not listed again), fail
// and processing leave it listed. The units of getAgenciesList are this
// unit and those it exchanged documents with: the agent has no list of
// every unit the hub knows.
package axis

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Config is the axis protocol's section of the agent's configuration.
type Config struct {
	Enabled bool `yaml:"enabled"`
	// Path is where the calls are served: <path>/<call> on the agent's
	// API address (default /axis). The SDK's endpoint is
	// http://<agent address><path>.
	Path string `yaml:"path"`
	// Systems are the document systems allowed to call, each with its
	// shared secret in a file or an environment variable.
	Systems []System `yaml:"systems"`
	// TimestampWindow is how far a request's timestamp may be from the
	// agent's clock, either way (default 15m); signatures are remembered as
	// long, and a repeated one refused.
	TimestampWindow time.Duration `yaml:"timestamp_window"`
	// AcceptAnyTimestamp checks neither the timestamp nor repeated
	// signatures: for a document system whose SDK service object lives
	// long (the national Java SDK stamps timestamp once, when the object is
	// made, and signs the same headers for each call). The signature still
	// proves the secret; a captured request can be replayed.
	AcceptAnyTimestamp bool `yaml:"accept_any_timestamp"`
	// TimeZone is the zone of the SDK's timestamps (default
	// Asia/Ho_Chi_Minh) and of the times in answers.
	TimeZone string `yaml:"time_zone"`
	// MaxRequestBytes bounds a request body (default: the agent's container
	// limit plus a third, for base64).
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
	// Rate and Burst limit each system's calls (default 20 a second, bursts
	// of 100).
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
	// ListLimit bounds the items of one list (default 1000).
	ListLimit int `yaml:"list_limit"`
}

// System is a document system allowed to call.
type System struct {
	ID         string `yaml:"id"`
	SecretFile string `yaml:"secret_file"`
	SecretEnv  string `yaml:"secret_env"`
}

// DefaultPath is where the calls are served by default.
const DefaultPath = "/axis"

// MinSecretLength is the shortest secret accepted.
const MinSecretLength = 16

// SetDefaults fills in what was left out; maxDocument is the agent's
// container limit.
func (c *Config) SetDefaults(maxDocument int64) {
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.TimestampWindow == 0 {
		c.TimestampWindow = 15 * time.Minute
	}
	if c.TimeZone == "" {
		c.TimeZone = "Asia/Ho_Chi_Minh"
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = maxDocument/3*4 + 1<<20
	}
	if c.Rate == 0 {
		c.Rate = 20
	}
	if c.Burst == 0 {
		c.Burst = 100
	}
	if c.ListLimit == 0 {
		c.ListLimit = 1000
	}
}

// Validate reports every problem of a defaulted configuration (it does not
// read the secrets).
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf("axis."+format, a...)) }
	if !strings.HasPrefix(c.Path, "/") || strings.HasSuffix(c.Path, "/") || strings.ContainsAny(c.Path, "{}*?# ") ||
		c.Path == "/v1" || strings.HasPrefix(c.Path, "/v1/") {
		add("path %q: want /name (not under /v1)", c.Path)
	}
	switch c.Path {
	case "/healthz", "/readyz", "/metrics", "/openapi.yaml":
		add("path %q: taken by the API", c.Path)
	}
	if len(c.Systems) == 0 {
		add("systems: at least one document system (id and secret_file or secret_env)")
	}
	seen := map[string]bool{}
	for i, s := range c.Systems {
		switch {
		case strings.TrimSpace(s.ID) == "" || s.ID != strings.TrimSpace(s.ID):
			add("systems[%d].id %q: required, without surrounding spaces", i, s.ID)
		case seen[s.ID]:
			add("systems[%d].id %q: given twice", i, s.ID)
		}
		seen[s.ID] = true
		if (s.SecretFile == "") == (s.SecretEnv == "") {
			add("systems[%d]: set exactly one of secret_file and secret_env", i)
		}
	}
	if c.TimestampWindow < time.Minute || c.TimestampWindow > 24*time.Hour {
		add("timestamp_window %s: want 1m to 24h (accept_any_timestamp turns the check off)", c.TimestampWindow)
	}
	if _, err := time.LoadLocation(c.TimeZone); err != nil {
		add("time_zone %q: %v", c.TimeZone, err)
	}
	if c.MaxRequestBytes < 64<<10 {
		add("max_request_bytes %d: want at least 64 KiB", c.MaxRequestBytes)
	}
	if c.Rate <= 0 || math.IsInf(c.Rate, 0) || c.Burst < 1 {
		add("rate %g and burst %d: want both above 0", c.Rate, c.Burst)
	}
	if c.ListLimit < 1 || c.ListLimit > 100000 {
		add("list_limit %d: want 1 to 100000", c.ListLimit)
	}
	return errors.Join(errs...)
}
