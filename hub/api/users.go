package api

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/document"
)

// adminTokenOnly identifies requests bearing the admin token, when the hub
// runs without accounts.
func adminTokenOnly(token string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if ok && token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(token)) == 1 {
				r = r.WithContext(auth.WithIdentity(r.Context(), &auth.Identity{User: auth.AdminUser, Via: auth.ViaAdminToken}))
			}
			next.ServeHTTP(w, r)
		})
	}
}

func (s *server) me(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, identity(r))
}

func unitID(r *http.Request) document.UnitID { return document.UnitID(chi.URLParam(r, "id")) }

func (s *server) listUnits(w http.ResponseWriter, r *http.Request) {
	us, err := s.svc.Units(r.Context(), identity(r), r.URL.Query().Get("counters") == "true")
	s.answer(w, r, http.StatusOK, us, err)
}

func (s *server) addUnit(w http.ResponseWriter, r *http.Request) {
	var req service.UnitRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := s.svc.AddUnit(r.Context(), identity(r), req)
	s.answer(w, r, http.StatusCreated, b, err)
}

func (s *server) disableUnit(w http.ResponseWriter, r *http.Request) {
	u, err := s.svc.DisableUnit(r.Context(), identity(r), unitID(r))
	s.answer(w, r, http.StatusOK, u, err)
}

func (s *server) enableUnit(w http.ResponseWriter, r *http.Request) {
	b, err := s.svc.EnableUnit(r.Context(), identity(r), unitID(r))
	s.answer(w, r, http.StatusOK, b, err)
}

func (s *server) rotateUnit(w http.ResponseWriter, r *http.Request) {
	var req service.RotateRequest
	if r.ContentLength != 0 {
		if err := decode(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	b, err := s.svc.RotateUnit(r.Context(), identity(r), unitID(r), req)
	s.answer(w, r, http.StatusOK, b, err)
}

func (s *server) unit(w http.ResponseWriter, r *http.Request) {
	u, err := s.svc.Unit(r.Context(), identity(r), unitID(r))
	s.answer(w, r, http.StatusOK, u, err)
}

func (s *server) unitList(which string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var (
			out any
			err error
		)
		if which == "overdue" {
			out, err = s.svc.Overdue(r.Context(), identity(r), unitID(r))
		} else {
			out, err = s.svc.Pending(r.Context(), identity(r), unitID(r), 100)
		}
		s.answer(w, r, http.StatusOK, out, err)
	}
}

func (s *server) listUsers(w http.ResponseWriter, r *http.Request) {
	us, err := s.svc.Users(r.Context(), identity(r))
	s.answer(w, r, http.StatusOK, us, err)
}

func (s *server) addUser(w http.ResponseWriter, r *http.Request) {
	var nu auth.NewUser
	if err := decode(w, r, &nu); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.svc.AddUser(r.Context(), identity(r), nu)
	s.answer(w, r, http.StatusCreated, res, err)
}

func (s *server) getUser(w http.ResponseWriter, r *http.Request) {
	u, err := s.svc.User(r.Context(), identity(r), chi.URLParam(r, "name"))
	s.answer(w, r, http.StatusOK, u, err)
}

func (s *server) updateUser(w http.ResponseWriter, r *http.Request) {
	var c service.UserChange
	if err := decode(w, r, &c); err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.svc.UpdateUser(r.Context(), identity(r), chi.URLParam(r, "name"), c)
	s.answer(w, r, http.StatusOK, u, err)
}

func (s *server) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.svc.Tokens(r.Context(), identity(r), r.URL.Query().Get("user"))
	s.answer(w, r, http.StatusOK, ts, err)
}

func (s *server) newToken(w http.ResponseWriter, r *http.Request) {
	var req service.TokenRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.svc.NewToken(r.Context(), identity(r), req)
	s.answer(w, r, http.StatusCreated, res, err)
}

func (s *server) revokeToken(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.RevokeToken(r.Context(), identity(r), chi.URLParam(r, "id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
