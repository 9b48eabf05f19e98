package mux

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

type ctxKey struct{}

// The request context behaves as a context.Context built by the context
// package would, for its own functions and for contexts derived from it.
func TestRequestContextSemantics(t *testing.T) {
	conn, endConn := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	defer endConn()
	c := newRequestContext(context.WithoutCancel(conn))
	if c.Value(ctxKey{}) != "v" {
		t.Fatalf("Value = %v, want the connection's value", c.Value(ctxKey{}))
	}
	if c.Err() != nil || context.Cause(c) != nil {
		t.Fatalf("before cancel: Err %v, Cause %v", c.Err(), context.Cause(c))
	}
	early := c.Done()
	ran := make(chan struct{})
	stopRan := c.AfterFunc(func() { close(ran) })
	stopped := c.AfterFunc(func() { t.Error("a stopped AfterFunc ran") })
	if !stopped() || stopped() {
		t.Fatal("stop: want true once, then false")
	}
	child, endChild := context.WithCancel(c)
	defer endChild()
	viaPackage := make(chan struct{})
	context.AfterFunc(c, func() { close(viaPackage) })

	endConn() // the connection's context does not reach c by itself
	select {
	case <-early:
		t.Fatal("canceled by the connection's values context")
	case <-time.After(20 * time.Millisecond):
	}

	c.cancel()
	c.cancel()
	for name, ch := range map[string]<-chan struct{}{
		"Done made before cancel": early, "Done made after cancel": c.Done(), "AfterFunc": ran,
		"context.WithCancel child": child.Done(), "context.AfterFunc": viaPackage,
	} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not done after cancel", name)
		}
	}
	if stopRan() {
		t.Error("stop after the function ran reported true")
	}
	if c.Err() != context.Canceled || context.Cause(c) != context.Canceled || context.Cause(child) != context.Canceled {
		t.Fatalf("after cancel: Err %v, Cause %v, child's Cause %v", c.Err(), context.Cause(c), context.Cause(child))
	}
	late := make(chan struct{})
	c.AfterFunc(func() { close(late) })
	select {
	case <-late:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc on a canceled context did not run")
	}
}

// A handler's context ends when the peer resets the stream, when the
// connection is lost, when the connection's context ends, and when the
// handler returns.
func TestHandlerContextEnds(t *testing.T) {
	type seen struct {
		ctx context.Context
		err error // the context's error when it ended, or a timeout
	}
	for _, tc := range []string{"reset", "connection lost", "connection context", "handler returned"} {
		t.Run(tc, func(t *testing.T) {
			started := make(chan context.Context, 1)
			ended := make(chan seen, 1)
			connCtx, endConnCtx := context.WithCancel(context.Background())
			defer endConnCtx()
			cc, _ := pair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx := r.Context()
				if r.URL.Path == "/quick" {
					started <- ctx
					return
				}
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
				started <- ctx
				select {
				case <-ctx.Done():
					ended <- seen{ctx, ctx.Err()}
				case <-time.After(5 * time.Second):
					ended <- seen{ctx, errors.New("context not canceled in 5 s")}
				}
			}), func(s *Server) {
				s.ConnContext = func(context.Context, net.Conn) context.Context { return connCtx }
			})

			if tc == "handler returned" {
				resp, err := cc.RoundTrip(request(t, "GET", "/quick", nil))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				ctx := <-started
				deadline := time.Now().Add(5 * time.Second)
				for ctx.Err() == nil && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if ctx.Err() != context.Canceled {
					t.Fatalf("after the handler returned: Err %v", ctx.Err())
				}
				return
			}

			reqCtx, endReq := context.WithCancel(t.Context())
			defer endReq()
			req := request(t, "GET", "/wait", nil).WithContext(reqCtx)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			<-started
			switch tc {
			case "reset":
				endReq()
			case "connection lost":
				cc.Close()
			case "connection context":
				endConnCtx()
			}
			s := <-ended
			if s.err != context.Canceled {
				t.Fatalf("handler's context: %v", s.err)
			}
			if tc == "connection context" {
				// The connection serves on, and later requests start canceled.
				resp, err := cc.RoundTrip(request(t, "GET", "/quick", nil))
				if err != nil {
					t.Fatalf("after the connection's context ended: %v", err)
				}
				io.Copy(io.Discard, resp.Body)
				if ctx := <-started; ctx.Err() != context.Canceled {
					t.Fatalf("a request after the connection's context ended: Err %v", ctx.Err())
				}
			}
		})
	}
}
