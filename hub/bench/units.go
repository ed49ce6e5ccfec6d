package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/edxhub/edx/pkg/document"
)

// loadUnits connects the units registered before, from Options.UnitsDir:
// one directory per unit, named by its identifier, as edx unit add writes
// it (nats.creds, key.pem, cert.pem, agent.yaml).
func (r *run) loadUnits(ctx context.Context) error {
	ents, err := os.ReadDir(r.o.UnitsDir)
	if err != nil {
		return fmt.Errorf("units: %w", err)
	}
	var ids []document.UnitID
	for _, e := range ents {
		if id := document.UnitID(e.Name()); e.IsDir() && id.Validate() == nil {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	if len(ids) < 2 {
		return fmt.Errorf("units: %s holds %d unit directories (edx unit add --out DIR/ID); the bench needs two at least", r.o.UnitsDir, len(ids))
	}
	for i, id := range ids {
		dir := filepath.Join(r.o.UnitsDir, string(id))
		read := func(name string) ([]byte, error) {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, fmt.Errorf("unit %s: %w", id, err)
			}
			return b, nil
		}
		creds, err := read("nats.creds")
		if err != nil {
			return err
		}
		key, err := read("key.pem")
		if err != nil {
			return fmt.Errorf("%w (the bench signs as the unit: it needs its key)", err)
		}
		cert, err := read("cert.pem")
		if err != nil {
			return err
		}
		url := r.natsURL
		if url == "" {
			if url, err = agentNATSURL(filepath.Join(dir, "agent.yaml")); err != nil {
				return fmt.Errorf("unit %s: %w; or give the NATS URL", id, err)
			}
		}
		u, err := r.connect(ctx, id, key, cert, creds, url)
		if err != nil {
			return err
		}
		r.units = append(r.units, u)
		r.o.Progress("units", i+1, len(ids))
	}
	r.o.Recipients = min(r.o.Recipients, len(r.units)-1)
	return nil
}

// agentNATSURL reads the NATS URL of a unit's agent configuration.
func agentNATSURL(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var c struct {
		NATS struct {
			URL string `yaml:"url"`
		} `yaml:"nats"`
	}
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&c); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if c.NATS.URL == "" {
		return "", errors.New(path + ": no nats.url")
	}
	return c.NATS.URL, nil
}
