package control

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/ledger"
	"github.com/tally-mesh/tally/internal/ledger/ledgerhttp"
	"github.com/tally-mesh/tally/internal/web"
)

// Limits of the REST API.
const (
	defaultLimit = 100
	maxLimit     = 1000
	maxBodyBytes = 64 << 10
	// defaultTokenTTL is the life of a token created without "ttl".
	defaultTokenTTL = time.Hour
	minTokenTTL     = time.Second
	maxTokenTTL     = 365 * 24 * time.Hour
	// defaultFaultDelay is the delay of a delay fault given without delay_ms.
	defaultFaultDelay = 1000 // ms
	maxFaultDelay     = 60_000
)

// noPolicyWarning is what /api/v1/config, `tally check` and the dashboard
// show while no mesh config is set.
const noPolicyWarning = "no policy set: every mesh identity may call every service"

// httpError is an error with the status and the message a client sees; the
// wrapped cause, if any, is only logged.
type httpError struct {
	status int
	msg    string
	cause  error
}

func (e *httpError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *httpError) Unwrap() error { return e.cause }

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// handlerFunc is an HTTP handler that returns its error for the caller to
// write: an *httpError as is, anything else as a 500 whose cause is logged.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) serve(h handlerFunc) http.Handler { return serveErrors(s.log, writeJSON, h) }

// serveErrors runs h and writes its error with write: an *httpError as it
// is, a damaged ledger as what an auditor needs to hear, anything else as
// a 500 whose cause is logged.
func serveErrors(log *slog.Logger, write func(http.ResponseWriter, int, any) error, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var he *httpError
		if !errors.As(err, &he) {
			he = &httpError{status: http.StatusInternalServerError, msg: "internal error", cause: err}
			if errors.Is(err, ledger.ErrTampered) {
				// Not a secret, and what an auditor needs to hear.
				he.msg = "the ledger store is damaged: " + err.Error()
			}
		}
		if he.status >= 500 {
			log.Error("http request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		if he.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tally"`)
		}
		write(w, he.status, map[string]string{"error": he.msg})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// list is the shape of every list the API returns.
type list[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next"`
}

// handler returns the HTTP API, dashboard and operational endpoints.
func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	type route struct {
		method string
		h      handlerFunc
	}
	routes := map[string][]route{
		"/api/v1/services":      {{"GET", s.handleServices}},
		"/api/v1/edges":         {{"GET", s.handleEdges}},
		"/api/v1/omissions":     {{"GET", s.handleOmissions}},
		"/api/v1/events":        {{"GET", s.handleEvents}},
		"/api/v1/config":        {{"GET", s.handleConfig}},
		"/api/v1/faults":        {{"GET", s.handleFaults}},
		"/api/v1/faults/{kind}": {{"GET", s.handleFault}, {"PUT", s.admin(s.handlePutFault)}, {"DELETE", s.admin(s.handleDeleteFault)}},
		"/api/v1/tokens":        {{"GET", s.admin(s.handleTokens)}, {"POST", s.admin(s.handleCreateToken)}},
		"/api/v1/tokens/{id}":   {{"DELETE", s.admin(s.handleRevokeToken)}},
	}
	for path, rs := range routes {
		var allow []string
		for _, rt := range rs {
			mux.Handle(rt.method+" "+path, s.serve(rt.h))
			allow = append(allow, rt.method)
			if rt.method == "GET" {
				allow = append(allow, "HEAD")
			}
		}
		// Any other method: a JSON 405 rather than the mux's text one.
		allowed := strings.Join(allow, ", ")
		mux.Handle(path, s.serve(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Allow", allowed)
			return &httpError{status: http.StatusMethodNotAllowed, msg: fmt.Sprintf("method %s not allowed; allowed: %s", r.Method, allowed)}
		}))
	}
	mux.Handle(ledgerhttp.PathPrefix, ledgerHandler(s.ledger.log, s.ca.Cert, s.log))
	mux.Handle("/api/", s.serve(func(w http.ResponseWriter, r *http.Request) error {
		return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("no endpoint %s", r.URL.Path)}
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{
		ErrorLog:          slogPrinter{s},
		EnableOpenMetrics: true,
	}))
	dash := web.Handler()
	mux.Handle("GET /{$}", dash)
	mux.Handle("GET /assets/", dash)
	return mux
}

type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) { p.s.log.Error("serving metrics", "err", fmt.Sprint(v...)) }

// admin wraps h so that it runs only for a request bearing the admin token.
func (s *Server) admin(h handlerFunc) handlerFunc {
	want := []byte(s.adminToken)
	return func(w http.ResponseWriter, r *http.Request) error {
		auth := r.Header.Get("Authorization")
		if auth == "" {
			return &httpError{status: http.StatusUnauthorized, msg: "this endpoint needs the admin token (DIR/admin-token) as 'Authorization: Bearer <token>'"}
		}
		scheme, got, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			return &httpError{status: http.StatusUnauthorized, msg: "wrong admin token"}
		}
		return h(w, r)
	}
}

func (s *Server) handleServices(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		return badRequest("%v", err)
	}
	after, err := parseCursor(q.Get("cursor"), cursorServices)
	if err != nil {
		return badRequest("%v", err)
	}
	all := s.reg.services()
	for i := range all {
		// The REST shape lists every instance, with or without address.
		if all[i].Instances == nil {
			all[i].Instances = []InstanceInfo{}
		}
	}
	items, next := page(all, func(si ServiceInfo) string { return si.Name }, after, limit, cursorServices)
	return writeJSON(w, http.StatusOK, list[ServiceInfo]{Items: items, Next: next})
}

func edgeCursorKey(e Edge) string { return e.Source + " " + e.Destination }

func (s *Server) handleEdges(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		return badRequest("%v", err)
	}
	after, err := parseCursor(q.Get("cursor"), cursorEdges)
	if err != nil {
		return badRequest("%v", err)
	}
	items, next := page(s.store.Edges(), edgeCursorKey, after, limit, cursorEdges)
	return writeJSON(w, http.StatusOK, list[Edge]{Items: items, Next: next})
}

func (s *Server) handleOmissions(w http.ResponseWriter, r *http.Request) error {
	q, err := parseOmissionQuery(r.URL.Query().Get)
	if err != nil {
		return badRequest("%v", err)
	}
	events, more := s.store.Omissions(q)
	out := list[Event]{Items: events}
	if out.Items == nil {
		out.Items = []Event{}
	}
	if more {
		id, _ := strconv.ParseUint(events[len(events)-1].ID, 10, 64)
		out.Next = encodeCursor(cursorOmissions, strconv.FormatUint(id, 10))
	}
	return writeJSON(w, http.StatusOK, out)
}

// parseOmissionQuery parses the parameters of GET /api/v1/omissions: kind,
// since, order (asc, the default, or desc), cursor and limit.
func parseOmissionQuery(get func(string) string) (OmissionQuery, error) {
	var q OmissionQuery
	var err error
	if q.Kind, err = parseKind(get("kind")); err != nil {
		return q, err
	}
	if q.Since, err = parseSince(get("since")); err != nil {
		return q, err
	}
	if q.Desc, err = parseOrder(get("order")); err != nil {
		return q, err
	}
	if q.Limit, err = parseLimit(get("limit")); err != nil {
		return q, err
	}
	after, err := parseCursor(get("cursor"), cursorOmissions)
	if err != nil {
		return q, err
	}
	if after != "" {
		if q.After, err = strconv.ParseUint(after, 10, 64); err != nil || q.After == 0 {
			return q, errors.New("cursor: malformed; pass the 'next' of the previous page")
		}
	}
	return q, nil
}

// parseLimit parses a page size: empty is defaultLimit, else 1 to maxLimit.
func parseLimit(s string) (int, error) {
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, fmt.Errorf("limit %q: want a whole number from 1 to %d", s, maxLimit)
	}
	return n, nil
}

// parseSince parses an RFC 3339 time (fractional seconds optional); empty is
// the zero time (no bound).
func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: want an RFC 3339 time such as 2025-01-02T15:04:05.123456789Z", s)
	}
	return t, nil
}

// parseKind parses an omission kind filter; empty means every kind.
func parseKind(s string) (string, error) {
	if s == "" || slices.Contains(OmissionKinds, s) {
		return s, nil
	}
	return "", fmt.Errorf("kind %q: want one of %s", s, strings.Join(OmissionKinds, ", "))
}

// parseOrder parses a list order: "asc" (the default, oldest first) or
// "desc".
func parseOrder(s string) (desc bool, err error) {
	switch s {
	case "", "asc":
		return false, nil
	case "desc":
		return true, nil
	}
	return false, fmt.Errorf("order %q: want asc or desc", s)
}

// Lists a cursor may belong to.
const (
	cursorServices  = "s"
	cursorEdges     = "e"
	cursorOmissions = "o"
	cursorTokens    = "t"
)

// A cursor is opaque to clients: base64url (no padding) of
// "<list>1:<key>", where list names the list it continues and key is the
// sort key of the last item returned.
func encodeCursor(list, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(list + "1:" + key))
}

// parseCursor returns the key of a cursor of list; empty for no cursor.
func parseCursor(s, list string) (string, error) {
	if s == "" {
		return "", nil
	}
	if len(s) > 512 {
		return "", errors.New("cursor: too long; pass the 'next' of the previous page")
	}
	// The decoder skips CR and LF even when strict: without this check a
	// cursor would have more than one spelling.
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || strings.ContainsAny(s, "\r\n") {
		return "", errors.New("cursor: malformed; pass the 'next' of the previous page")
	}
	key, ok := strings.CutPrefix(string(b), list+"1:")
	if !ok || key == "" {
		return "", errors.New("cursor: not a cursor of this list; pass the 'next' of the previous page")
	}
	return key, nil
}

// page returns up to limit items whose key is greater than after (items are
// sorted by key), and the cursor of the next page if more follow.
func page[T any](items []T, key func(T) string, after string, limit int, list string) ([]T, string) {
	i := 0
	if after != "" {
		i, _ = slices.BinarySearchFunc(items, after, func(it T, k string) int { return strings.Compare(key(it), k) })
		if i < len(items) && key(items[i]) == after {
			i++
		}
	}
	items = items[i:]
	if len(items) <= limit {
		return slices.Clip(items), ""
	}
	items = items[:limit]
	return items, encodeCursor(list, key(items[len(items)-1]))
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) error {
	sub := s.events.Subscribe(sseBuffer)
	defer sub.Close()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := write([]byte("retry: 2000\n: connected\n\n")); err != nil {
		return nil // the client is gone; nothing to answer
	}
	// A reconnecting EventSource sends the id of the last omission it saw:
	// replay the ones it missed before going live.
	var replayed uint64
	if last, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && last > 0 {
		q := OmissionQuery{After: last, Limit: maxLimit}
		for {
			evs, more := s.store.Omissions(q)
			for _, ev := range evs {
				b, _ := json.Marshal(ev)
				if err := write(sseFrame("omission", ev.ID, b)); err != nil {
					return nil
				}
				replayed, _ = strconv.ParseUint(ev.ID, 10, 64)
				q.After = replayed
			}
			if !more {
				break
			}
		}
	}
	hb := time.NewTicker(sseHeartbeat)
	defer hb.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case ev, ok := <-sub.C():
			if !ok {
				if sub.Dropped() {
					s.log.Warn("event stream dropped: client too slow", "remote", r.RemoteAddr)
				}
				return nil
			}
			if ev.ID != "" && replayed > 0 {
				if id, _ := strconv.ParseUint(ev.ID, 10, 64); id <= replayed {
					continue
				}
			}
			if err := write(sseFrame(ev.Type, ev.ID, ev.Data)); err != nil {
				return nil
			}
		case <-hb.C:
			if err := write([]byte(": heartbeat\n\n")); err != nil {
				return nil
			}
		}
	}
}

// sseFrame encodes one Server-Sent Event; data is one line of JSON.
func sseFrame(typ, id string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("event: ")
	b.WriteString(typ)
	b.WriteByte('\n')
	if id != "" {
		b.WriteString("id: ")
		b.WriteString(id)
		b.WriteByte('\n')
	}
	b.WriteString("data: ")
	b.Write(data)
	b.WriteString("\n\n")
	return b.Bytes()
}

// ConfigView is what GET /api/v1/config returns. Until mesh configs exist,
// it always says that no policy is set.
type ConfigView struct {
	Version  int    `json:"version"`
	Source   string `json:"source"`
	Config   any    `json:"config"`
	Policy   string `json:"policy"`
	Warning  string `json:"warning"`
	Window   string `json:"window"`
	Rejected any    `json:"rejected"`
}

func (s *Server) handleConfig(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, ConfigView{
		Policy:  "none",
		Warning: noPolicyWarning,
		Window:  s.cfg.Window.String(),
	})
}

func (s *Server) handleFaults(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, list[Fault]{Items: s.reg.faultList()})
}

func (s *Server) handleFault(w http.ResponseWriter, r *http.Request) error {
	kind, err := parseFaultKind(r.PathValue("kind"))
	if err != nil {
		return &httpError{status: http.StatusNotFound, msg: err.Error()}
	}
	for _, f := range s.reg.faultList() {
		if f.Kind == kind {
			return writeJSON(w, http.StatusOK, f)
		}
	}
	return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("fault %s is off", kind)}
}

func (s *Server) handlePutFault(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	f, err := parseFault(r.PathValue("kind"), body)
	if err != nil {
		return badRequest("%v", err)
	}
	s.reg.setFault(f)
	s.log.Info("fault on", "kind", f.Kind, "from", f.From, "to", f.To, "percent", f.Percent, "delay_ms", f.DelayMS)
	return writeJSON(w, http.StatusOK, f)
}

func (s *Server) handleDeleteFault(w http.ResponseWriter, r *http.Request) error {
	kind, err := parseFaultKind(r.PathValue("kind"))
	if err != nil {
		return badRequest("%v", err)
	}
	if s.reg.clearFault(kind) {
		s.log.Info("fault off", "kind", kind)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func parseFaultKind(kind string) (string, error) {
	if slices.Contains(FaultKinds, kind) {
		return kind, nil
	}
	return "", fmt.Errorf("kind %q: want one of %s", kind, strings.Join(FaultKinds, ", "))
}

// faultBody is the JSON body of PUT /api/v1/faults/{kind}; every field is
// optional: from and to default to "*", percent to 100, delay_ms to 1000 for
// kind delay (1 to 60000). Other kinds take no delay: theirs is checked for
// range and then ignored.
type faultBody struct {
	From    *string  `json:"from"`
	To      *string  `json:"to"`
	Percent *float64 `json:"percent"`
	DelayMS *int64   `json:"delay_ms"`
}

// parseFault parses the fault of kind from a PUT body (may be empty).
func parseFault(kind string, body []byte) (Fault, error) {
	kind, err := parseFaultKind(kind)
	if err != nil {
		return Fault{}, err
	}
	var fb faultBody
	if err := decodeStrict(body, &fb); err != nil {
		return Fault{}, err
	}
	f := Fault{Kind: kind, From: "*", To: "*", Percent: 100}
	for _, side := range []struct {
		name string
		v    *string
		dst  *string
	}{{"from", fb.From, &f.From}, {"to", fb.To, &f.To}} {
		if side.v == nil {
			continue
		}
		if *side.v != "*" {
			if err := identity.ValidateServiceName(*side.v); err != nil {
				return Fault{}, fmt.Errorf("%s: %v (or \"*\" for any)", side.name, err)
			}
		}
		*side.dst = *side.v
	}
	if fb.Percent != nil {
		if p := *fb.Percent; !(p >= 0 && p <= 100) {
			return Fault{}, fmt.Errorf("percent %v: want a number from 0 to 100", p)
		}
		f.Percent = *fb.Percent
	}
	switch {
	case kind == "delay" && fb.DelayMS == nil:
		f.DelayMS = defaultFaultDelay
	case kind == "delay":
		if d := *fb.DelayMS; d < 1 || d > maxFaultDelay {
			return Fault{}, fmt.Errorf("delay_ms %d: want 1 to %d for kind delay", d, maxFaultDelay)
		}
		f.DelayMS = *fb.DelayMS
	case fb.DelayMS != nil && (*fb.DelayMS < 0 || *fb.DelayMS > maxFaultDelay):
		return Fault{}, fmt.Errorf("delay_ms %d: want 0 to %d", *fb.DelayMS, maxFaultDelay)
	}
	// Other kinds ignore delay_ms: a client may send one body for every kind.
	return f, nil
}

// decodeStrict decodes one JSON object into v, refusing unknown fields and
// trailing data. An empty (or all white space) body leaves v as is.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("body: unexpected data after the JSON object")
	}
	return nil
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body: larger than %d bytes", maxBodyBytes)}
		}
		return nil, badRequest("body: %v", err)
	}
	return b, nil
}

// tokenRequest is the JSON body of POST /api/v1/tokens.
type tokenRequest struct {
	TTL string `json:"ttl"`
}

// parseTokenTTL parses the body of POST /api/v1/tokens: {"ttl": "1h"}, a
// Go duration from minTokenTTL to maxTokenTTL; an empty body or ttl is
// defaultTokenTTL.
func parseTokenTTL(body []byte) (time.Duration, error) {
	var req tokenRequest
	if err := decodeStrict(body, &req); err != nil {
		return 0, err
	}
	if req.TTL == "" {
		return defaultTokenTTL, nil
	}
	d, err := time.ParseDuration(req.TTL)
	if err != nil || d < minTokenTTL || d > maxTokenTTL {
		return 0, fmt.Errorf("ttl %q: want a duration such as 30m or 24h, from %v to %v", req.TTL, minTokenTTL, maxTokenTTL)
	}
	return d, nil
}

// CreatedToken is the answer of POST /api/v1/tokens; Token carries the secret
// and is shown only here.
type CreatedToken struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	ttl, err := parseTokenTTL(body)
	if err != nil {
		return badRequest("%v", err)
	}
	b := s.bound.Load()
	if b == nil {
		return &httpError{status: http.StatusServiceUnavailable, msg: "not serving yet"}
	}
	tok, info, err := s.tokens.create(b.token, s.ca.Fingerprint(), ttl, time.Now())
	if err != nil {
		return err
	}
	s.log.Info("join token created", "token_id", tok.ID, "expires_at", info.ExpiresAt)
	return writeJSON(w, http.StatusCreated, CreatedToken{ID: tok.ID, Token: tok.String(), ExpiresAt: *info.ExpiresAt})
}

func (s *Server) handleTokens(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		return badRequest("%v", err)
	}
	after, err := parseCursor(q.Get("cursor"), cursorTokens)
	if err != nil {
		return badRequest("%v", err)
	}
	all := s.tokens.list() // creation order
	i := 0
	if after != "" {
		i = slices.IndexFunc(all, func(t TokenInfo) bool { return t.ID == after })
		if i < 0 {
			return badRequest("cursor: token %q no longer exists", after)
		}
		i++
	}
	out := list[TokenInfo]{Items: all[i:]}
	if len(out.Items) > limit {
		out.Items = out.Items[:limit]
		out.Next = encodeCursor(cursorTokens, out.Items[limit-1].ID)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRevokeToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	switch err := s.tokens.revoke(id, time.Now()); {
	case errors.Is(err, ErrTokenNotFound):
		return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("no join token %q", id)}
	case err != nil:
		return err
	}
	s.log.Info("join token revoked", "token_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
