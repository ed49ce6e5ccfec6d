package s3embed

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func client(t *testing.T, endpoint, access, secret string) *minio.Client {
	t.Helper()
	c, err := minio.New(endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(access, secret, ""),
		Region: "us-east-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// roundTrip creates bucket, writes an object into it and reads it back.
func roundTrip(t *testing.T, c *minio.Client, bucket string, lock bool) {
	t.Helper()
	ctx := t.Context()
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{ObjectLocking: lock}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	data := []byte("hello, archive")
	if _, err := c.PutObject(ctx, bucket, "a/b.txt", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	obj, err := c.GetObject(ctx, bucket, "a/b.txt", minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer obj.Close()
	got, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %q, want %q", got, data)
	}
}

func TestStart(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv, err := Start(t.Context(), Config{Dir: dir, AccessKey: "edx", SecretKey: "edx-secret"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		if now, _ := os.Getwd(); now != wd {
			t.Errorf("after Close the working directory is %s, want %s", now, wd)
		}
	})

	// The posix backend moved the working directory; this documents it.
	if now, _ := os.Getwd(); now != filepath.Join(dir, "data") {
		t.Errorf("working directory while running = %s, want %s", now, filepath.Join(dir, "data"))
	}

	if _, err := Start(t.Context(), Config{Dir: t.TempDir(), AccessKey: "x", SecretKey: "y"}, nil); err == nil {
		t.Error("second Start in one process succeeded, want an error")
	}

	c := client(t, srv.Endpoint(), "edx", "edx-secret")
	roundTrip(t, c, "plain", false)
	roundTrip(t, c, "locked", true)

	// No versioning, not even with object lock, and no one can turn it on:
	// a key holds one object (hub/archive's TestWriteOnce shows what the
	// lock then refuses).
	v, err := c.GetBucketVersioning(t.Context(), "locked")
	if err != nil {
		t.Fatal(err)
	}
	if v.Enabled() {
		t.Errorf("versioning on an object-lock bucket = %q, want off", v.Status)
	}
	if err := c.EnableVersioning(t.Context(), "locked"); err == nil {
		t.Error("versioning turned on")
	}

	bad := client(t, srv.Endpoint(), "edx", "wrong")
	if _, err := bad.ListBuckets(t.Context()); err == nil {
		t.Error("wrong secret accepted")
	}
}

func TestStartFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no credentials", Config{Dir: t.TempDir()}},
		{"no dir", Config{AccessKey: "a", SecretKey: "b"}},
		{"bad addr", Config{Dir: t.TempDir(), AccessKey: "a", SecretKey: "b", Addr: "nowhere"}},
		{"port in use", Config{Dir: t.TempDir(), AccessKey: "a", SecretKey: "b", Addr: busy.Addr().String()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if srv, err := Start(t.Context(), tt.cfg, nil); err == nil {
				srv.Close()
				t.Fatal("Start succeeded, want an error")
			}
			if now, _ := os.Getwd(); now != wd {
				t.Errorf("failed Start left the working directory at %s", now)
			}
		})
	}

	// A failed Start releases the one-per-process slot.
	srv, err := Start(t.Context(), Config{Dir: t.TempDir(), AccessKey: "a", SecretKey: "b"}, nil)
	if err != nil {
		t.Fatalf("Start after failures: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Error(err)
	}
}

func TestForTest(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	endpoint, access, secret := ForTest(t)
	if again, _, _ := ForTest(t); again != endpoint {
		t.Errorf("second ForTest = %s, want the shared %s", again, endpoint)
	}
	roundTrip(t, client(t, endpoint, access, secret), "for-test", true)
	if now, _ := os.Getwd(); now != wd {
		t.Errorf("ForTest changed the working directory to %s", now)
	}
}
