package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcApp is a real gRPC server (grpc-go's interop TestService) whose
// connections the test can cut.
type grpcApp struct {
	testpb.UnimplementedTestServiceServer
	mu    sync.Mutex
	conns []net.Conn
	// cutAfter, when set, makes StreamingOutputCall stop after sending
	// that many messages and, once cut is closed, cut every connection
	// before any status.
	cutAfter int
	cut      chan struct{}
}

type trackingListener struct {
	net.Listener
	app *grpcApp
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.app.mu.Lock()
		l.app.conns = append(l.app.conns, c)
		l.app.mu.Unlock()
	}
	return c, err
}

func (a *grpcApp) cutAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
}

func serveGRPCApp(t *testing.T, app *grpcApp) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, app)
	go s.Serve(trackingListener{ln, app})
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func (a *grpcApp) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	grpc.SetHeader(ctx, metadata.Pairs("x-echo", first(md.Get("x-client"))))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t1"))
	if in.ResponseStatus != nil {
		return nil, status.Error(codes.Code(in.ResponseStatus.Code), in.ResponseStatus.Message)
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, in.ResponseSize)}}, nil
}

func (a *grpcApp) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	for i, p := range in.ResponseParameters {
		if a.cutAfter > 0 && i == a.cutAfter {
			<-a.cut
			a.cutAll()
			<-s.Context().Done()
			return s.Context().Err()
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.Size)}}); err != nil {
			return err
		}
	}
	s.SetTrailer(metadata.Pairs("x-count", "done"))
	return nil
}

func (a *grpcApp) StreamingInputCall(s grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	total := 0
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.Payload.GetBody())
	}
}

func (a *grpcApp) FullDuplexCall(s grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		size := int32(0)
		if len(m.ResponseParameters) > 0 {
			size = m.ResponseParameters[0].Size
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, size)}}); err != nil {
			return err
		}
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// grpcClient dials the caller sidecar's outbound listener with h2c; the
// authority names the service.
func grpcClient(t *testing.T, outbound, service string) testpb.TestServiceClient {
	cc, err := grpc.NewClient(outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(service))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

func TestGRPCThroughSidecars(t *testing.T) {
	app := &grpcApp{}
	p := newPair(t, serveGRPCApp(t, app))
	c := grpcClient(t, p.caller.outbound, "orders")
	ctx := ctxT(t, 20*time.Second)

	t.Run("unary with metadata and trailers", func(t *testing.T) {
		var hdr, trl metadata.MD
		resp, err := c.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-client", "c1"),
			&testpb.SimpleRequest{ResponseSize: 2048}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Payload.Body) != 2048 {
			t.Errorf("payload: got %d bytes, want 2048", len(resp.Payload.Body))
		}
		if got := first(hdr.Get("x-echo")); got != "c1" {
			t.Errorf("header metadata x-echo: got %q, want c1", got)
		}
		if got := first(trl.Get("x-trailer")); got != "t1" {
			t.Errorf("trailer metadata: got %q, want t1", got)
		}
		if got := first(hdr.Get("tally-message-id")); len(got) != 32 {
			t.Errorf("tally-message-id: got %q", got)
		}
	})
	t.Run("unary error status preserved", func(t *testing.T) {
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such order"}})
		if s, _ := status.FromError(err); s.Code() != codes.NotFound || s.Message() != "no such order" {
			t.Errorf("status: got %v, want NotFound %q", err, "no such order")
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		s, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: sizes(5, 1000)})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		if n != 5 || first(s.Trailer().Get("x-count")) != "done" {
			t.Errorf("got %d messages, trailer %v; want 5 and x-count=done", n, s.Trailer())
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		s, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 300)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil || resp.AggregatedPayloadSize != 1200 {
			t.Fatalf("got %v %v, want 1200", resp, err)
		}
	})
	t.Run("bidirectional ping-pong", func(t *testing.T) {
		s, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			// Each answer must arrive before the next question: messages
			// flow, nothing is held back.
			if err := s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: sizes(1, int32(10+i))}); err != nil {
				t.Fatal(err)
			}
			m, err := s.Recv()
			if err != nil || len(m.Payload.Body) != 10+i {
				t.Fatalf("round %d: %v %v", i, m, err)
			}
		}
		s.CloseSend()
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("end: got %v, want EOF", err)
		}
	})
	l := p.edgeLabels()
	eventually(t, 2*time.Second, "confirmations", func() error {
		if sent, conf := metric(t, p.caller.admin, "tally_messages_sent_total", l), metric(t, p.caller.admin, "tally_messages_confirmed_total", l); sent != 5 || conf != 5 {
			return fmt.Errorf("sent %v confirmed %v, want 5 and 5", sent, conf)
		}
		return nil
	})
	if ev := p.m.omissions(""); len(ev) != 0 {
		t.Errorf("omissions after clean calls: %+v", ev)
	}
}

func sizes(n int, size int32) []*testpb.ResponseParameters {
	out := make([]*testpb.ResponseParameters, n)
	for i := range out {
		out[i] = &testpb.ResponseParameters{Size: size}
	}
	return out
}

func TestGRPCServerStreamCutBeforeStatus(t *testing.T) {
	app := &grpcApp{cutAfter: 3, cut: make(chan struct{})}
	p := newPair(t, serveGRPCApp(t, app))
	c := grpcClient(t, p.caller.outbound, "orders")
	s, err := c.StreamingOutputCall(ctxT(t, 10*time.Second), &testpb.StreamingOutputCallRequest{ResponseParameters: sizes(10, 100)})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		_, err = s.Recv()
		if err != nil {
			break
		}
		got++
		if got == app.cutAfter {
			close(app.cut) // the client has what was sent: now cut
		}
	}
	code := status.Code(err)
	if err == io.EOF || (code != codes.DataLoss && code != codes.Unavailable) {
		t.Fatalf("after %d messages the stream ended with %v (code %v); want DATA_LOSS or UNAVAILABLE, never OK", got, err, code)
	}
	p.m.waitOmission("truncated", func(ev omissionEvent) bool { return ev.Destination == "orders" })
}
