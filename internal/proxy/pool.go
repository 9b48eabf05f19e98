package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/mux"
	"github.com/tally-mesh/tally/internal/receipt"
)

// peerConn is one mTLS HTTP/2 connection to another sidecar.
type peerConn struct {
	cc   *mux.ClientConn
	addr string
	peer spiffeid.ID // who answered the handshake
	key  []byte      // receipt key exported from this TLS session
}

// pool keeps one multiplexed connection per peer address. It is safe for
// concurrent use.
type pool struct {
	agent *agent

	mu      sync.Mutex // guards following
	conns   map[string]*peerConn
	dialing map[string]*dialCall
}

type dialCall struct {
	done chan struct{}
	pc   *peerConn
	err  error
}

func newPool(a *agent) *pool {
	return &pool{agent: a, conns: map[string]*peerConn{}, dialing: map[string]*dialCall{}}
}

// dialTLS connects to a peer sidecar: TCP, then TLS 1.3 with the SVID.
func (p *pool) dialTLS(ctx context.Context, addr string) (*tls.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := identity.MeshClientTLS(p.agent.source, p.agent.td)
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("mTLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// get returns a usable connection to addr, dialing one if needed.
// Concurrent callers share one dial.
func (p *pool) get(ctx context.Context, addr string) (*peerConn, error) {
	p.mu.Lock()
	if pc := p.conns[addr]; pc != nil {
		if pc.cc.Err() == nil {
			p.mu.Unlock()
			return pc, nil
		}
		delete(p.conns, addr)
	}
	call := p.dialing[addr]
	if call == nil {
		call = &dialCall{done: make(chan struct{})}
		p.dialing[addr] = call
		go p.dial(addr, call)
	}
	p.mu.Unlock()
	select {
	case <-call.done:
		return call.pc, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pool) dial(addr string, call *dialCall) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var pc *peerConn
	tc, err := p.dialTLS(ctx, addr)
	if err == nil {
		cs := tc.ConnectionState()
		pc, err = newPeerConn(tc, addr, &cs, p.agent.cfg.MaxHeaderBytes)
		if err != nil {
			tc.Close()
		}
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	p.agent.met.peerDials.WithLabelValues(result).Inc()
	p.mu.Lock()
	delete(p.dialing, addr)
	if err == nil {
		p.conns[addr] = pc
	}
	p.mu.Unlock()
	call.pc, call.err = pc, err
	close(call.done)
}

func newPeerConn(tc *tls.Conn, addr string, cs *tls.ConnectionState, maxHeader int) (*peerConn, error) {
	if cs.NegotiatedProtocol != "h2" {
		return nil, fmt.Errorf("peer %s did not negotiate HTTP/2", addr)
	}
	id, err := identity.PeerID(cs)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	key, err := receipt.Key(cs)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	cc, err := mux.NewClientConn(tc, mux.ClientConfig{MaxHeaderBytes: maxHeader, NeverIndex: perMessageFields})
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return &peerConn{cc: cc, addr: addr, peer: id, key: key}, nil
}

// drop forgets pc if it is still the pooled connection for its address.
func (p *pool) drop(pc *peerConn) {
	p.mu.Lock()
	if p.conns[pc.addr] == pc {
		delete(p.conns, pc.addr)
	}
	p.mu.Unlock()
	pc.cc.Close()
}

// dropIfBroken forgets pc if its connection failed.
func (p *pool) dropIfBroken(pc *peerConn) {
	if pc.cc.Err() != nil {
		p.drop(pc)
	}
}

func (p *pool) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*peerConn{}
	p.mu.Unlock()
	for _, pc := range conns {
		pc.cc.Close()
	}
}

// isPermanent tells a refusal by the control plane from a passing failure.
func isPermanent(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated, codes.FailedPrecondition:
		return true
	}
	return false
}

var errNoEndpoints = errors.New("no endpoints")
