// Package archive stores the hub's documents in S3: each signed container
// byte for byte, the hub's receipt beside it, and rejected submissions under
// rejected/. Objects are written once and never replaced. Where each object
// goes (the key layout) is hub/projection's.
//
// Write-once rests on the server: Put sends If-None-Match: *, so the server
// refuses to replace an existing object and answers 412 Precondition
// Failed. AWS S3, MinIO and versitygw honour it (versitygw checks it under a
// per-object lock at commit, so concurrent writers cannot both win). That
// binds the hub's own writes only. Against anyone holding the hub's S3
// credentials, Object Lock does the work: each object is written with a
// COMPLIANCE retention of the configured number of days, which no one can
// shorten, and the server refuses to delete or replace the object until it
// ends. How far that goes depends on the server:
//
//   - the embedded gateway (hub/s3embed: versitygw, no versioning) refuses
//     every overwrite (PutObject with or without If-None-Match, CopyObject,
//     a multipart upload completed onto the key) and every delete, with or
//     without a version id; nobody can turn versioning on;
//   - a versioned bucket (AWS, which requires versioning with object lock)
//     refuses to delete or alter a locked version, but an overwrite adds a
//     new current version and a delete without a version id a delete
//     marker, both hiding the locked version from a plain GET: deny them in
//     the bucket policy (README: Running for real).
//
// A bucket created without Object Lock gets it in place when the
// configuration asks for it (New), where the server allows that.
package archive

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"iter"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"
)

// Error kinds, matched with errors.Is. Errors carry the operation and key:
// "archive: put 2026/11/25/<id>/container.asice: conflict".
var (
	// ErrNotFound: no object at the key.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a different object already exists at the key.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the server could not be reached or failed (network
	// errors, timeouts, 5xx, throttling). Retrying later may succeed.
	ErrUnavailable = errors.New("storage unavailable")
)

// metaSHA256 is the user metadata key (header X-Amz-Meta-Sha256) holding the
// hex SHA-256 of an object's content.
const metaSHA256 = "sha256"

// Client tuning. minio-go retries failed requests with backoff; the caller
// retries whole operations (a NATS redelivery), so a few attempts suffice
// and an outage is reported within about a second.
const (
	maxRetries  = 3
	dialTimeout = 5 * time.Second
)

// Object describes a stored object.
type Object struct {
	Key  string
	Size int64
	// SHA256 is the hex SHA-256 of the content, as recorded at Put. Empty in
	// List results (S3 listings carry no user metadata) and for objects not
	// written by Put.
	SHA256      string
	ContentType string
	// LastModified is the server's modification time; for an object just
	// written by Put, the local time when the write completed.
	LastModified time.Time
	// VersionID is set when the bucket is versioned (always, with Object
	// Lock).
	VersionID string
	// Metadata is the user metadata, keys in lower case, without sha256.
	Metadata map[string]string
	// Existed reports, for Put only, that the identical object was already
	// stored and nothing was written.
	Existed bool
}

// Store is the archive on one S3 bucket. It is safe for concurrent use.
type Store struct {
	client        *minio.Client
	checked       *minio.Client // PUTs with a checksum header (put)
	compat        atomic.Bool   // the server refused the checksum header
	bucket        string
	retentionDays int
	log           *slog.Logger
	// unsignedPayload skips SigV4 payload hashing (TLS or a loopback endpoint).
	unsignedPayload bool
	// requests counts the S3 requests sent, by HTTP method (Collector).
	requests *prometheus.CounterVec
}

// Collector returns the archive's metrics: the S3 requests it sent, by HTTP
// method (edx_hub_s3_requests_total), which tell how many requests each
// document costs (edx bench).
func (s *Store) Collector() prometheus.Collector { return s.requests }

// counting is an http.RoundTripper that counts requests by method.
type counting struct {
	next http.RoundTripper
	n    *prometheus.CounterVec
}

func (c counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.WithLabelValues(r.Method).Inc()
	return c.next.RoundTrip(r)
}

// New connects to the server and makes sure the bucket exists: it creates a
// missing bucket (with Object Lock and the default retention rule when
// cfg.ObjectLock), and checks that an existing one has Object Lock when
// cfg.ObjectLock.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	access, secret, err := cfg.credentials()
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	tr, err := minio.DefaultTransport(cfg.UseSSL)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edx_hub_s3_requests_total",
		Help: "Requests the archive sent to S3, by HTTP method."}, []string{"method"})
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:      credentials.NewStaticV4(access, secret, ""),
		Secure:     cfg.UseSSL,
		Region:     cfg.Region,
		Transport:  counting{next: tr, n: requests},
		MaxRetries: maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	// The same, allowed to send a checksum header (minio-go sends one only
	// with TrailingHeaders; put always gives its own, so nothing trails).
	checked, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:           credentials.NewStaticV4(access, secret, ""),
		Secure:          cfg.UseSSL,
		Region:          cfg.Region,
		Transport:       counting{next: tr, n: requests},
		MaxRetries:      maxRetries,
		TrailingHeaders: true,
	})
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	s := &Store{client: client, checked: checked, bucket: cfg.bucket(), log: log, unsignedPayload: cfg.UseSSL || isLoopback(cfg.Endpoint), requests: requests}
	if cfg.ObjectLock {
		s.retentionDays = cfg.RetentionDays
	}
	if err := s.ensureBucket(ctx, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) ensureBucket(ctx context.Context, cfg Config) error {
	exists, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return wrap("check bucket", s.bucket, err)
	}
	if !exists {
		err := s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{
			Region:        cfg.Region,
			ObjectLocking: cfg.ObjectLock,
		})
		if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
			return wrap("create bucket", s.bucket, err)
		}
		s.log.Info("archive bucket created", "bucket", s.bucket, "object_lock", cfg.ObjectLock)
	}
	if !cfg.ObjectLock {
		return nil
	}

	enabled, mode, validity, unit, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	if err != nil && minio.ToErrorResponse(err).Code != "ObjectLockConfigurationNotFoundError" {
		return wrap("check object lock", s.bucket, err)
	}
	if enabled != "Enabled" {
		if err := s.lockBucket(ctx); err != nil {
			return err
		}
		mode, validity, unit = nil, nil, nil
	}
	if cfg.RetentionDays == 0 {
		return nil
	}
	if mode != nil && *mode == minio.Compliance && validity != nil && unit != nil &&
		*unit == minio.Days && *validity == uint(cfg.RetentionDays) {
		return nil
	}
	// The bucket's default rule is set last: until it matches, objects
	// written before (without object lock, or with no retention) may lack
	// theirs, and get it now. A start interrupted here does it again.
	if err := s.retainExisting(ctx, cfg.RetentionDays); err != nil {
		return err
	}
	compliance, days, perDay := minio.Compliance, uint(cfg.RetentionDays), minio.Days
	if err := s.client.SetObjectLockConfig(ctx, s.bucket, &compliance, &days, &perDay); err != nil {
		return wrap("set default retention", s.bucket, err)
	}
	s.log.Info("archive default retention set", "bucket", s.bucket, "mode", "COMPLIANCE", "days", cfg.RetentionDays)
	return nil
}

// lockBucket turns Object Lock on for a bucket created without it. S3
// allows it on a versioned bucket (AWS since 2023; versitygw without
// versioning allows it at once); a server that wants versioning first gets
// it. A server that refuses (MinIO) leaves the documented way out: a new
// bucket created with Object Lock and a one-off copy.
func (s *Store) lockBucket(ctx context.Context) error {
	err := s.client.SetObjectLockConfig(ctx, s.bucket, nil, nil, nil)
	if minio.ToErrorResponse(err).Code == "InvalidBucketState" { // versioning must be enabled first
		if verr := s.client.EnableVersioning(ctx, s.bucket); verr != nil {
			err = fmt.Errorf("%w; enabling versioning: %w", err, verr)
		} else {
			err = s.client.SetObjectLockConfig(ctx, s.bucket, nil, nil, nil)
		}
	}
	if err != nil {
		return fmt.Errorf("archive: bucket %s exists without object lock and the server refuses to add it (%w): "+
			"create a new bucket with object lock (set s3.bucket to a new name; the hub creates it), copy every object into it "+
			"with its metadata (mc mirror, aws s3 sync), then start the hub, which sets their retention", s.bucket, err)
	}
	s.log.Warn("archive: object lock turned on for a bucket created without it; existing objects get their retention now",
		"bucket", s.bucket)
	return nil
}

// retainExisting gives every current object that has no retention in force
// a COMPLIANCE retention of days from when it was written (none when that
// is already past).
func (s *Store) retainExisting(ctx context.Context, days int) error {
	var set, kept, expired int
	for info := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Recursive: true}) {
		if info.Err != nil {
			return wrap("list", s.bucket, info.Err)
		}
		st, err := s.client.StatObject(ctx, s.bucket, info.Key, minio.StatObjectOptions{})
		if err != nil {
			return wrap("stat", info.Key, err)
		}
		if until, ok := retainUntil(st); ok && until.After(time.Now()) {
			kept++
			continue
		}
		until := st.LastModified.AddDate(0, 0, days).UTC()
		if !until.After(time.Now()) {
			expired++
			continue
		}
		mode := minio.Compliance
		if err := s.client.PutObjectRetention(ctx, s.bucket, info.Key, minio.PutObjectRetentionOptions{
			Mode: &mode, RetainUntilDate: &until, VersionID: st.VersionID}); err != nil {
			return wrap("set retention", info.Key, err)
		}
		set++
		if set%1000 == 0 {
			s.log.Info("archive: setting the retention of existing objects", "bucket", s.bucket, "done", set)
		}
	}
	if set+expired > 0 {
		s.log.Warn("archive: retention set on objects written without it", "bucket", s.bucket, "set", set,
			"already_retained", kept, "past_retention", expired, "days", days)
	}
	return nil
}

// retainUntil reads an object's retention from its HEAD answer (versitygw
// v1.8.0 answers GetObjectRetention with a body minio-go cannot decode).
func retainUntil(info minio.ObjectInfo) (time.Time, bool) {
	if info.Metadata.Get("X-Amz-Object-Lock-Mode") == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
	return t, err == nil
}

// Put stores data at key, once. If an object already exists at key, Put
// compares SHA-256 digests: the same content is success (Object.Existed is
// true and nothing is written, so retries are harmless); different content
// is ErrConflict and the stored object is untouched.
//
// meta is stored as user metadata: keys of letters, digits, '-' and '_'
// (stored in lower case), printable ASCII values. With Object Lock and a
// retention period, the object gets a COMPLIANCE retention of that many
// days from now.
func (s *Store) Put(ctx context.Context, key string, data []byte, contentType string, meta map[string]string) (Object, error) {
	if err := checkKey(key); err != nil {
		return Object{}, fmt.Errorf("archive: put %s: %w", key, err)
	}
	userMeta, err := userMetadata(meta)
	if err != nil {
		return Object{}, fmt.Errorf("archive: put %s: %w", key, err)
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])

	opts := minio.PutObjectOptions{
		ContentType:  contentType,
		UserMetadata: maps.Clone(userMeta),
		// One request, so that If-None-Match decides the whole write.
		DisableMultipart: true,
		// The body is not hashed again for the request signature when TLS or
		// loopback protects it; the SHA-256 in the metadata is checked on
		// every read.
		DisableContentSha256: s.unsignedPayload,
	}
	if opts.UserMetadata == nil {
		opts.UserMetadata = make(map[string]string, 1)
	}
	opts.UserMetadata[metaSHA256] = digest
	opts.SetMatchETagExcept("*") // If-None-Match: *
	if s.retentionDays > 0 {
		opts.Mode = minio.Compliance
		opts.RetainUntilDate = time.Now().AddDate(0, 0, s.retentionDays).UTC()
	}

	info, err := s.put(ctx, key, data, opts)
	if err == nil {
		return Object{
			Key:          key,
			Size:         int64(len(data)),
			SHA256:       digest,
			ContentType:  contentType,
			LastModified: time.Now().UTC(),
			VersionID:    info.VersionID,
			Metadata:     userMeta,
		}, nil
	}
	putErr := err
	switch minio.ToErrorResponse(err).StatusCode {
	case http.StatusPreconditionFailed, http.StatusForbidden:
		// 412: If-None-Match found an object. 403: a server may check
		// Object Lock first (versitygw refuses to replace an object under
		// retention with AccessDenied); the object may be this document,
		// and if nothing can be read the refusal stands.
	default:
		return Object{}, wrap("put", key, err)
	}

	// Something is stored at key already: the same document (an earlier
	// attempt whose answer was lost) or a different one.
	existing, err := s.Stat(ctx, key)
	if minio.ToErrorResponse(putErr).StatusCode == http.StatusForbidden && err != nil {
		return Object{}, wrap("put", key, putErr)
	}
	if errors.Is(err, ErrNotFound) {
		// Refused, yet nothing to read: the key's current version is a
		// delete marker (versitygw counts one as existing; AWS would
		// accept the write) or it was deleted in between. Either way
		// someone deleted an archived object; retrying will not help.
		return Object{}, fmt.Errorf("archive: put %s: %w: the server refuses to create the object but has none to read (deleted, or a delete marker)", key, ErrConflict)
	}
	if err != nil {
		return Object{}, fmt.Errorf("archive: put %s: %w", key, err)
	}
	if existing.SHA256 == "" {
		// Not written by Put: compare the content itself.
		if existing.SHA256, err = s.digest(ctx, key); err != nil {
			return Object{}, fmt.Errorf("archive: put %s: %w", key, err)
		}
	}
	if existing.SHA256 != digest {
		return Object{}, fmt.Errorf("archive: put %s: %w: stored sha256 %s, new %s", key, ErrConflict, existing.SHA256, digest)
	}
	existing.Existed = true
	s.log.Debug("archive object already stored", "key", key)
	return existing, nil
}

// put sends one PUT of data with opts. The body's integrity on the way is
// checked by the server against a CRC32C sent with it
// (x-amz-checksum-crc32c, computed here at a fraction of the cost of MD5):
// AWS requires an integrity header ("Content-MD5 or x-amz-checksum-") on a
// PUT with a retention, and the MD5 of Content-MD5 cost the embedded
// gateway's PUT of 64 KiB a quarter of its time (BenchmarkPut64KiB: the
// client hashed the body once more, the server twice). A server that
// refuses the checksum header (400 or 501 other than a digest mismatch) is
// sent what it was sent before: Content-MD5 with a retention, nothing
// without; once that works, the store keeps to it (compat).
func (s *Store) put(ctx context.Context, key string, data []byte, opts minio.PutObjectOptions) (minio.UploadInfo, error) {
	if !s.compat.Load() {
		checked := opts
		checked.UserMetadata = maps.Clone(opts.UserMetadata)
		checked.UserMetadata[headerCRC32C] = crc32cBase64(data)
		info, err := s.checked.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), checked)
		if err == nil || !checksumRefused(err) {
			return info, err
		}
		first := err
		info, err = s.putCompat(ctx, key, data, opts)
		if err != nil {
			return info, err
		}
		if s.compat.CompareAndSwap(false, true) {
			s.log.Warn("archive: the S3 server refuses an x-amz-checksum-crc32c header; PUTs go without it from now on (Content-MD5 with a retention)",
				"error", first)
		}
		return info, nil
	}
	return s.putCompat(ctx, key, data, opts)
}

// putCompat is a PUT without a checksum header: with a retention, the body's
// MD5 in Content-MD5.
func (s *Store) putCompat(ctx context.Context, key string, data []byte, opts minio.PutObjectOptions) (minio.UploadInfo, error) {
	opts.SendContentMd5 = opts.Mode != ""
	return s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
}

// headerCRC32C carries the body's CRC32C (Castagnoli), base64 of its four
// big-endian bytes, as S3 defines it.
const headerCRC32C = "x-amz-checksum-crc32c"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32cBase64(data []byte) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc32.Checksum(data, castagnoli)))
}

// checksumRefused reports whether a PUT's failure may be the server not
// taking the checksum header: a 400 or 501 other than a checksum that did
// not match the body (corruption on the way, for which the caller retries
// as for any failure).
func checksumRefused(err error) bool {
	r := minio.ToErrorResponse(err)
	switch r.Code {
	case "BadDigest", "XAmzContentChecksumMismatch", "InvalidDigest":
		return false
	}
	return r.StatusCode == http.StatusBadRequest || r.StatusCode == http.StatusNotImplemented
}

// digest reads the object at key and returns its hex SHA-256.
func (s *Store) digest(ctx context.Context, key string) (string, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return "", wrap("get", key, err)
	}
	defer obj.Close()
	h := sha256.New()
	if _, err := io.Copy(h, obj); err != nil {
		return "", wrap("get", key, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Get returns the content of the object at key, checked against its
// recorded SHA-256.
func (s *Store) Get(ctx context.Context, key string) ([]byte, Object, error) {
	rc, obj, err := s.Open(ctx, key)
	if err != nil {
		return nil, Object{}, err
	}
	defer rc.Close()
	buf := bytes.NewBuffer(make([]byte, 0, obj.Size))
	if _, err := buf.ReadFrom(rc); err != nil {
		return nil, Object{}, err
	}
	return buf.Bytes(), obj, nil
}

// Open returns a reader for the content of the object at key. The reader
// checks the content against the recorded SHA-256 and fails at the end of
// the stream if they differ. The caller must close it.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, Object, error) {
	if err := checkKey(key); err != nil {
		return nil, Object{}, fmt.Errorf("archive: get %s: %w", key, err)
	}
	r, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Object{}, wrap("get", key, err)
	}
	info, err := r.Stat() // sends the GET
	if err != nil {
		r.Close()
		return nil, Object{}, wrap("get", key, err)
	}
	obj := toObject(info)
	return &verifier{r: r, h: sha256.New(), want: obj.SHA256, key: key}, obj, nil
}

// verifier passes reads through and compares the SHA-256 at EOF.
type verifier struct {
	r    io.ReadCloser
	h    hash.Hash
	want string
	key  string
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	switch {
	case err == io.EOF && v.want != "":
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n, fmt.Errorf("archive: get %s: content sha256 %s, recorded %s", v.key, got, v.want)
		}
	case err != nil && err != io.EOF:
		return n, wrap("get", v.key, err)
	}
	return n, err
}

func (v *verifier) Close() error { return v.r.Close() }

// Stat returns the description of the object at key.
func (s *Store) Stat(ctx context.Context, key string) (Object, error) {
	if err := checkKey(key); err != nil {
		return Object{}, fmt.Errorf("archive: stat %s: %w", key, err)
	}
	info, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Object{}, wrap("stat", key, err)
	}
	return toObject(info), nil
}

// List yields the objects whose keys start with prefix, at any depth, in
// key order. Listed objects carry Key, Size, LastModified and no SHA256 or
// metadata; Stat has those. An error ends the sequence.
func (s *Store) List(ctx context.Context, prefix string) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		opts := minio.ListObjectsOptions{Prefix: prefix, Recursive: true}
		for info := range s.client.ListObjectsIter(ctx, s.bucket, opts) {
			if info.Err != nil {
				yield(Object{}, wrap("list", prefix, info.Err))
				return
			}
			obj := Object{
				Key:          info.Key,
				Size:         info.Size,
				LastModified: info.LastModified,
				VersionID:    info.VersionID,
			}
			if !yield(obj, nil) {
				return
			}
		}
	}
}

// Ping reports whether the server answers and the bucket exists, for
// readiness checks.
func (s *Store) Ping(ctx context.Context) error {
	exists, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return wrap("ping", s.bucket, err)
	}
	if !exists {
		return fmt.Errorf("archive: ping %s: bucket %w", s.bucket, ErrNotFound)
	}
	return nil
}

// ProbeWrite checks that the server can store data now, without leaving
// anything in the write-once bucket: it starts a multipart upload under
// ProbePrefix, uploads one small part and aborts the upload. A full disk
// behind the server fails it (ErrUnavailable).
func (s *Store) ProbeWrite(ctx context.Context) error {
	core := minio.Core{Client: s.client}
	key := ProbePrefix + time.Now().UTC().Format("20060102T150405.000000000")
	id, err := core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return wrap("probe", key, err)
	}
	data := bytes.Repeat([]byte("edx write probe\n"), 4096) // 64 KiB
	sum := md5.Sum(data)
	_, perr := core.PutObjectPart(ctx, s.bucket, key, id, 1, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(sum[:])})
	aerr := core.AbortMultipartUpload(ctx, s.bucket, key, id)
	if perr != nil {
		return wrap("probe", key, perr)
	}
	if aerr != nil {
		return wrap("probe abort", key, aerr)
	}
	return nil
}

// ProbePrefix is where ProbeWrite's uploads go; none is ever completed.
const ProbePrefix = "health/probe-"

func toObject(info minio.ObjectInfo) Object {
	obj := Object{
		Key:          info.Key,
		Size:         info.Size,
		ContentType:  info.ContentType,
		LastModified: info.LastModified,
		VersionID:    info.VersionID,
	}
	for k, v := range info.UserMetadata {
		k = strings.ToLower(k)
		if k == metaSHA256 {
			obj.SHA256 = v
			continue
		}
		if obj.Metadata == nil {
			obj.Metadata = make(map[string]string, len(info.UserMetadata))
		}
		obj.Metadata[k] = v
	}
	return obj
}

// wrap turns a client error into "archive: OP KEY: KIND: cause".
func wrap(op, key string, err error) error {
	if kind := kindOf(err); kind != nil {
		return fmt.Errorf("archive: %s %s: %w: %w", op, key, kind, err)
	}
	return fmt.Errorf("archive: %s %s: %w", op, key, err)
}

// kindOf classifies a minio-go error as ErrNotFound, ErrUnavailable or
// neither (a request the server refused, such as bad credentials).
func kindOf(err error) error {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		// No S3 answer: a network error, a timeout, a cancelled context.
		return ErrUnavailable
	}
	switch resp.Code {
	case minio.NoSuchKey, "NoSuchVersion":
		return ErrNotFound
	case "SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError",
		"ConditionalRequestConflict", "OperationAborted":
		return ErrUnavailable
	}
	switch {
	case resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket:
		// A HEAD answer has no body, hence no code.
		return ErrNotFound
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == 0:
		return ErrUnavailable
	}
	return nil
}

// checkKey rejects keys that S3 would refuse or that name no object.
func checkKey(key string) error {
	switch {
	case key == "" || len(key) > 1024:
		return errors.New("invalid key: want 1 to 1024 bytes")
	case strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/"):
		return errors.New("invalid key: leading or trailing slash")
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("invalid key: path segment %q", seg)
		}
	}
	return nil
}

// userMetadata checks meta and returns a copy with lower-case keys.
func userMetadata(meta map[string]string) (map[string]string, error) {
	if len(meta) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(meta))
	for k, v := range meta {
		lk := strings.ToLower(k)
		if lk == "" || strings.Trim(lk, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return nil, fmt.Errorf("metadata key %q: want letters, digits, '-' and '_'", k)
		}
		if lk == metaSHA256 {
			return nil, fmt.Errorf("metadata key %q is reserved", k)
		}
		for _, r := range v {
			if r < 0x20 || r > 0x7e {
				return nil, fmt.Errorf("metadata %s: value must be printable ASCII", k)
			}
		}
		if _, dup := out[lk]; dup {
			return nil, fmt.Errorf("metadata key %q given twice", k)
		}
		out[lk] = v
	}
	return out, nil
}

// isLoopback reports whether endpoint (host:port) is on this machine.
func isLoopback(endpoint string) bool {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		host = endpoint
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
