package container

import (
	"testing"

	"github.com/edxhub/edx/pkg/document"
	"github.com/edxhub/edx/pkg/pki"
)

// For the external tests (package container_test), which craft containers
// with containertest.

const UnitA, UnitB = unitA, unitB

func NewSigner(tb testing.TB, unit document.UnitID) *pki.Signer {
	return signer(tb, unit, pki.ECDSAP256, nil)
}

func Meta(tb testing.TB, from document.UnitID) []byte { return meta(tb, from) }

func FixtureTrust() *pki.Trust { return fx.trust }
