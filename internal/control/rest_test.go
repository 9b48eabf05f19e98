package control_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/control"
	"github.com/tally-mesh/tally/internal/identity"
)

// seedOmissions reports n omission events frontend -> orders, alternating
// kinds truncated and unconfirmed, detected one second apart from base.
func seedOmissions(t *testing.T, p *plane, n int, base time.Time) {
	t.Helper()
	frontend := p.join(t, "frontend")
	stream, err := frontend.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var recs []*tallyv1.Record
	for i := 1; i <= n; i++ {
		r := callerRecord(tallyv1.RecordKind_RECORD_KIND_OMISSION, i)
		r.OmissionKind = "truncated"
		if i%2 == 0 {
			r.OmissionKind = "unconfirmed"
		}
		r.AtUnixNano = base.Add(time.Duration(i) * time.Second).UnixNano()
		recs = append(recs, callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, i), r)
	}
	report(t, stream, &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(1), Records: recs})
}

// keysOf returns the JSON object keys of each item of a list body.
func itemKeys(t *testing.T, body []byte) [][]string {
	t.Helper()
	var l struct {
		Items []map[string]json.RawMessage `json:"items"`
		Next  *string                      `json:"next"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	if l.Next == nil {
		t.Errorf("list %s has no next field", body)
	}
	var out [][]string
	for _, it := range l.Items {
		var ks []string
		for k := range it {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		out = append(out, ks)
	}
	return out
}

func TestRESTShapes(t *testing.T) {
	p := startPlane(t, "")
	seedOmissions(t, p, 1, time.Now())
	orders := p.join(t, "orders")
	ws, err := orders.mesh.Watch(t.Context(), &tallyv1.WatchRequest{InstanceId: hexID(7), AdvertiseAddr: "127.0.0.1:9001"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}

	sorted := func(ks ...string) []string { slices.Sort(ks); return ks }
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/api/v1/services", sorted("name", "identity", "instances")},
		{"/api/v1/edges", sorted("source", "destination", "sent", "confirmed", "received", "omitted", "in_flight",
			"bytes_sent", "bytes_confirmed", "latency_ms")},
		{"/api/v1/omissions", sorted("id", "kind", "source", "destination", "source_identity", "destination_identity",
			"message_id", "seq", "detected_at", "detail", "reporter")},
	} {
		code, body := p.do(t, "GET", tc.path, "", "")
		if code != 200 {
			t.Fatalf("GET %s = %d %s", tc.path, code, body)
		}
		items := itemKeys(t, body)
		if len(items) != 1 || !reflect.DeepEqual(items[0], tc.want) {
			t.Errorf("GET %s item keys = %v, want %v", tc.path, items, tc.want)
		}
	}

	var services struct {
		Items []struct {
			Instances []map[string]any `json:"instances"`
		} `json:"items"`
	}
	p.getJSON(t, "/api/v1/services", &services)
	inst := services.Items[0].Instances[0]
	if _, err := time.Parse(time.RFC3339Nano, inst["connected_at"].(string)); err != nil || inst["address"] != "127.0.0.1:9001" || inst["instance_id"] != hexID(7) {
		t.Errorf("instance = %v", inst)
	}
	var edges struct {
		Items []struct {
			Latency map[string]float64 `json:"latency_ms"`
		} `json:"items"`
	}
	p.getJSON(t, "/api/v1/edges", &edges)
	if ks := slices.Sorted(mapKeys(edges.Items[0].Latency)); !reflect.DeepEqual(ks, []string{"p50", "p90", "p99"}) {
		t.Errorf("latency_ms keys = %v", ks)
	}
	var om struct {
		Items []map[string]any `json:"items"`
	}
	p.getJSON(t, "/api/v1/omissions", &om)
	if _, ok := om.Items[0]["seq"].(float64); !ok {
		t.Errorf("seq = %#v, want a number", om.Items[0]["seq"])
	}
	if _, ok := om.Items[0]["id"].(string); !ok {
		t.Errorf("id = %#v, want a string", om.Items[0]["id"])
	}

	code, body := p.do(t, "GET", "/api/v1/config", "", "")
	want := `{"version":0,"source":"","config":null,"policy":"none","warning":"no policy set: every mesh identity may call every service","window":"5s","rejected":null}`
	if code != 200 || strings.TrimSpace(string(body)) != want {
		t.Errorf("GET /api/v1/config = %d %s, want %s", code, body, want)
	}

	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/readyz", 200, "ready"},
		{"GET", "/metrics", 200, "tally_ledger_size"},
		{"GET", "/", 200, "<title>Tally</title>"},
		{"GET", "/assets/app.js", 200, "EventSource"},
		{"GET", "/assets/", 404, ""},
		{"GET", "/api/v1/nothing", 404, `"error"`},
		{"POST", "/api/v1/edges", 405, `"error"`},
	} {
		code, body := p.do(t, tc.method, tc.path, "", "")
		if code != tc.code || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s = %d %.80q, want %d containing %q", tc.method, tc.path, code, body, tc.code, tc.body)
		}
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestOmissionsQuery(t *testing.T) {
	p := startPlane(t, "")
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	seedOmissions(t, p, 5, base)

	// Walk the pages with limit=2.
	var ids []string
	path := "/api/v1/omissions?limit=2"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		var l struct {
			Items []control.Event `json:"items"`
			Next  string          `json:"next"`
		}
		p.getJSON(t, path, &l)
		if len(l.Items) > 2 {
			t.Fatalf("page of %d items with limit=2", len(l.Items))
		}
		for _, e := range l.Items {
			ids = append(ids, e.ID)
		}
		if l.Next == "" {
			break
		}
		path = "/api/v1/omissions?limit=2&cursor=" + url.QueryEscape(l.Next)
	}
	if got, want := strings.Join(ids, ","), "1,2,3,4,5"; got != want {
		t.Errorf("paged ids = %s, want %s", got, want)
	}

	for _, tc := range []struct {
		query string
		want  string
	}{
		{"kind=unconfirmed", "2,4"},
		{"kind=truncated&limit=1", "1"},
		{"since=" + url.QueryEscape(base.Add(4*time.Second).Format(time.RFC3339Nano)), "4,5"},
		{"since=" + url.QueryEscape(base.Add(3500*time.Millisecond).Format(time.RFC3339Nano)) + "&kind=truncated", "5"},
		{"since=2030-01-01T00:00:00Z", ""},
		{"order=desc&limit=3", "5,4,3"},
	} {
		var l struct {
			Items []control.Event `json:"items"`
		}
		p.getJSON(t, "/api/v1/omissions?"+tc.query, &l)
		var got []string
		for _, e := range l.Items {
			got = append(got, e.ID)
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("?%s: ids %v, want %s", tc.query, got, tc.want)
		}
	}

	for _, tc := range []struct{ query, param string }{
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"limit=ten", "limit"},
		{"since=yesterday", "since"},
		{"since=2025-06-01", "since"},
		{"kind=vanished", "kind"},
		{"cursor=%21%21", "cursor"},
		{"order=sideways", "order"},
	} {
		code, body := p.do(t, "GET", "/api/v1/omissions?"+tc.query, "", "")
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(body, &e)
		if code != 400 || !strings.HasPrefix(e.Error, tc.param) {
			t.Errorf("?%s = %d %s, want 400 with an error naming %s", tc.query, code, body, tc.param)
		}
	}
	// A cursor of another list is refused too.
	seedMore := p.join(t, "backend")
	stream, err := seedMore.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sent := callerRecord(tallyv1.RecordKind_RECORD_KIND_SENT, 1)
	sent.Source = "backend"
	report(t, stream, &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(2), Records: []*tallyv1.Record{sent}})
	var edges struct {
		Next string `json:"next"`
	}
	p.getJSON(t, "/api/v1/edges?limit=1", &edges)
	if edges.Next == "" {
		t.Fatal("two edges with limit=1: no next cursor")
	}
	if code, _ := p.do(t, "GET", "/api/v1/omissions?cursor="+url.QueryEscape(edges.Next), "", ""); code != 400 {
		t.Errorf("an edges cursor on omissions: %d, want 400", code)
	}
}

func TestListPagination(t *testing.T) {
	p := startPlane(t, "")
	var names []string
	for _, svc := range []string{"alpha", "bravo", "charlie"} {
		sc := p.join(t, svc)
		ws, err := sc.mesh.Watch(t.Context(), &tallyv1.WatchRequest{InstanceId: hexID(len(names) + 1)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ws.Recv(); err != nil {
			t.Fatal(err)
		}
		names = append(names, svc)
	}
	var got []string
	path := "/api/v1/services?limit=2"
	for {
		var l struct {
			Items []control.ServiceInfo `json:"items"`
			Next  string                `json:"next"`
		}
		p.getJSON(t, path, &l)
		for _, s := range l.Items {
			got = append(got, s.Name)
		}
		if l.Next == "" {
			break
		}
		path = "/api/v1/services?limit=2&cursor=" + url.QueryEscape(l.Next)
	}
	if !slices.Equal(got, names) {
		t.Errorf("paged services = %v, want %v", got, names)
	}
}

func TestEventStream(t *testing.T) {
	p := startPlane(t, "")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.url+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	// Wait for the stream's greeting, so the subscription exists.
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": connected\n" {
			break
		}
	}
	seedOmissions(t, p, 1, time.Now())

	seen := map[string]string{} // event type -> data
	var typ, id string
	for seen["omission"] == "" || seen["edge"] == "" {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading events (seen %v): %v", seen, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			typ = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			seen[typ] = strings.TrimPrefix(line, "data: ")
		}
	}
	var ev control.Event
	if err := json.Unmarshal([]byte(seen["omission"]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != "truncated" || ev.Source != "frontend" || ev.ID != id {
		t.Errorf("omission event = %+v (id line %q)", ev, id)
	}
	var edge control.Edge
	if err := json.Unmarshal([]byte(seen["edge"]), &edge); err != nil || edge.Source != "frontend" || edge.Sent != 1 {
		t.Errorf("edge event = %s, %v", seen["edge"], err)
	}

	// A reconnecting client gets what it missed after Last-Event-ID.
	seedMore := p.join(t, "frontend")
	stream, err := seedMore.mesh.Report(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	lost := callerRecord(tallyv1.RecordKind_RECORD_KIND_OMISSION, 9)
	lost.OmissionKind = "digest_mismatch"
	report(t, stream, &tallyv1.RecordBatch{BatchSeq: 1, InstanceId: hexID(9), Records: []*tallyv1.Record{lost}})
	req, _ = http.NewRequestWithContext(ctx, "GET", p.url+"/api/v1/events", nil)
	req.Header.Set("Last-Event-ID", id)
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	r2 := bufio.NewReader(resp2.Body)
	for {
		line, err := r2.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			if !strings.Contains(line, "digest_mismatch") {
				t.Errorf("replayed %s, want the digest_mismatch event", line)
			}
			break
		}
	}
}

func TestFaults(t *testing.T) {
	p := startPlane(t, "")
	orders := p.join(t, "orders")
	ws, err := orders.mesh.Watch(t.Context(), &tallyv1.WatchRequest{InstanceId: hexID(1), AdvertiseAddr: "127.0.0.1:9001"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	body := `{"from":"*","to":"orders","percent":25,"delay_ms":0}`
	if code, b := p.do(t, "PUT", "/api/v1/faults/truncate", "", body); code != 401 || !strings.Contains(string(b), `"error"`) {
		t.Errorf("PUT without token = %d %s, want 401", code, b)
	}
	if code, _ := p.do(t, "PUT", "/api/v1/faults/truncate", "not-the-token", body); code != 401 {
		t.Errorf("PUT with a wrong token = %d, want 401", code)
	}
	if code, _ := p.do(t, "DELETE", "/api/v1/faults/truncate", "", ""); code != 401 {
		t.Errorf("DELETE without token = %d, want 401", code)
	}
	if code, b := p.do(t, "PUT", "/api/v1/faults/explode", p.admin, body); code != 400 {
		t.Errorf("PUT unknown kind = %d %s, want 400", code, b)
	}
	if code, b := p.do(t, "PUT", "/api/v1/faults/truncate", p.admin, `{"percent":300}`); code != 400 || !strings.Contains(string(b), "percent") {
		t.Errorf("PUT percent 300 = %d %s, want 400 naming percent", code, b)
	}
	code, b := p.do(t, "PUT", "/api/v1/faults/truncate", p.admin, body)
	if code != 200 {
		t.Fatalf("PUT = %d %s", code, b)
	}
	snap := nextSnapshot(t, ws, "the truncate fault", func(s *tallyv1.Snapshot) bool { return len(s.GetFaults()) == 1 })
	f := snap.GetFaults()[0]
	if f.GetKind() != "truncate" || f.GetFrom() != "*" || f.GetTo() != "orders" || f.GetPercent() != 25 {
		t.Errorf("fault in snapshot = %v", f)
	}
	var faults struct {
		Items []control.Fault `json:"items"`
	}
	p.getJSON(t, "/api/v1/faults", &faults)
	if want := []control.Fault{{Kind: "truncate", From: "*", To: "orders", Percent: 25}}; !reflect.DeepEqual(faults.Items, want) {
		t.Errorf("GET faults = %+v, want %+v", faults.Items, want)
	}
	if code, b := p.do(t, "DELETE", "/api/v1/faults/truncate", p.admin, ""); code != 204 {
		t.Fatalf("DELETE = %d %s", code, b)
	}
	nextSnapshot(t, ws, "no faults", func(s *tallyv1.Snapshot) bool { return len(s.GetFaults()) == 0 })
	if code, _ := p.do(t, "GET", "/api/v1/faults/truncate", "", ""); code != 404 {
		t.Errorf("GET a fault that is off = %d, want 404", code)
	}
}

func TestTokensAPI(t *testing.T) {
	p := startPlane(t, "")
	if code, _ := p.do(t, "POST", "/api/v1/tokens", "", `{"ttl":"1h"}`); code != 401 {
		t.Errorf("POST without admin token = %d, want 401", code)
	}
	if code, _ := p.do(t, "GET", "/api/v1/tokens", "", ""); code != 401 {
		t.Errorf("GET without admin token = %d, want 401", code)
	}
	if code, b := p.do(t, "POST", "/api/v1/tokens", p.admin, `{"ttl":"forever"}`); code != 400 || !strings.Contains(string(b), "ttl") {
		t.Errorf("POST bad ttl = %d %s, want 400 naming ttl", code, b)
	}
	code, b := p.do(t, "POST", "/api/v1/tokens", p.admin, `{"ttl":"2h"}`)
	if code != 201 {
		t.Fatalf("POST = %d %s", code, b)
	}
	var created map[string]any
	json.Unmarshal(b, &created)
	if ks := slices.Sorted(mapKeys(created)); !reflect.DeepEqual(ks, []string{"expires_at", "id", "token"}) {
		t.Errorf("created keys = %v", ks)
	}
	exp, err := time.Parse(time.RFC3339Nano, created["expires_at"].(string))
	if err != nil || exp.Before(time.Now().Add(119*time.Minute)) || exp.After(time.Now().Add(121*time.Minute)) {
		t.Errorf("expires_at = %v, %v; want in about 2h", created["expires_at"], err)
	}

	// The new token joins.
	p2 := *p
	tok, err := identity.ParseToken(created["token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	p2.token = tok
	p2.join(t, "payments")

	code, b = p.do(t, "GET", "/api/v1/tokens", p.admin, "")
	if code != 200 {
		t.Fatalf("GET tokens = %d %s", code, b)
	}
	keys := itemKeys(t, b)
	if len(keys) != 2 {
		t.Fatalf("tokens = %s, want the default and the new one", b)
	}
	for _, k := range keys {
		for _, want := range []string{"id", "created_at", "expires_at", "revoked"} {
			if !slices.Contains(k, want) {
				t.Errorf("token item keys %v lack %q", k, want)
			}
		}
	}
	if code, _ := p.do(t, "DELETE", "/api/v1/tokens/ffffffff", p.admin, ""); code != 404 {
		t.Errorf("DELETE unknown token = %d, want 404", code)
	}
	if code, _ := p.do(t, "DELETE", "/api/v1/tokens/"+tok.ID, p.admin, ""); code != 204 {
		t.Errorf("DELETE token = %d, want 204", code)
	}

	// Revocation persists across a restart.
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	q := startPlane(t, p.dir)
	var l struct {
		Items []control.TokenInfo `json:"items"`
	}
	code, b = q.do(t, "GET", "/api/v1/tokens", q.admin, "")
	json.Unmarshal(b, &l)
	i := slices.IndexFunc(l.Items, func(ti control.TokenInfo) bool { return ti.ID == tok.ID })
	if code != 200 || i < 0 || !l.Items[i].Revoked {
		t.Errorf("after restart: %d %s, want token %s revoked", code, b, tok.ID)
	}
	j := slices.IndexFunc(l.Items, func(ti control.TokenInfo) bool { return ti.Default })
	if j < 0 || l.Items[j].ExpiresAt != nil || l.Items[j].ID != q.token.ID {
		t.Errorf("default token entry = %+v, want never expiring, id %s", l.Items, q.token.ID)
	}
}
