// Package e2e runs real tally processes on loopback against real, sometimes
// misbehaving, peers, and checks both what the caller saw and what the
// control plane recorded.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tally-mesh/tally/internal/testutil"

	// Not called: linked in so that the test binary, and with it the
	// result `go test` caches, changes whenever the code of the tally
	// binary that TestMain builds does. Without it a cached e2e pass
	// would outlive a change to the sidecar.
	_ "github.com/tally-mesh/tally/internal/cli"
)

var tallyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tally-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tallyBin = filepath.Join(dir, "tally")
	args := []string{"build", "-o", tallyBin}
	if os.Getenv("TALLY_E2E_RACE") != "" {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../../cmd/tally")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building tally:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testutil.Buffer // the process's output, for the test log
	done chan struct{}
	err  error
}

// start runs tally with args; the process is stopped (SIGTERM, then SIGKILL
// after 10 s) when the test ends, and its output logged if the test failed.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &testutil.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(tallyBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector found a data race", name)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("--- output of %s (%v):\n%s", name, args, p.out.String())
		}
	})
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// handedOut holds the addresses freeAddr returned: a port it closed may be
// the kernel's next pick, and two processes told the same one collide.
var handedOut sync.Map

// freeAddr returns a loopback address with a port that was free just now
// and that it has not returned before in this test binary.
func freeAddr(t *testing.T) string {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if _, seen := handedOut.LoadOrStore(addr, true); !seen {
			return addr
		}
	}
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type mesh struct {
	t        *testing.T
	dir      string
	url      string // control plane REST base
	token    string // join token file
	control  *proc
	grpcAddr string
	httpAddr string
}

// newMesh starts a control plane in a fresh data directory.
func newMesh(t *testing.T, extra ...string) *mesh {
	t.Helper()
	m := &mesh{t: t, dir: filepath.Join(t.TempDir(), "ctl"), grpcAddr: freeAddr(t), httpAddr: freeAddr(t)}
	m.token = filepath.Join(m.dir, "join-token")
	m.url = "http://" + m.httpAddr
	m.startControl(extra...)
	return m
}

func (m *mesh) startControl(extra ...string) {
	m.t.Helper()
	args := append([]string{"control", "--data", m.dir, "--grpc-addr", m.grpcAddr, "--http-addr", m.httpAddr}, extra...)
	m.control = start(m.t, "control", args...)
	waitReady(m.t, m.url+"/readyz", m.control)
}

func waitReady(t *testing.T, url string, p *proc) {
	t.Helper()
	eventually(t, 20*time.Second, "ready at "+url, func() error {
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out.String())
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

type sidecarOpts struct {
	app       string            // the workload's app address; with inbound
	inbound   bool              // callable
	advertise string            // override the advertised address
	outbound  bool              // plain HTTP listener for the app
	upstreams map[string]string // service -> local address (filled when empty value)
	extra     []string
}

type sidecar struct {
	*proc
	service  string
	inbound  string
	outbound string
	admin    string
}

// sidecar starts `tally proxy` for service and waits until it is ready.
func (m *mesh) sidecar(service string, o sidecarOpts) *sidecar {
	m.t.Helper()
	s := &sidecar{service: service, admin: freeAddr(m.t)}
	args := []string{"proxy", "--join-token-file", m.token, "--service", service, "--admin-addr", s.admin}
	if o.inbound {
		s.inbound = freeAddr(m.t)
		args = append(args, "--app", o.app, "--inbound", s.inbound)
		if o.advertise != "" {
			args = append(args, "--advertise", o.advertise)
		}
	}
	if o.outbound {
		s.outbound = freeAddr(m.t)
		args = append(args, "--outbound", s.outbound)
	}
	for name, addr := range o.upstreams {
		args = append(args, "--upstream", name+"="+addr)
	}
	args = append(args, o.extra...)
	s.proc = start(m.t, "sidecar "+service, args...)
	waitReady(m.t, "http://"+s.admin+"/readyz", s.proc)
	return s
}

// waitEndpoints waits until the control plane lists n endpoints of service
// and every sidecar has had time to see them (the snapshot is pushed).
func (m *mesh) waitEndpoints(service string, n int) {
	m.t.Helper()
	eventually(m.t, 10*time.Second, "endpoints of "+service, func() error {
		var body struct {
			Items []struct {
				Name      string `json:"name"`
				Instances []struct {
					Address string `json:"address"`
				} `json:"instances"`
			} `json:"items"`
		}
		if err := getJSON(m.url+"/api/v1/services", &body); err != nil {
			return err
		}
		for _, s := range body.Items {
			if s.Name == service {
				got := 0
				for _, in := range s.Instances {
					if in.Address != "" {
						got++
					}
				}
				if got >= n {
					return nil
				}
				return fmt.Errorf("%d endpoints", got)
			}
		}
		return fmt.Errorf("no service %s", service)
	})
	time.Sleep(200 * time.Millisecond) // snapshot push is coalesced at 50 ms
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

type omissionEvent struct {
	ID          string `json:"id"`
	Kind        string `json:"kind"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	MessageID   string `json:"message_id"`
	Seq         uint64 `json:"seq"`
	DetectedAt  string `json:"detected_at"`
	Detail      string `json:"detail"`
}

func (m *mesh) omissions(kind string) []omissionEvent {
	m.t.Helper()
	var all []omissionEvent
	cursor := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if kind != "" {
			q.Set("kind", kind)
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Items []omissionEvent `json:"items"`
			Next  string          `json:"next"`
		}
		if err := getJSON(m.url+"/api/v1/omissions?"+q.Encode(), &page); err != nil {
			m.t.Fatalf("listing omissions: %v", err)
		}
		all = append(all, page.Items...)
		if page.Next == "" {
			return all
		}
		cursor = page.Next
	}
}

// waitOmission waits up to 2 s (the bound) for an omission event of
// kind for which match holds.
func (m *mesh) waitOmission(kind string, match func(omissionEvent) bool) omissionEvent {
	m.t.Helper()
	return m.waitOmissionWithin(kind, 2*time.Second, match)
}

func (m *mesh) waitOmissionWithin(kind string, within time.Duration, match func(omissionEvent) bool) omissionEvent {
	m.t.Helper()
	var found omissionEvent
	eventually(m.t, within, "omission event "+kind, func() error {
		for _, ev := range m.omissions(kind) {
			if match == nil || match(ev) {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("none yet (all events: %+v)", m.omissions(""))
	})
	return found
}

// metric reads one sample from a Prometheus endpoint; labels must match.
func metric(t *testing.T, addr, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing metrics of %s: %v", addr, err)
	}
	fam := fams[name]
	if fam == nil {
		return 0
	}
	total := 0.0
next:
	for _, m := range fam.Metric {
		for k, v := range labels {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		}
	}
	return total
}

// client is an HTTP client for a sidecar's outbound listener.
func outboundClient() *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
}

// get sends GET http://<outbound>/path with Host: service.
func get(c *http.Client, outbound, service, path string) (*http.Response, []byte, error) {
	req, _ := http.NewRequest("GET", "http://"+outbound+path, nil)
	req.Host = service
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// serveApp runs an HTTP/1.1 app on loopback until the test ends.
func serveApp(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
