package api

import (
	"net/http"
)

func (s *server) proof(w http.ResponseWriter, r *http.Request) {
	p, err := s.svc.Proof(r.Context(), identity(r), docID(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// MediaBundle is the media type of an audit bundle.
const MediaBundle = "application/zip"

func (s *server) bundle(w http.ResponseWriter, r *http.Request) {
	id := docID(r)
	b, err := s.svc.Bundle(r.Context(), identity(r), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	WriteFile(w, b, MediaBundle, string(id)+".audit.zip", false)
}

func (s *server) logInfo(w http.ResponseWriter, r *http.Request) {
	info, err := s.svc.LogInfo()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}
