package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("unit: 000.00.00.H29\nnope: 1\n"), 0o600)
	incomplete := filepath.Join(dir, "incomplete.yaml")
	os.WriteFile(incomplete, []byte("unit: 000.00.00.H29\n"), 0o600)
	tests := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"help", []string{"--help"}, 0, "Usage:"},
		{"no config", nil, 2, "Usage:"},
		{"unknown key", []string{"-check", "-config", bad}, 2, "nope"},
		{"invalid", []string{"-check", "-config", incomplete}, 2, "trust.roots"},
		{"example config names missing files", []string{"-check", "-config", "../../configs/agent.yaml"}, 1, "api token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(t.Context(), tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(out.String()+errb.String(), tt.out) {
				t.Fatalf("code %d, output %q %q", code, out.String(), errb.String())
			}
		})
	}
}
