package web

import (
	"embed"
	"net/http"
)

//go:embed assets
var assets embed.FS

// contentSecurityPolicy allows the page its own script, stylesheet and API
// calls only.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// files maps the served paths to the embedded files; nothing else is served.
var files = map[string]string{
	"/":                 "assets/index.html",
	"/assets/app.js":    "assets/app.js",
	"/assets/style.css": "assets/style.css",
}

// Handler serves the dashboard: GET / is the page, GET /assets/app.js and
// /assets/style.css its script and stylesheet; any other path is 404. Mount it
// on "GET /{$}" and "GET /assets/".
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, assets, name)
	})
}
