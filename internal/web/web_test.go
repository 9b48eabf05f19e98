package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, tc := range []struct {
		path     string
		code     int
		ctype    string
		contains string
	}{
		{"/", 200, "text/html", `src="/assets/app.js"`},
		{"/assets/app.js", 200, "text/javascript", "new EventSource(\"/api/v1/events\")"},
		{"/assets/style.css", 200, "text/css", "button.fault"},
		{"/assets/", 404, "", ""},
		{"/assets/index.html", 404, "", ""},
		{"/index.html", 404, "", ""},
		{"/assets/../web.go", 404, "", ""},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("GET %s = %d, want %d", tc.path, resp.StatusCode, tc.code)
			continue
		}
		if tc.code != 200 {
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
			t.Errorf("GET %s Content-Type = %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(string(b), tc.contains) {
			t.Errorf("GET %s body lacks %q", tc.path, tc.contains)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s CSP = %q", tc.path, csp)
		}
	}
}

// The page must work offline and under its CSP: no external or inline
// scripts and styles.
func TestNoExternalOrInlineAssets(t *testing.T) {
	for _, name := range []string{"assets/index.html", "assets/app.js", "assets/style.css"} {
		b, err := assets.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"http://", "https://", "<script>", "<style", " style=\"", "onclick=", ".innerHTML"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}
