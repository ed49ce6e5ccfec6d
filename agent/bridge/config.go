package bridge

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Config is the bridge's section of the agent's configuration (bridge:).
type Config struct {
	Enabled bool `yaml:"enabled"`
	// URL is the upstream axis's endpoint: the calls go to <url>/<call>
	// (e.g. https://vdxp.example.gov.vn/api/v1).
	URL string `yaml:"url"`
	// SystemID is the city's system id at the upstream axis; its shared
	// secret is in SecretFile or the environment variable SecretEnv.
	SystemID   string `yaml:"system_id"`
	SecretFile string `yaml:"secret_file"`
	SecretEnv  string `yaml:"secret_env"`
	// Name names the upstream in the documents brought in
	// (document.Upstream.Axis); default the URL's host.
	Name string `yaml:"name"`
	// Poll is how often the upstream is asked for documents and statuses
	// (default 30s).
	Poll time.Duration `yaml:"poll"`
	// Timeout bounds one call, a large packet's transfer included (default
	// 10m).
	Timeout time.Duration `yaml:"timeout"`
	// MaxBackoff caps the wait between attempts while the upstream fails
	// (default 5m).
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// TimeZone is the zone of the timestamps signed for the upstream
	// (default Asia/Ho_Chi_Minh, as the national SDK writes them).
	TimeZone string `yaml:"time_zone"`
	// ListLimit bounds the items taken from one list (default 500).
	ListLimit int `yaml:"list_limit"`
}

// MinSecretLength is the shortest shared secret accepted.
const MinSecretLength = 16

// SetDefaults fills in what was left out.
func (c *Config) SetDefaults() {
	if c.Poll == 0 {
		c.Poll = 30 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.TimeZone == "" {
		c.TimeZone = "Asia/Ho_Chi_Minh"
	}
	if c.ListLimit == 0 {
		c.ListLimit = 500
	}
	if c.Name == "" {
		if u, err := url.Parse(c.URL); err == nil {
			c.Name = u.Host
		}
	}
}

// Validate reports every problem of a defaulted configuration (it does not
// read the secret).
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf("bridge."+format, a...)) }
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		add("url %q: want http(s)://host[/path], the upstream axis's endpoint", c.URL)
	}
	if strings.TrimSpace(c.SystemID) == "" || c.SystemID != strings.TrimSpace(c.SystemID) {
		add("system_id %q: required, without surrounding spaces", c.SystemID)
	}
	if (c.SecretFile == "") == (c.SecretEnv == "") {
		add("set exactly one of secret_file and secret_env")
	}
	if c.Name == "" || len(c.Name) > 200 {
		add("name %q: want 1 to 200 bytes", c.Name)
	}
	if c.Poll < 100*time.Millisecond || c.Poll > 24*time.Hour {
		add("poll %s: want 100ms to 24h", c.Poll)
	}
	if c.Timeout < time.Second {
		add("timeout %s: want at least 1s", c.Timeout)
	}
	if c.MaxBackoff < 100*time.Millisecond {
		add("max_backoff %s: want at least 100ms", c.MaxBackoff)
	}
	if _, err := time.LoadLocation(c.TimeZone); err != nil {
		add("time_zone %q: %v", c.TimeZone, err)
	}
	if c.ListLimit < 1 || c.ListLimit > 10000 {
		add("list_limit %d: want 1 to 10000", c.ListLimit)
	}
	return errors.Join(errs...)
}
