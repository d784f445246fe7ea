package proxy

import (
	"encoding/json"
	"html/template"
	"net/http"
)

// pageTmpl is the proxy's only HTML: small, self-contained, no scripts.
var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}
h1{font-size:1.4em}a.button{display:inline-block;padding:.5em 1em;background:#0b5cad;color:#fff;border-radius:4px;text-decoration:none}</style>
</head><body><h1>{{.Title}}</h1><p>{{.Message}}</p>
<p><a class="button" href="/oauth2/start?rd=%2F">Sign in again</a></p>
</body></html>
`))

// page writes a small HTML page.
func (s *Server) page(w http.ResponseWriter, status int, title, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	pageTmpl.Execute(w, struct{ Title, Message string }{title, msg})
}

// fail answers an error: an HTML page for browser navigations, JSON for
// everything else.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	if isNavigation(r) {
		s.page(w, status, title, msg)
		return
	}
	writeJSONError(w, status, errorCode(status), msg)
}

func errorCode(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusGatewayTimeout:
		return "upstream_timeout"
	case http.StatusBadGateway:
		return "bad_gateway"
	default:
		return "error"
	}
}

// writeJSONError writes {"error": code, "message": msg}.
func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{code, msg})
}
