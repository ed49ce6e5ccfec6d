package archive

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edxhub/edx/hub/s3embed"
	dto "github.com/prometheus/client_model/go"
)

// testConfig returns a configuration for a fresh bucket on the shared test
// gateway.
func testConfig(t testing.TB) Config {
	endpoint, access, secret := s3embed.ForTest(t)
	return Config{
		Endpoint:  endpoint,
		AccessKey: access,
		SecretKey: secret,
		Bucket:    "t-" + strings.ToLower(rand.Text()[:12]),
		Region:    "us-east-1",
	}
}

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(t.Context(), cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// rawClient talks to the test gateway directly, to check what Store did.
func rawClient(t testing.TB, cfg Config) *minio.Client {
	t.Helper()
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Region: cfg.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// The key layout is hub/projection's; these tests only need keys shaped
// like it.
func ContainerKey(t time.Time, id string) string {
	return t.UTC().Format("2006/01/02/") + id + "/container.asice"
}
func ReceiptKey(t time.Time, id string) string {
	return t.UTC().Format("2006/01/02/") + id + "/receipt.p7s"
}
func RejectedKey(t time.Time, ref, name string) string {
	return "rejected/" + t.UTC().Format("2006/01/02/") + ref + "/" + name
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := Config{Endpoint: "s3.example.net:9000", AccessKey: "a", SecretKey: "s"}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"secret from file", func(c *Config) { c.SecretKey, c.SecretKeyFile = "", secretFile }, ""},
		{"object lock with retention", func(c *Config) { c.ObjectLock, c.RetentionDays = true, 3650 }, ""},
		{"no endpoint", func(c *Config) { c.Endpoint = "" }, "endpoint is required"},
		{"scheme", func(c *Config) { c.Endpoint = "https://s3.example.net" }, "without a scheme"},
		{"bad bucket", func(c *Config) { c.Bucket = "Bad_Bucket" }, "bucket"},
		{"retention without lock", func(c *Config) { c.RetentionDays = 10 }, "needs object_lock"},
		{"negative retention", func(c *Config) { c.ObjectLock, c.RetentionDays = true, -1 }, "retention_days"},
		{"no secret", func(c *Config) { c.SecretKey = "" }, "secret key: not configured"},
		{"secret twice", func(c *Config) { c.SecretKeyFile = secretFile }, "not both"},
		{"missing secret file", func(c *Config) { c.SecretKey, c.SecretKeyFile = "", filepath.Join(dir, "nope") }, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigCredentialsFromEnv(t *testing.T) {
	t.Setenv(EnvAccessKey, "env-access")
	t.Setenv(EnvSecretKey, "env-secret")
	dir := t.TempDir()
	file := filepath.Join(dir, "access")
	if err := os.WriteFile(file, []byte("file-access"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Endpoint: "localhost:9000", AccessKeyFile: file}
	access, secret, err := cfg.credentials()
	if err != nil {
		t.Fatal(err)
	}
	if access != "file-access" || secret != "env-secret" {
		t.Errorf("credentials = %q, %q; want the file's access key and the environment's secret", access, secret)
	}
}

func TestPutGet(t *testing.T) {
	s := newStore(t, testConfig(t))
	ctx := t.Context()
	key := ContainerKey(time.Now(), "01JZ0000000000000000000000")
	data := randomBytes(10_000)
	meta := map[string]string{"Doc-Id": "01JZ0000000000000000000000", "unit": "000.00.00.H29"}

	put, err := s.Put(ctx, key, data, "application/vnd.etsi.asic-e+zip", meta)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	sum := sha256.Sum256(data)
	wantMeta := map[string]string{"doc-id": "01JZ0000000000000000000000", "unit": "000.00.00.H29"}
	if put.Existed || put.Size != int64(len(data)) || put.SHA256 != fmt.Sprintf("%x", sum) || !equalMeta(put.Metadata, wantMeta) {
		t.Errorf("Put = %+v", put)
	}

	got, obj, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("Get returned different bytes")
	}
	if obj.Key != key || obj.Size != put.Size || obj.SHA256 != put.SHA256 ||
		obj.ContentType != "application/vnd.etsi.asic-e+zip" || !equalMeta(obj.Metadata, wantMeta) || obj.LastModified.IsZero() {
		t.Errorf("Get object = %+v, want it to match Put's %+v", obj, put)
	}
	st, err := s.Stat(ctx, key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if st.SHA256 != put.SHA256 || st.Size != put.Size || !equalMeta(st.Metadata, wantMeta) {
		t.Errorf("Stat = %+v", st)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}

	// The digest is where other S3 tools find it.
	info, err := rawClient(t, testConfig(t)).StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := info.Metadata.Get("X-Amz-Meta-Sha256"); h != put.SHA256 {
		t.Errorf("X-Amz-Meta-Sha256 = %q, want %q", h, put.SHA256)
	}
}

func equalMeta(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestPutTwice(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testPutTwice(t, testConfig(t)) })
	t.Run("object lock", func(t *testing.T) { testPutTwice(t, lockedConfig(t, 1)) })
}

func testPutTwice(t *testing.T, cfg Config) {
	s := newStore(t, cfg)
	ctx := t.Context()
	key := ReceiptKey(time.Now(), "doc-1")
	data := []byte("receipt v1")

	first, err := s.Put(ctx, key, data, "application/pkcs7-signature", nil)
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.Stat(ctx, key)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("same bytes", func(t *testing.T) {
		again, err := s.Put(ctx, key, data, "application/pkcs7-signature", nil)
		if err != nil {
			t.Fatalf("second Put of the same bytes: %v", err)
		}
		if !again.Existed || again.SHA256 != first.SHA256 {
			t.Errorf("second Put = %+v, want Existed and the same digest", again)
		}
		after, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !after.LastModified.Equal(before.LastModified) || after.VersionID != before.VersionID {
			t.Errorf("object changed: before %+v, after %+v", before, after)
		}
	})

	t.Run("different bytes", func(t *testing.T) {
		_, err := s.Put(ctx, key, []byte("receipt v2"), "application/pkcs7-signature", nil)
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("Put of different bytes = %v, want ErrConflict", err)
		}
		if !strings.HasPrefix(err.Error(), "archive: put "+key+": conflict") {
			t.Errorf("error text %q", err)
		}
		got, _, err := s.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("stored object is now %q, want the original %q", got, data)
		}
	})
}

// TestPutRace checks write-once under concurrent writers: the server must
// let exactly one of them create the object.
func TestPutRace(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testPutRace(t, testConfig(t)) })
	t.Run("object lock", func(t *testing.T) { testPutRace(t, lockedConfig(t, 1)) })
}

func testPutRace(t *testing.T, cfg Config) {
	s := newStore(t, cfg)
	const writers = 8
	tests := []struct {
		name string
		data func(i int) []byte
	}{
		{"same bytes", func(int) []byte { return []byte("same container") }},
		{"different bytes", func(i int) []byte { return fmt.Appendf(nil, "container %d", i) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := ContainerKey(time.Now(), "race-"+strings.ReplaceAll(tt.name, " ", "-"))
			var wg sync.WaitGroup
			objs := make([]Object, writers)
			errs := make([]error, writers)
			for i := range writers {
				wg.Go(func() { objs[i], errs[i] = s.Put(t.Context(), key, tt.data(i), "", nil) })
			}
			wg.Wait()
			created, existed, conflicts := 0, 0, 0
			for i := range writers {
				switch {
				case errors.Is(errs[i], ErrConflict):
					conflicts++
				case errs[i] != nil:
					t.Errorf("writer %d: %v", i, errs[i])
				case objs[i].Existed:
					existed++
				default:
					created++
				}
			}
			if created != 1 {
				t.Errorf("%d writers created the object (%d found it, %d conflicts), want exactly 1", created, existed, conflicts)
			}
		})
	}
}

// TestServerConditionalWrite pins down the server behaviour that Put's
// write-once guarantee rests on: If-None-Match: * on an existing key is
// refused with 412.
func TestServerConditionalWrite(t *testing.T) {
	cfg := testConfig(t)
	newStore(t, cfg)
	raw := rawClient(t, cfg)
	ctx := t.Context()
	put := func() error {
		var opts minio.PutObjectOptions
		opts.SetMatchETagExcept("*")
		_, err := raw.PutObject(ctx, cfg.Bucket, "k", bytes.NewReader([]byte("x")), 1, opts)
		return err
	}
	if err := put(); err != nil {
		t.Fatalf("first conditional put: %v", err)
	}
	err := put()
	if resp := minio.ToErrorResponse(err); resp.StatusCode != 412 || resp.Code != "PreconditionFailed" {
		t.Fatalf("second conditional put = %v (status %d), want 412 PreconditionFailed", err, resp.StatusCode)
	}
}

func TestNotFound(t *testing.T) {
	s := newStore(t, testConfig(t))
	ctx := t.Context()
	key := ContainerKey(time.Now(), "missing")
	if _, _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Open(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat = %v, want ErrNotFound", err)
	}
}

func TestPutInvalid(t *testing.T) {
	s := newStore(t, testConfig(t))
	tests := []struct {
		name string
		key  string
		meta map[string]string
	}{
		{"empty key", "", nil},
		{"leading slash", "/a/b", nil},
		{"dot dot", "a/../b", nil},
		{"empty segment", "a//b", nil},
		{"reserved metadata", "a/b", map[string]string{"SHA256": "x"}},
		{"bad metadata key", "a/b", map[string]string{"doc id": "x"}},
		{"non-ASCII value", "a/b", map[string]string{"subject": "Công văn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Put(t.Context(), tt.key, []byte("x"), "", tt.meta)
			if err == nil {
				t.Fatal("Put succeeded, want an error")
			}
			if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrConflict) {
				t.Errorf("Put = %v, want a plain error", err)
			}
		})
	}
}

func TestList(t *testing.T) {
	s := newStore(t, testConfig(t))
	ctx := t.Context()
	day := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	keys := []string{
		ContainerKey(day, "A"), ReceiptKey(day, "A"),
		ContainerKey(day, "B"),
		ContainerKey(day.AddDate(0, 0, 1), "C"),
		RejectedKey(day, "r1", "container.asice"), RejectedKey(day, "r1", "reasons.json"),
	}
	for _, k := range keys {
		if _, err := s.Put(ctx, k, []byte(k), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"2026/11/25/", []string{"2026/11/25/A/container.asice", "2026/11/25/A/receipt.p7s", "2026/11/25/B/container.asice"}},
		{"2026/11/", []string{"2026/11/25/A/container.asice", "2026/11/25/A/receipt.p7s", "2026/11/25/B/container.asice", "2026/11/26/C/container.asice"}},
		{"rejected/", []string{"rejected/2026/11/25/r1/container.asice", "rejected/2026/11/25/r1/reasons.json"}},
		{"2027/", nil},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			var got []string
			for obj, err := range s.List(ctx, tt.prefix) {
				if err != nil {
					t.Fatal(err)
				}
				if obj.Size != int64(len(obj.Key)) {
					t.Errorf("%s: size %d", obj.Key, obj.Size)
				}
				got = append(got, obj.Key)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}

	n := 0
	for range s.List(ctx, "") {
		n++
		break
	}
	if n != 1 {
		t.Errorf("breaking out of List yielded %d", n)
	}
}

func TestLargeObject(t *testing.T) {
	s := newStore(t, testConfig(t))
	ctx := t.Context()
	data := randomBytes(50 << 20)
	key := ContainerKey(time.Now(), "large")
	if _, err := s.Put(ctx, key, data, "", nil); err != nil {
		t.Fatalf("Put: %v", err)
	}
	rc, obj, err := s.Open(ctx, key)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, rc, make([]byte, 256<<10))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	want := sha256.Sum256(data)
	if n != int64(len(data)) || obj.Size != n || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("read %d bytes (object size %d), digest match %v", n, obj.Size, bytes.Equal(h.Sum(nil), want[:]))
	}
}

// lockedConfig is a fresh bucket with Object Lock and a COMPLIANCE
// retention of days.
func lockedConfig(t testing.TB, days int) Config {
	cfg := testConfig(t)
	cfg.ObjectLock, cfg.RetentionDays = true, days
	return cfg
}

// TestWriteOnce: through the real S3 server (versitygw, as edx-hub embeds
// it) and with the hub's own credentials (the gateway's only account, which
// may do everything), a container written with retention can be neither
// overwritten (a second PUT without If-None-Match, with other bytes or the
// same, CopyObject, a multipart upload completed onto its key; and no new
// version can be made: versioning cannot be turned on), nor deleted (with
// or without a version id, alone or in a batch, with governance bypass),
// nor have its retention shortened or weakened, nor its bucket's lock
// lifted; the original bytes are still there.
func TestWriteOnce(t *testing.T) {
	cfg := lockedConfig(t, 1)
	s := newStore(t, cfg)
	ctx := t.Context()
	raw := rawClient(t, cfg)

	enabled, defMode, validity, unit, err := raw.GetObjectLockConfig(ctx, cfg.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if enabled != "Enabled" || defMode == nil || *defMode != minio.Compliance || *validity != 1 || *unit != minio.Days {
		t.Fatalf("bucket object lock = %q %v %v %v, want Enabled COMPLIANCE 1 DAYS", enabled, defMode, validity, unit)
	}

	key := ContainerKey(time.Now(), "locked")
	original := []byte("the signed container, byte for byte")
	obj, err := s.Put(ctx, key, original, "application/vnd.etsi.asic-e+zip", nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := raw.StatObject(ctx, cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	until, ok := retainUntil(info)
	if info.Metadata.Get("X-Amz-Object-Lock-Mode") != "COMPLIANCE" || !ok || until.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("object retention = %q until %v, want COMPLIANCE for a day", info.Metadata.Get("X-Amz-Object-Lock-Mode"), until)
	}

	// A retry of the same Put is still success, and a different one a
	// conflict, although the server now refuses the write outright.
	if again, err := s.Put(ctx, key, original, "", nil); err != nil || !again.Existed {
		t.Fatalf("Put again: %+v, %v", again, err)
	}
	if _, err := s.Put(ctx, key, []byte("forged"), "", nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("Put of other bytes: %v, want ErrConflict", err)
	}

	forged := []byte("a forged container")
	versions := []string{"", "null"}
	if obj.VersionID != "" {
		versions = append(versions, obj.VersionID)
	}
	attacks := map[string]func() error{
		"put without If-None-Match": func() error {
			_, err := raw.PutObject(ctx, cfg.Bucket, key, bytes.NewReader(forged), int64(len(forged)), minio.PutObjectOptions{})
			return err
		},
		"put the same bytes without If-None-Match": func() error {
			_, err := raw.PutObject(ctx, cfg.Bucket, key, bytes.NewReader(original), int64(len(original)), minio.PutObjectOptions{})
			return err
		},
		"put with a new retention": func() error {
			until := time.Now().Add(time.Minute)
			_, err := raw.PutObject(ctx, cfg.Bucket, key, bytes.NewReader(forged), int64(len(forged)), minio.PutObjectOptions{
				Mode: minio.Governance, RetainUntilDate: until, SendContentMd5: true})
			return err
		},
		"copy onto it": func() error {
			src := ContainerKey(time.Now(), "source")
			if _, err := raw.PutObject(ctx, cfg.Bucket, src, bytes.NewReader(forged), int64(len(forged)), minio.PutObjectOptions{}); err != nil {
				return nil // the attack could not even start: report it as succeeding
			}
			_, err := raw.CopyObject(ctx, minio.CopyDestOptions{Bucket: cfg.Bucket, Object: key}, minio.CopySrcOptions{Bucket: cfg.Bucket, Object: src})
			return err
		},
		"multipart upload onto it": func() error {
			core := minio.Core{Client: raw}
			id, err := core.NewMultipartUpload(ctx, cfg.Bucket, key, minio.PutObjectOptions{})
			if err != nil {
				return err
			}
			part, err := core.PutObjectPart(ctx, cfg.Bucket, key, id, 1, bytes.NewReader(forged), int64(len(forged)), minio.PutObjectPartOptions{})
			if err != nil {
				return err
			}
			_, err = core.CompleteMultipartUpload(ctx, cfg.Bucket, key, id, []minio.CompletePart{{PartNumber: 1, ETag: part.ETag}}, minio.PutObjectOptions{})
			core.AbortMultipartUpload(ctx, cfg.Bucket, key, id)
			return err
		},
		"turn versioning on (to put a new version)": func() error { return raw.EnableVersioning(ctx, cfg.Bucket) },
		"delete in a batch": func() error {
			ch := make(chan minio.ObjectInfo, 1)
			ch <- minio.ObjectInfo{Key: key}
			close(ch)
			for e := range raw.RemoveObjects(ctx, cfg.Bucket, ch, minio.RemoveObjectsOptions{GovernanceBypass: true}) {
				return e.Err
			}
			return nil
		},
		"shorten the retention": func() error {
			mode, until := minio.Compliance, time.Now().Add(time.Minute)
			return raw.PutObjectRetention(ctx, cfg.Bucket, key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until})
		},
		"weaken the retention to GOVERNANCE, with bypass": func() error {
			mode, until := minio.Governance, time.Now().Add(48*time.Hour)
			return raw.PutObjectRetention(ctx, cfg.Bucket, key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until, GovernanceBypass: true})
		},
		"lift the bucket's lock": func() error {
			return raw.SetObjectLockConfig(ctx, cfg.Bucket, nil, nil, nil) // a configuration without a rule
		},
		"delete the bucket": func() error { return raw.RemoveBucket(ctx, cfg.Bucket) },
	}
	for _, v := range versions {
		for _, bypass := range []bool{false, true} {
			attacks[fmt.Sprintf("delete, version id %q, bypass %v", v, bypass)] = func() error {
				return raw.RemoveObject(ctx, cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: v, GovernanceBypass: bypass})
			}
		}
	}
	for name, attack := range attacks {
		t.Run(name, func(t *testing.T) {
			err := attack()
			t.Logf("%s: %v", name, err)
			if err == nil && name != "lift the bucket's lock" {
				t.Errorf("%s succeeded", name)
			}
			got, _, gerr := s.Get(ctx, key)
			if gerr != nil || !bytes.Equal(got, original) {
				t.Fatalf("after %q: %q, %v; want the original bytes", name, got, gerr)
			}
			if st, err := raw.StatObject(ctx, cfg.Bucket, key, minio.StatObjectOptions{}); err != nil {
				t.Fatal(err)
			} else if u, _ := retainUntil(st); !u.Equal(until) || st.Metadata.Get("X-Amz-Object-Lock-Mode") != "COMPLIANCE" {
				t.Fatalf("after %q: retention %s until %v, want COMPLIANCE until %v", name, st.Metadata.Get("X-Amz-Object-Lock-Mode"), u, until)
			}
		})
	}
	// Setting a configuration without a rule is allowed (the bucket stays
	// locked and every object keeps its own retention); the next start puts
	// the rule back.
	if enabled, _, _, _, err := raw.GetObjectLockConfig(ctx, cfg.Bucket); err != nil || enabled != "Enabled" {
		t.Fatalf("bucket lock after the attacks: %q, %v", enabled, err)
	}
	newStore(t, cfg)
	if _, m, v, _, err := raw.GetObjectLockConfig(ctx, cfg.Bucket); err != nil || m == nil || *m != minio.Compliance || *v != 1 {
		t.Fatalf("default rule after a restart: %v %v %v", m, v, err)
	}
	// Versions: there is one, the original.
	n := 0
	for o := range raw.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("%d versions of the container, want 1", n)
	}
}

// TestLockExistingBucket: a bucket created without Object Lock (what the
// embedded default made before) gets it in place when the configuration
// asks for it, and every object already in it gets its COMPLIANCE
// retention, counted from when it was written: afterwards it can no longer
// be deleted or overwritten. A start interrupted before the end finishes
// the job the next time.
func TestLockExistingBucket(t *testing.T) {
	cfg := testConfig(t)
	plain := newStore(t, cfg)
	ctx := t.Context()
	raw := rawClient(t, cfg)
	keys := []string{ContainerKey(time.Now(), "old-1"), ReceiptKey(time.Now(), "old-1"), "units/000.01.00.H29/0001.json"}
	for _, k := range keys {
		if _, err := plain.Put(ctx, k, []byte("written before the lock: "+k), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	// Before: the hub's credentials could delete an object.
	victim := "rejected/2026/11/30/x/reasons.json"
	if _, err := plain.Put(ctx, victim, []byte("x"), "", nil); err != nil {
		t.Fatal(err)
	}
	if err := raw.RemoveObject(ctx, cfg.Bucket, victim, minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("delete from an unlocked bucket: %v", err)
	}

	// An interrupted migration: the lock on, no rule, objects without
	// retention.
	if err := raw.SetObjectLockConfig(ctx, cfg.Bucket, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	cfg.ObjectLock, cfg.RetentionDays = true, 2
	s := newStore(t, cfg)
	enabled, mode, validity, _, err := raw.GetObjectLockConfig(ctx, cfg.Bucket)
	if err != nil || enabled != "Enabled" || mode == nil || *mode != minio.Compliance || *validity != 2 {
		t.Fatalf("bucket lock after migration: %q %v %v %v", enabled, mode, validity, err)
	}
	for _, k := range keys {
		st, err := raw.StatObject(ctx, cfg.Bucket, k, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		until, ok := retainUntil(st)
		if !ok || st.Metadata.Get("X-Amz-Object-Lock-Mode") != "COMPLIANCE" || until.Sub(st.LastModified.AddDate(0, 0, 2)).Abs() > time.Second {
			t.Errorf("%s: retention %q until %v (written %v), want COMPLIANCE for 2 days from then", k, st.Metadata.Get("X-Amz-Object-Lock-Mode"), until, st.LastModified)
		}
		if err := raw.RemoveObject(ctx, cfg.Bucket, k, minio.RemoveObjectOptions{}); err == nil {
			t.Errorf("%s deleted after the migration", k)
		}
		if _, err := raw.PutObject(ctx, cfg.Bucket, k, bytes.NewReader([]byte("new")), 3, minio.PutObjectOptions{}); err == nil {
			t.Errorf("%s overwritten after the migration", k)
		}
		if got, _, err := s.Get(ctx, k); err != nil || string(got) != "written before the lock: "+k {
			t.Errorf("%s: %q %v", k, got, err)
		}
	}
	// A bucket without the lock from the start is migrated too.
	other := testConfig(t)
	newStore(t, other)
	other.ObjectLock, other.RetentionDays = true, 1
	newStore(t, other)
	if enabled, _, _, _, err := raw.GetObjectLockConfig(ctx, other.Bucket); err != nil || enabled != "Enabled" {
		t.Fatalf("plain bucket: lock %q, %v", enabled, err)
	}
}

// TestUnavailable checks that a server that cannot be reached gives
// ErrUnavailable, and quickly.
func TestUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	t.Run("closed port", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Endpoint = closedPort(t)
		start := time.Now()
		_, err := New(ctx, cfg, nil)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("New = %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v", d)
		}
	})

	t.Run("server gone", func(t *testing.T) {
		cfg := testConfig(t)
		p := newProxy(t, cfg.Endpoint)
		cfg.Endpoint = p.addr()
		s := newStore(t, cfg)
		key := ContainerKey(time.Now(), "gone")
		if _, err := s.Put(ctx, key, []byte("x"), "", nil); err != nil {
			t.Fatal(err)
		}
		p.close()

		start := time.Now()
		ops := map[string]func() error{
			"put":  func() error { _, err := s.Put(ctx, key+"2", []byte("y"), "", nil); return err },
			"get":  func() error { _, _, err := s.Get(ctx, key); return err },
			"stat": func() error { _, err := s.Stat(ctx, key); return err },
			"ping": func() error { return s.Ping(ctx) },
			"list": func() error {
				for _, err := range s.List(ctx, "") {
					return err
				}
				return nil
			},
		}
		var wg sync.WaitGroup
		for name, op := range ops {
			wg.Go(func() {
				if err := op(); !errors.Is(err, ErrUnavailable) {
					t.Errorf("%s = %v, want ErrUnavailable", name, err)
				}
			})
		}
		wg.Wait()
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v", d)
		}
	})
}

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// proxy forwards TCP connections to a target until closed, then refuses
// them: a server that goes away.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	t.Cleanup(p.close)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func BenchmarkPut64KiB(b *testing.B) {
	s := newStore(b, testConfig(b))
	data := randomBytes(64 << 10)
	prefix := rand.Text()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		key := ContainerKey(time.Now(), fmt.Sprintf("%s-%d", prefix, i))
		i++
		if _, err := s.Put(b.Context(), key, data, "", nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestProbeWrite: the write check stores data and leaves nothing behind,
// on a plain bucket and on one with Object Lock (where an object, once
// written, could never be removed); with the server gone it fails
// ErrUnavailable.
func TestProbeWrite(t *testing.T) {
	for _, lock := range []bool{false, true} {
		cfg := testConfig(t)
		cfg.ObjectLock, cfg.RetentionDays = lock, 0
		if lock {
			cfg.RetentionDays = 1
		}
		p := newProxy(t, cfg.Endpoint)
		cfg.Endpoint = p.addr()
		s := newStore(t, cfg)
		for range 3 {
			if err := s.ProbeWrite(t.Context()); err != nil {
				t.Fatalf("object lock %v: %v", lock, err)
			}
		}
		raw := rawClient(t, cfg)
		for o := range raw.ListObjects(t.Context(), cfg.Bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
			t.Errorf("object lock %v: %s left in the bucket (%v)", lock, o.Key, o.Err)
		}
		for u := range raw.ListIncompleteUploads(t.Context(), cfg.Bucket, "", true) {
			t.Errorf("object lock %v: upload %s left open (%v)", lock, u.Key, u.Err)
		}
		p.close()
		if err := s.ProbeWrite(t.Context()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("object lock %v, server gone: %v, want ErrUnavailable", lock, err)
		}
	}
}

// TestRequestsCounted: the archive counts the S3 requests it sends, by
// method (what edx bench divides by the documents to tell what one costs).
func TestRequestsCounted(t *testing.T) {
	s := newStore(t, testConfig(t))
	ctx := t.Context()
	count := func(method string) float64 {
		var m dto.Metric
		if err := s.requests.WithLabelValues(method).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	put0, get0 := count("PUT"), count("GET")
	key := ContainerKey(time.Now(), "01JCOUNTED0000000000000000")
	if _, err := s.Put(ctx, key, []byte("x"), "", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, key); err != nil {
		t.Fatal(err)
	}
	if put, get := count("PUT")-put0, count("GET")-get0; put != 1 || get != 1 {
		t.Fatalf("counted %v PUT and %v GET, want 1 and 1", put, get)
	}
	if s.Collector() == nil {
		t.Fatal("no collector")
	}
}

// TestPutChecksum: a PUT carries the body's CRC32C, which the server checks
// and keeps (a body that does not match it is refused and nothing is
// stored); on a locked bucket it takes the place of Content-MD5. A server
// that refuses the checksum header (an older S3, simulated by a proxy in
// front of the real gateway that also insists on Content-MD5 with a
// retention, as AWS does without a checksum) gets Content-MD5, and the store
// keeps to that: one refused request in all.
func TestPutChecksum(t *testing.T) {
	ctx := t.Context()
	cfg := lockedConfig(t, 1)
	s := newStore(t, cfg)
	key := ContainerKey(time.Now(), "crc")
	data := randomBytes(64 << 10)
	if _, err := s.Put(ctx, key, data, "", nil); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, cfg)
	info, err := raw.StatObject(ctx, cfg.Bucket, key, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.ChecksumCRC32C != crc32cBase64(data) {
		t.Errorf("stored CRC32C = %q, want %q", info.ChecksumCRC32C, crc32cBase64(data))
	}
	if until, ok := retainUntil(info); !ok || until.Before(time.Now().Add(23*time.Hour)) {
		t.Errorf("retained until %v (%v), want a day", until, ok)
	}

	// The server checks the checksum: a body that does not match is refused.
	trailing, err := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Region: cfg.Region, TrailingHeaders: true})
	if err != nil {
		t.Fatal(err)
	}
	bad := ContainerKey(time.Now(), "crc-bad")
	_, err = trailing.PutObject(ctx, cfg.Bucket, bad, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{DisableMultipart: true,
		UserMetadata: map[string]string{headerCRC32C: crc32cBase64([]byte("other bytes"))}})
	if err == nil || checksumRefused(err) {
		t.Errorf("PUT with a wrong CRC32C = %v, want a digest error", err)
	}
	if _, err := s.Stat(ctx, bad); !errors.Is(err, ErrNotFound) {
		t.Errorf("after a wrong CRC32C, Stat = %v, want ErrNotFound", err)
	}

	// An older server.
	target, err := url.Parse("http://" + cfg.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var puts, refused int
	rp := httputil.NewSingleHostReverseProxy(target)
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Query().Get("retention") == "" {
			mu.Lock()
			puts++
			mu.Unlock()
			crc := r.Header.Get(headerCRC32C) != ""
			if crc || (r.Header.Get("X-Amz-Object-Lock-Mode") != "" && r.Header.Get("Content-Md5") == "") {
				mu.Lock()
				refused++
				mu.Unlock()
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidRequest</Code><Message>Content-MD5 HTTP header is required for Put Object requests with Object Lock parameters</Message></Error>`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(old.Close)
	ocfg := cfg
	ocfg.Endpoint = strings.TrimPrefix(old.URL, "http://")
	olds := newStore(t, ocfg)
	for i := range 2 {
		k := ContainerKey(time.Now(), fmt.Sprintf("old-%d", i))
		if _, err := olds.Put(ctx, k, data, "", nil); err != nil {
			t.Fatalf("Put %d through a server without checksums: %v", i, err)
		}
		if got, _, err := s.Get(ctx, k); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get %d: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if puts != 3 || refused != 1 || !olds.compat.Load() {
		t.Errorf("through an older server: %d PUTs, %d refused, compat %v; want 3, 1, true", puts, refused, olds.compat.Load())
	}
}

func TestChecksumRefused(t *testing.T) {
	for _, c := range []struct {
		code   string
		status int
		want   bool
	}{
		{"InvalidRequest", 400, true},
		{"InvalidArgument", 400, true},
		{"NotImplemented", 501, true},
		{"BadDigest", 400, false},
		{"XAmzContentChecksumMismatch", 400, false},
		{"InvalidDigest", 400, false},
		{"AccessDenied", 403, false},
		{"PreconditionFailed", 412, false},
		{"InternalError", 500, false},
	} {
		err := minio.ErrorResponse{Code: c.code, StatusCode: c.status}
		if got := checksumRefused(err); got != c.want {
			t.Errorf("checksumRefused(%s %d) = %v, want %v", c.code, c.status, got, c.want)
		}
	}
}
