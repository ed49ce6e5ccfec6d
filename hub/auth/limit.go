package auth

import (
	"errors"
	"sync"
	"time"
)

// LimitConfig bounds sign-in attempts with two token buckets: one per client
// address, spent by every attempt (each costs an argon2id hash), and one per
// account name, spent by failures only (password guessing from many
// addresses).
type LimitConfig struct {
	IPBurst   int           `yaml:"ip_burst"`   // attempts at once from one address (default 10)
	IPEvery   time.Duration `yaml:"ip_every"`   // then one per this (default 6s: 10 a minute)
	UserBurst int           `yaml:"user_burst"` // failures at once for one name (default 5)
	UserEvery time.Duration `yaml:"user_every"` // then one per this (default 30s)
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
}

func (c *LimitConfig) validate() error {
	if c.IPBurst < 1 || c.UserBurst < 1 || c.IPEvery <= 0 || c.UserEvery <= 0 {
		return errors.New("auth: sign_in_limit: bursts must be at least 1 and intervals positive")
	}
	return nil
}

type bucket struct {
	tokens float64
	at     time.Time
}

// limiter holds the buckets, forgetting full ones when it grows.
type limiter struct {
	cfg LimitConfig
	now func() time.Time
	mu  sync.Mutex
	ip  map[string]*bucket
	usr map[string]*bucket
}

const maxBuckets = 100_000

func newLimiter(cfg LimitConfig, now func() time.Time) *limiter {
	return &limiter{cfg: cfg, now: now, ip: map[string]*bucket{}, usr: map[string]*bucket{}}
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

// attempt spends an address token and checks that the name has one left;
// it returns how long to wait when either is empty.
func (l *limiter) attempt(ip, name string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bi := l.fill(l.ip, ip, l.cfg.IPBurst, l.cfg.IPEvery)
	bu := l.fill(l.usr, name, l.cfg.UserBurst, l.cfg.UserEvery)
	if bi.tokens < 1 {
		return time.Duration((1 - bi.tokens) * float64(l.cfg.IPEvery)), false
	}
	if bu.tokens < 1 {
		return time.Duration((1 - bu.tokens) * float64(l.cfg.UserEvery)), false
	}
	bi.tokens--
	return 0, true
}

// failed spends a token of the name.
func (l *limiter) failed(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.fill(l.usr, name, l.cfg.UserBurst, l.cfg.UserEvery)
	b.tokens = max(b.tokens-1, 0)
}
