package hub

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edxhub/edx/hub/broker"
)

// TestConfigsLoad: every hub configuration in configs/ loads, with no
// unknown key, and the embedded one validates as is.
func TestConfigsLoad(t *testing.T) {
	files, _ := filepath.Glob("../configs/hub*.yaml")
	if len(files) == 0 {
		t.Fatal("no hub configuration in configs/")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := LoadConfig(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.SetDefaults(); err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if strings.Contains(f, "cluster") {
				// Paths under /etc do not exist here; only the credential files can fail.
				if err != nil {
					for _, line := range strings.Split(err.Error(), "\n") {
						if !strings.Contains(line, "s3") {
							t.Fatal(err)
						}
					}
				}
				if c.NATS.Streams.Replicas != 3 || c.NATS.Buckets.Replicas != 3 || !c.S3.Archive.ObjectLock || c.S3.Archive.RetentionDays < 1 || c.PKI.CRLFetch.Timeout != 10*time.Second {
					t.Errorf("cluster settings lost: %+v", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := c.Pipeline.Gateway; strings.Contains(f, "gateway") && (g.Unit != "000.99.00.H29" || len(g.Outside) != 3) {
				t.Errorf("gateway lost: %+v", g)
			}
			if f == "../configs/hub.yaml" && c.NATS.Embedded.PingInterval != broker.DefaultPingInterval {
				t.Errorf("nats.embedded.ping_interval %s, want the default shown", c.NATS.Embedded.PingInterval)
			}
			if !c.S3.Archive.ObjectLock || c.S3.Archive.RetentionDays != DefaultRetentionDays || c.PKI.CRLFetch.Disabled {
				t.Errorf("embedded archive: object lock %v, %d days; crl fetch disabled %v", c.S3.Archive.ObjectLock, c.S3.Archive.RetentionDays, c.PKI.CRLFetch.Disabled)
			}
		})
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("http:\n  listne: 127.0.0.1:1\n"), 0o644)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "listne") {
		t.Fatalf("unknown key accepted: %v", err)
	}
}

func TestConfigDefaultsUnderData(t *testing.T) {
	c := &Config{Data: t.TempDir()}
	if err := c.SetDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// The embedded archive is write-once whatever the file says.
	if !c.S3.Archive.ObjectLock || c.S3.Archive.RetentionDays != DefaultRetentionDays {
		t.Errorf("embedded archive: object lock %v, %d days", c.S3.Archive.ObjectLock, c.S3.Archive.RetentionDays)
	}
	off := &Config{Data: t.TempDir()}
	off.S3.Archive.RetentionDays = 36501
	off.SetDefaults()
	if err := off.Validate(); err == nil || !strings.Contains(err.Error(), "retention_days") {
		t.Errorf("retention of 36501 days: %v", err)
	}
	// A memory limit the hub cannot live under is refused, not taken.
	for _, mib := range []int{-2, 1, MinMemoryLimitMiB - 1} {
		bad := &Config{Data: t.TempDir(), MemoryLimitMiB: mib}
		bad.SetDefaults()
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "memory_limit_mib") {
			t.Errorf("memory_limit_mib %d: %v", mib, err)
		}
	}
	for _, mib := range []int{-1, 0, MinMemoryLimitMiB} {
		ok := &Config{Data: t.TempDir(), MemoryLimitMiB: mib}
		ok.SetDefaults()
		if err := ok.Validate(); err != nil {
			t.Errorf("memory_limit_mib %d: %v", mib, err)
		}
	}
	for _, p := range []string{c.Index.Path, c.NATS.KeysDir, c.NATS.Embedded.StoreDir, c.PKI.Trust} {
		if !strings.HasPrefix(p, c.Data) {
			t.Errorf("%s is not under %s", p, c.Data)
		}
	}
}

// TestBucketReplicasFollowStreams: the shared buckets take the streams'
// replicas unless nats.buckets.replicas says otherwise.
func TestBucketReplicasFollowStreams(t *testing.T) {
	c := &Config{Data: t.TempDir()}
	c.NATS.Streams.Replicas = 3
	if err := c.SetDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.NATS.Buckets.Replicas != 3 {
		t.Fatalf("bucket replicas %d", c.NATS.Buckets.Replicas)
	}
	c = &Config{Data: t.TempDir()}
	c.NATS.Streams.Replicas, c.NATS.Buckets.Replicas, c.NATS.Buckets.MaxBytes = 3, 5, 1024
	c.SetDefaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "max_bytes") || c.NATS.Buckets.Replicas != 5 {
		t.Fatalf("replicas %d, %v", c.NATS.Buckets.Replicas, err)
	}
}

// TestClusterConfigPerHubPaths: hubs run from one cluster configuration
// with their own -data keep what belongs to each (index, accounts, NATS
// keys) under their own data directory, never at a path of the file that
// two hubs on one host would share.
func TestClusterConfigPerHubPaths(t *testing.T) {
	for _, f := range []string{"../configs/hub-cluster.yaml", "../configs/hub-cluster-local.yaml"} {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var cfgs [2]*Config
			for i := range cfgs {
				c, err := LoadConfig(f)
				if err != nil {
					t.Fatal(err)
				}
				c.Data = filepath.Join(t.TempDir(), "hub") // -data
				if err := c.SetDefaults(); err != nil {
					t.Fatal(err)
				}
				cfgs[i] = c
			}
			for _, c := range cfgs {
				paths := map[string]string{"index.path": c.Index.Path, "auth.path": c.Auth.Path}
				if strings.Contains(f, "local") {
					paths["nats.keys_dir"] = c.NATS.KeysDir
				}
				for key, p := range paths {
					if !strings.HasPrefix(p, c.Data+string(filepath.Separator)) {
						t.Errorf("%s %s is not under the hub's -data %s", key, p, c.Data)
					}
				}
			}
			if cfgs[0].Index.Path == cfgs[1].Index.Path || cfgs[0].Auth.Path == cfgs[1].Auth.Path {
				t.Errorf("two hubs share a path: %s, %s", cfgs[0].Index.Path, cfgs[0].Auth.Path)
			}
			if ic := cfgs[0].PKI.IssuingCA; ic.Cert == "" || ic.Key == "" {
				t.Errorf("no pki.issuing_ca: edx unit add without --cert fails on this configuration")
			}
		})
	}
}

// TestConfigPathsAbsolute: the paths a configuration gives relative are
// made absolute at load, against the directory the hub starts in (the
// embedded S3 gateway changes the working directory later, and the CRLs
// are read again while the hub runs).
func TestConfigPathsAbsolute(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	dir, _ = os.Getwd()
	c := &Config{Data: "hub-1"}
	c.PKI = PKIConfig{Trust: "pki/roots.pem", CRLs: []string{"pki/crl.pem"}, HubKey: "pki/hub.key.pem", HubCert: "pki/hub.cert.pem",
		IssuingCA: IssuingCAConfig{Cert: "pki/ca/issuing.cert.pem", Key: "pki/ca/issuing.key.pem"}}
	c.NATS.URL, c.NATS.CredsFile, c.NATS.StageCredsFile = "nats://127.0.0.1:4222", "hub.creds", "hub-stage.creds"
	if err := c.SetDefaults(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{c.Data, c.PKI.Trust, c.PKI.CRLs[0], c.PKI.HubKey, c.PKI.HubCert, c.PKI.IssuingCA.Cert, c.PKI.IssuingCA.Key,
		c.NATS.CredsFile, c.NATS.StageCredsFile, c.NATS.KeysDir, c.Index.Path} {
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Errorf("%s is not an absolute path under %s", p, dir)
		}
	}
}

// TestEvidenceConfig: the evidence keys' defaults (the log under the data
// directory, the TSA roots the trust's) and their validation; the cluster
// example names a TSA.
func TestEvidenceConfig(t *testing.T) {
	c := Config{Data: t.TempDir()}
	if err := c.SetDefaults(); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Tlog.Dir != filepath.Join(c.Data, "tlog") || c.Tlog.KeyFile != filepath.Join(c.Data, "tlog.key") || c.Tlog.BatchMaxAge != DefaultLogBatchMaxAge ||
		c.TSA.Roots != c.PKI.Trust || c.Tlog.Disabled || c.Tlog.Origin != "" {
		t.Errorf("evidence defaults: %+v %+v", c.Tlog, c.TSA)
	}
	for name, f := range map[string]func(*Config){
		"timestamp interval":  func(c *Config) { c.Tlog.TimestampInterval = 10 * time.Millisecond },
		"checkpoint interval": func(c *Config) { c.Tlog.CheckpointInterval = time.Millisecond },
		"batch":               func(c *Config) { c.Tlog.BatchMaxSize = 1 << 20 },
		"origin":              func(c *Config) { c.Tlog.Origin = "edx.local//hub" },
		"origin with a space": func(c *Config) { c.Tlog.Origin = "edx hub" },
		"tsa url":             func(c *Config) { c.TSA.URLs = []string{"ftp://tsa.example/"} },
		"tsa policy":          func(c *Config) { c.TSA.URLs, c.TSA.Policy = []string{"http://tsa.example/"}, "1.x" },
	} {
		bad := Config{Data: t.TempDir()}
		bad.SetDefaults()
		f(&bad)
		if err := bad.Validate(); err == nil || !(strings.Contains(err.Error(), "tlog") || strings.Contains(err.Error(), "tsa")) {
			t.Errorf("%s: %v", name, err)
		}
	}
	cl, err := LoadConfig("../configs/hub-cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.TSA.URLs) == 0 || cl.Tlog.Origin == "" {
		t.Errorf("the cluster example names no TSA or no origin: %+v %+v", cl.Tlog, cl.TSA)
	}
}
