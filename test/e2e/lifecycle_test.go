package e2e

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"
)

func TestSVIDRenewalKeepsConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several seconds of certificate life: skipped with -short")
	}
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	m := newMesh(t, "--svid-ttl", "3s")
	callee := m.sidecar("orders", sidecarOpts{app: app, inbound: true})
	caller := m.sidecar("frontend", sidecarOpts{outbound: true})
	m.waitEndpoints("orders", 1)
	c := outboundClient()
	// Requests flow across at least two renewals of both sidecars (at two
	// thirds of 3 s) on the connection dialed first.
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		resp, body, err := get(c, caller.outbound, "orders", "/")
		if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d during renewals: %v %v %q", n, err, resp, body)
		}
		n++
		time.Sleep(10 * time.Millisecond)
	}
	for _, s := range []*sidecar{caller, callee} {
		if got := metric(t, s.admin, "tally_proxy_svid_renewals_total", nil); got < 2 {
			t.Errorf("%s renewed its SVID %v times in 5 s of a 3 s life; want at least 2", s.service, got)
		}
	}
	if got := metric(t, caller.admin, "tally_proxy_peer_dials_total", map[string]string{"result": "ok"}); got != 1 {
		t.Errorf("caller dialed the callee %v times; want 1 (renewal must not drop the connection)", got)
	}
	l := map[string]string{"source": "frontend", "destination": "orders"}
	if got := metric(t, caller.admin, "tally_messages_confirmed_total", l); got != float64(n) {
		t.Errorf("confirmed %v of %d", got, n)
	}
	if ev := m.omissions(""); len(ev) != 0 {
		t.Errorf("omissions: %+v", ev)
	}
}

func TestSIGTERMDrainsInFlightMessages(t *testing.T) {
	started := make(chan struct{}, 4)
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		time.Sleep(700 * time.Millisecond)
		w.Write([]byte("slow but whole"))
	}))
	for _, which := range []string{"callee", "caller"} {
		t.Run(which, func(t *testing.T) {
			p := newPair(t, app)
			type result struct {
				resp *http.Response
				body []byte
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, body, err := get(p.client, p.caller.outbound, "orders", "/slow")
				done <- result{resp, body, err}
			}()
			<-started
			target := p.callee
			if which == "caller" {
				target = p.caller
			}
			target.cmd.Process.Signal(syscall.SIGTERM)
			r := <-done
			if r.err != nil || r.resp.StatusCode != 200 || string(r.body) != "slow but whole" {
				t.Fatalf("in-flight request across SIGTERM of the %s: %v %v %q", which, r.err, r.resp, r.body)
			}
			select {
			case <-target.done:
				if target.err != nil {
					t.Fatalf("%s exited with %v after SIGTERM; want 0", which, target.err)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("%s did not exit after SIGTERM", which)
			}
			// Its records reached the control plane before it exited.
			eventually(t, 2*time.Second, "edge confirmed", func() error {
				var edges struct {
					Items []struct {
						Confirmed int64 `json:"confirmed"`
						Received  int64 `json:"received"`
					} `json:"items"`
				}
				if err := getJSON(p.m.url+"/api/v1/edges", &edges); err != nil {
					return err
				}
				if len(edges.Items) != 1 || edges.Items[0].Confirmed != 1 || edges.Items[0].Received != 1 {
					return fmt.Errorf("edges %+v", edges.Items)
				}
				return nil
			})
		})
	}
}
