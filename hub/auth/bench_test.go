package auth

import (
	"testing"

	"github.com/edxhub/edx/hub/broker"
)

// BenchmarkTokenIdentity: one API request's authentication, with the
// token and its account read from the buckets' leader (embedded server).
func BenchmarkTokenIdentity(b *testing.B) {
	s, err := Open(b.Context(), Config{Path: b.TempDir() + "/users.db", PasswordHash: fastHash}, broker.ForTest(b).HubJetStream(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	s.AddUser(b.Context(), NewUser{Name: "robot", Role: RoleAuditor, Password: "long enough password"})
	tok, _, err := s.NewToken(b.Context(), "robot", "bench", 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.TokenIdentity(b.Context(), tok); err != nil {
			b.Fatal(err)
		}
	}
}
