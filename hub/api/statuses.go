package api

import (
	"fmt"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// MediaStatusSignature is the media type of a unit's signature over a
// status (an attached DER CMS SignedData).
const MediaStatusSignature = "application/pkcs7-mime; smime-type=signed-data"

func (s *server) statusSignature(w http.ResponseWriter, r *http.Request) {
	id := docID(r)
	sum := chi.URLParam(r, "sha256")
	b, e, err := s.svc.StatusSignature(r.Context(), identity(r), id, sum)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	WriteFile(w, b, MediaStatusSignature, fmt.Sprintf("%s.status-%s-%s.p7s", id, e.Unit, e.Code), false)
}
