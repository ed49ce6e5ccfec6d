package api

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/document"
)

func (s *server) search(w http.ResponseWriter, r *http.Request) {
	q, err := service.ParseQuery(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.svc.Search(r.Context(), identity(r), q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func docID(r *http.Request) document.ID { return document.ID(chi.URLParam(r, "id")) }

func (s *server) document(w http.ResponseWriter, r *http.Request) {
	d, err := s.svc.Document(r.Context(), identity(r), docID(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// Media types of what the hub serves.
const (
	MediaContainer = "application/vnd.etsi.asic-e+zip"
	MediaReceipt   = "application/pkcs7-mime"
)

func (s *server) download(what string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := docID(r)
		var (
			b   []byte
			err error
		)
		ctype, name := MediaContainer, string(id)+".asice"
		if what == "receipt" {
			ctype, name = MediaReceipt, string(id)+".receipt.p7s"
			b, _, err = s.svc.Receipt(r.Context(), identity(r), id)
		} else {
			b, _, err = s.svc.Container(r.Context(), identity(r), id)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		WriteFile(w, b, ctype, name, false)
	}
}

func (s *server) file(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if r.URL.RawPath != "" {
		var err error
		if name, err = url.PathUnescape(name); err != nil {
			s.fail(w, r, fmt.Errorf("%w: file name: %v", service.ErrInvalid, err))
			return
		}
	}
	rc, info, err := s.svc.OpenFile(r.Context(), identity(r), docID(r), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	fileHeaders(w, info.Size, info.MediaType, name, r.URL.Query().Get("inline") != "0")
	if _, err := io.Copy(w, rc); err != nil {
		// The headers are sent: the client sees a short body.
		s.d.Log.Error("http: serve file", "path", r.URL.Path, "err", err)
	}
}

// WriteFile serves a file with its media type and a Content-Disposition
// carrying its name. Only PDFs are shown inline (when inline is true):
// every other type is an attachment, sandboxed should a browser render it
// anyway, since the files are the senders' and the page is the hub's.
func WriteFile(w http.ResponseWriter, b []byte, mediaType, name string, inline bool) {
	fileHeaders(w, int64(len(b)), mediaType, name, inline)
	w.Write(b)
}

func fileHeaders(w http.ResponseWriter, size int64, mediaType, name string, inline bool) {
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		mt = "application/octet-stream"
	}
	disp := "attachment"
	if mt == "application/pdf" && inline {
		disp = "inline"
	} else {
		w.Header().Set("Content-Security-Policy", "sandbox; default-src 'none'")
	}
	h := w.Header()
	h.Set("Content-Type", mt)
	h.Set("Content-Disposition", mime.FormatMediaType(disp, map[string]string{"filename": name}))
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("X-Content-Type-Options", "nosniff")
}

func (s *server) verifyArchived(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.Verify(r.Context(), identity(r), docID(r), r.URL.Query().Get("at"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) verifyUpload(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.VerifyUpload(identity(r), func() ([]byte, []byte, string, error) {
		data, receipt, err := readUpload(w, r)
		if err != nil {
			return nil, nil, "", err
		}
		at := r.URL.Query().Get("at")
		if at == "" && r.MultipartForm != nil {
			at = r.FormValue("at")
		}
		return data, receipt, at, nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// readUpload reads a container to verify: a multipart form with a part
// "container" and an optional part "receipt", or the container alone as the
// body.
func readUpload(w http.ResponseWriter, r *http.Request) (data, receipt []byte, err error) {
	r.Body = http.MaxBytesReader(w, r.Body, service.MaxUpload)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		data, err = io.ReadAll(r.Body)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", service.ErrInvalid, err)
		}
		if len(data) == 0 {
			return nil, nil, fmt.Errorf("%w: an empty body: send the container, or a multipart form with a part \"container\"", service.ErrInvalid)
		}
		return data, nil, nil
	}
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", service.ErrInvalid, err)
	}
	read := func(name string) ([]byte, error) {
		f, _, err := r.FormFile(name)
		if errors.Is(err, http.ErrMissingFile) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", service.ErrInvalid, name, err)
		}
		defer f.Close()
		return io.ReadAll(f.(multipart.File))
	}
	if data, err = read("container"); err != nil {
		return nil, nil, err
	}
	if len(data) == 0 {
		return nil, nil, fmt.Errorf("%w: the form has no part \"container\"", service.ErrInvalid)
	}
	if receipt, err = read("receipt"); err != nil {
		return nil, nil, err
	}
	if len(receipt) == 0 {
		receipt = nil
	}
	return data, receipt, nil
}
