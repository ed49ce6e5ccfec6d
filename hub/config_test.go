package hub

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
				if err != nil && !strings.Contains(err.Error(), "s3") {
					t.Fatal(err)
				}
				if c.NATS.Streams.Replicas != 3 || c.NATS.Buckets.Replicas != 3 || !c.S3.Archive.ObjectLock || c.S3.Archive.RetentionDays != 3650 || c.PKI.CRLFetch.Timeout != 10*time.Second {
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
