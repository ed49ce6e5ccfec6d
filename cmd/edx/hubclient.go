package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// hubFlags locate a hub's HTTP API and its token.
type hubFlags struct {
	url, tokenFile, data string
}

func (h *hubFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.url, "hub", "", "the hub's HTTP address, e.g. http://127.0.0.1:8080 (default: from DATA/hub.json)")
	fs.StringVar(&h.tokenFile, "token-file", "", "file holding the API token (default: $EDX_TOKEN, else DATA/admin.token)")
	fs.StringVar(&h.data, "data", "edx-data", "the embedded hub's data directory, to find hub.json and admin.token")
}

// client is a small client of the hub's API.
type client struct {
	base  string
	token string
	http  *http.Client
}

func (h *hubFlags) client() (*client, error) {
	c := &client{base: strings.TrimRight(h.url, "/"), http: &http.Client{Timeout: 5 * time.Minute}}
	if c.base == "" {
		var info struct {
			HTTP           string `json:"http"`
			AdminTokenFile string `json:"admin_token_file"`
		}
		b, err := os.ReadFile(filepath.Join(h.data, "hub.json"))
		if err != nil {
			return nil, fmt.Errorf("no --hub given and %v", err)
		}
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, fmt.Errorf("hub.json: %w", err)
		}
		c.base = info.HTTP
		if h.tokenFile == "" && os.Getenv("EDX_TOKEN") == "" {
			h.tokenFile = info.AdminTokenFile
		}
	}
	switch {
	case h.tokenFile != "":
		b, err := os.ReadFile(h.tokenFile)
		if err != nil {
			return nil, err
		}
		c.token = strings.TrimSpace(string(b))
	case os.Getenv("EDX_TOKEN") != "":
		c.token = os.Getenv("EDX_TOKEN")
	default:
		if b, err := os.ReadFile(filepath.Join(h.data, "admin.token")); err == nil {
			c.token = strings.TrimSpace(string(b))
		}
	}
	return c, nil
}

// do sends a request and decodes a JSON answer into out (raw bytes when out
// is *[]byte); an error status comes back as an error with the hub's message.
func (c *client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("hub: %s (%s)", e.Error, resp.Status)
		}
		return fmt.Errorf("hub: %s", resp.Status)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return nil
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
