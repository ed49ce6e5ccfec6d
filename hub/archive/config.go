package archive

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Environment variables read for credentials that the configuration leaves
// unset.
const (
	EnvAccessKey = "EDX_S3_ACCESS_KEY"
	EnvSecretKey = "EDX_S3_SECRET_KEY"
)

// DefaultBucket is the bucket used when Config.Bucket is empty.
const DefaultBucket = "edx-archive"

// maxRetentionDays is the longest retention S3 accepts (100 years).
const maxRetentionDays = 36500

// Config configures the archive's S3 store.
//
// Credentials come from, in order: the AccessKey and SecretKey fields, the
// files named by AccessKeyFile and SecretKeyFile, the environment variables
// EDX_S3_ACCESS_KEY and EDX_S3_SECRET_KEY. The secret key cannot be written
// in the YAML file itself: it is set by code (the embedded gateway's wiring)
// or read from a file or the environment.
type Config struct {
	// Endpoint is the S3 server's host[:port], without a scheme.
	Endpoint      string `yaml:"endpoint"`
	AccessKey     string `yaml:"access_key"`
	SecretKey     string `yaml:"-"`
	AccessKeyFile string `yaml:"access_key_file"`
	SecretKeyFile string `yaml:"secret_key_file"`
	// Bucket holds the whole archive. Default "edx-archive".
	Bucket string `yaml:"bucket"`
	// Region of the bucket; empty lets the client discover it.
	Region string `yaml:"region"`
	// UseSSL selects https.
	UseSSL bool `yaml:"use_ssl"`
	// ObjectLock creates the bucket with S3 Object Lock, and requires an
	// existing bucket to have it.
	ObjectLock bool `yaml:"object_lock"`
	// RetentionDays, with ObjectLock, is the COMPLIANCE-mode retention of
	// every object: set as the bucket's default rule and on each object
	// written. Zero means no retention.
	RetentionDays int `yaml:"retention_days"`
}

// Validate checks the configuration, including that the credentials can be
// found. It does not contact the server.
func (c *Config) Validate() error {
	var errs []error
	if c.Endpoint == "" {
		errs = append(errs, errors.New("endpoint is required"))
	} else if strings.Contains(c.Endpoint, "://") || strings.Contains(c.Endpoint, "/") {
		errs = append(errs, fmt.Errorf("endpoint %q: want host[:port] without a scheme or path (use_ssl selects https)", c.Endpoint))
	}
	if err := s3utils.CheckValidBucketNameStrict(c.bucket()); err != nil {
		errs = append(errs, fmt.Errorf("bucket %q: %w", c.bucket(), err))
	}
	switch {
	case c.RetentionDays < 0 || c.RetentionDays > maxRetentionDays:
		errs = append(errs, fmt.Errorf("retention_days %d: want 0 to %d", c.RetentionDays, maxRetentionDays))
	case c.RetentionDays > 0 && !c.ObjectLock:
		errs = append(errs, errors.New("retention_days needs object_lock"))
	}
	if _, _, err := c.credentials(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("archive: config: %w", err)
	}
	return nil
}

func (c *Config) bucket() string {
	if c.Bucket == "" {
		return DefaultBucket
	}
	return c.Bucket
}

// credentials resolves the access and secret keys.
func (c *Config) credentials() (access, secret string, err error) {
	access, err = credential("access key", c.AccessKey, c.AccessKeyFile, EnvAccessKey)
	if err != nil {
		return "", "", err
	}
	secret, err = credential("secret key", c.SecretKey, c.SecretKeyFile, EnvSecretKey)
	if err != nil {
		return "", "", err
	}
	return access, secret, nil
}

func credential(what, value, file, env string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("%s: set either the value or the file, not both", what)
	case value != "":
		return value, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s: %s is empty", what, file)
		}
		return v, nil
	case os.Getenv(env) != "":
		return os.Getenv(env), nil
	}
	return "", fmt.Errorf("%s: not configured (set a file or %s)", what, env)
}
