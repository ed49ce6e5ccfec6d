package auth

import (
	"errors"
	"net/netip"
	"sync"
	"time"
)

// LimitConfig bounds sign-in attempts (and checks of a current password)
// with token buckets:
//
//   - one per client address, spent by every attempt (each costs an
//     argon2id hash): an address guessing many names;
//   - one per account name and client address, spent by failures: an
//     address guessing one name's password;
//   - one per account name, spent by failures from every address, much
//     larger: many addresses guessing one name. When it is empty, attempts
//     on that name are slowed (each waits NameDelay), never refused, so
//     that whoever hammers a name cannot lock its owner out.
//
// The first two refuse (HTTP 429 with Retry-After) for that address only.
// IPv6 addresses count by their /64, which one host usually holds whole.
type LimitConfig struct {
	IPBurst   int           `yaml:"ip_burst"`   // attempts at once from one address (default 10)
	IPEvery   time.Duration `yaml:"ip_every"`   // then one per this (default 6s: 10 a minute)
	UserBurst int           `yaml:"user_burst"` // failures at once for one name from one address (default 5)
	UserEvery time.Duration `yaml:"user_every"` // then one per this (default 30s)
	NameBurst int           `yaml:"name_burst"` // failures for one name from all addresses before attempts on it slow down (default 100)
	NameEvery time.Duration `yaml:"name_every"` // then one per this (default 10s)
	NameDelay time.Duration `yaml:"name_delay"` // the wait of each attempt on a name past its ceiling (default 2s)
}

func (c *LimitConfig) setDefaults() {
	if c.IPBurst == 0 {
		c.IPBurst = 10
	}
	if c.IPEvery == 0 {
		c.IPEvery = 6 * time.Second
	}
	if c.UserBurst == 0 {
		c.UserBurst = 5
	}
	if c.UserEvery == 0 {
		c.UserEvery = 30 * time.Second
	}
	if c.NameBurst == 0 {
		c.NameBurst = 100
	}
	if c.NameEvery == 0 {
		c.NameEvery = 10 * time.Second
	}
	if c.NameDelay == 0 {
		c.NameDelay = 2 * time.Second
	}
}

func (c *LimitConfig) validate() error {
	if c.IPBurst < 1 || c.UserBurst < 1 || c.NameBurst < 1 || c.IPEvery <= 0 || c.UserEvery <= 0 || c.NameEvery <= 0 {
		return errors.New("auth: sign_in_limit: bursts must be at least 1 and intervals positive")
	}
	if c.NameDelay < 0 || c.NameDelay > time.Minute {
		return errors.New("auth: sign_in_limit: name_delay must be between 0 and 1m")
	}
	return nil
}

type bucket struct {
	tokens float64
	at     time.Time
}

// limiter holds the buckets, forgetting full ones when it grows.
type limiter struct {
	cfg  LimitConfig
	now  func() time.Time
	mu   sync.Mutex
	ip   map[string]*bucket // by address
	pair map[string]*bucket // by name and address
	name map[string]*bucket // by name
}

const maxBuckets = 100_000

func newLimiter(cfg LimitConfig, now func() time.Time) *limiter {
	return &limiter{cfg: cfg, now: now, ip: map[string]*bucket{}, pair: map[string]*bucket{}, name: map[string]*bucket{}}
}

// fill brings b up to date and returns it (nil b is a full bucket).
func (l *limiter) fill(m map[string]*bucket, key string, burst int, every time.Duration) *bucket {
	now := l.now()
	b := m[key]
	if b == nil {
		if len(m) >= maxBuckets {
			l.sweep(m, burst, every)
		}
		b = &bucket{tokens: float64(burst), at: now}
		m[key] = b
	}
	b.tokens = min(float64(burst), b.tokens+float64(now.Sub(b.at))/float64(every))
	b.at = now
	return b
}

func (l *limiter) sweep(m map[string]*bucket, burst int, every time.Duration) {
	now := l.now()
	for k, b := range m {
		if b.tokens+float64(now.Sub(b.at))/float64(every) >= float64(burst) {
			delete(m, k)
		}
	}
}

// limitKey is what an address counts as: itself, or its /64 for IPv6.
func limitKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

func pairKey(name, addr string) string { return name + "\x00" + addr }

// attempt spends an address token and checks that the name has failures
// left from this address. It returns how long to wait when refused, and
// otherwise how long to slow the attempt down (0 unless the name is past
// its ceiling).
func (l *limiter) attempt(addr, name string) (wait, delay time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	addr = limitKey(addr)
	bi := l.fill(l.ip, addr, l.cfg.IPBurst, l.cfg.IPEvery)
	bp := l.fill(l.pair, pairKey(name, addr), l.cfg.UserBurst, l.cfg.UserEvery)
	if bi.tokens < 1 {
		return time.Duration((1 - bi.tokens) * float64(l.cfg.IPEvery)), 0, false
	}
	if bp.tokens < 1 {
		return time.Duration((1 - bp.tokens) * float64(l.cfg.UserEvery)), 0, false
	}
	bi.tokens--
	if bn := l.fill(l.name, name, l.cfg.NameBurst, l.cfg.NameEvery); bn.tokens < 1 {
		delay = l.cfg.NameDelay
	}
	return 0, delay, true
}

// failed spends a failure of the name from the address, and of the name.
func (l *limiter) failed(addr, name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	addr = limitKey(addr)
	b := l.fill(l.pair, pairKey(name, addr), l.cfg.UserBurst, l.cfg.UserEvery)
	b.tokens = max(b.tokens-1, 0)
	b = l.fill(l.name, name, l.cfg.NameBurst, l.cfg.NameEvery)
	b.tokens = max(b.tokens-1, 0)
}
