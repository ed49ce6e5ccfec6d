package s3embed_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edxhub/edx/hub/archive"
	"github.com/edxhub/edx/hub/s3embed"
)

// BenchmarkArchivePut64KiB: the archive's PUT of 64 KiB to the embedded
// gateway, both in this process as in edx-hub, so that cpu-µs/op is the
// CPU time of the whole PUT (client, server, system calls), which the
// wall time, mostly the disk's, hides. plain: a bucket without object lock;
// locked: with object lock and a retention (the embedded default), as
// archive.Store writes it (the body's CRC32C in x-amz-checksum-crc32c);
// locked-md5: the same with Content-MD5 instead, as the store wrote it
// before (and still does to a server that refuses the checksum header).
func BenchmarkArchivePut64KiB(b *testing.B) {
	srv, err := s3embed.Start(b.Context(), s3embed.Config{Dir: b.TempDir(), AccessKey: "edx-bench", SecretKey: "edx-bench-secret"},
		slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	data := make([]byte, 64<<10)
	rand.Read(data)
	sum := fmt.Sprintf("%x", sha256.Sum256(data)) // as archive.Store records it
	store := func(b *testing.B, lock bool) (*archive.Store, string) {
		cfg := archive.Config{Endpoint: srv.Endpoint(), AccessKey: "edx-bench", SecretKey: "edx-bench-secret", Region: "us-east-1",
			Bucket: fmt.Sprintf("bench-%d", time.Now().UnixNano())}
		if lock {
			cfg.ObjectLock, cfg.RetentionDays = true, 1
		}
		s, err := archive.New(b.Context(), cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		return s, cfg.Bucket
	}
	run := func(b *testing.B, put func(i int) error) {
		b.SetBytes(int64(len(data)))
		i, start := 0, cpuTime()
		for b.Loop() {
			if err := put(i); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(cpuTime()-start)/float64(i)/1e3, "cpu-µs/op")
	}
	b.Run("plain", func(b *testing.B) {
		s, _ := store(b, false)
		run(b, func(i int) error { _, err := s.Put(b.Context(), fmt.Sprintf("p/%d", i), data, "", nil); return err })
	})
	b.Run("locked", func(b *testing.B) {
		s, _ := store(b, true)
		run(b, func(i int) error { _, err := s.Put(b.Context(), fmt.Sprintf("l/%d", i), data, "", nil); return err })
	})
	b.Run("locked-md5", func(b *testing.B) {
		_, bucket := store(b, true)
		c, err := minio.New(srv.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4("edx-bench", "edx-bench-secret", ""), Region: "us-east-1"})
		if err != nil {
			b.Fatal(err)
		}
		run(b, func(i int) error {
			o := minio.PutObjectOptions{DisableMultipart: true, DisableContentSha256: true, SendContentMd5: true,
				Mode: minio.Compliance, RetainUntilDate: time.Now().AddDate(0, 0, 1), UserMetadata: map[string]string{"sha256": sum}}
			o.SetMatchETagExcept("*")
			_, err := c.PutObject(b.Context(), bucket, fmt.Sprintf("m/%d", i), bytes.NewReader(data), int64(len(data)), o)
			return err
		})
	})
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
