package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/mux"
	"github.com/tally-mesh/tally/internal/receipt"
	"github.com/tally-mesh/tally/internal/wire"
	"github.com/tally-mesh/tally/internal/wire/digest"
)

// mtlsListener completes each inbound TLS handshake itself, so that a
// refused handshake (no mesh certificate, another CA) is counted and
// reported as an omission event instead of vanishing into a server log.
type mtlsListener struct {
	net.Listener
	p     *Proxy
	ctx   context.Context
	conns chan net.Conn
	once  sync.Once
	errc  chan error
}

func (p *Proxy) newMTLSListener(ctx context.Context, ln net.Listener) *mtlsListener {
	l := &mtlsListener{Listener: ln, p: p, ctx: ctx, conns: make(chan net.Conn), errc: make(chan error, 1)}
	go l.acceptLoop()
	return l
}

func (l *mtlsListener) acceptLoop() {
	cfg := identity.MeshServerTLS(l.p.agent.source, l.p.agent.td)
	cfg.NextProtos = []string{"h2"}
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			l.errc <- err
			return
		}
		go l.handshake(tls.Server(raw, cfg))
	}
}

func (l *mtlsListener) handshake(tc *tls.Conn) {
	ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		l.p.refused(tc.RemoteAddr(), err)
		return
	}
	select {
	case l.conns <- tc:
	case <-l.ctx.Done():
		tc.Close()
	}
}

func (l *mtlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errc:
		l.errc <- err
		return nil, err
	}
}

// refused records a handshake the inbound listener refused.
func (p *Proxy) refused(addr net.Addr, err error) {
	reason := "handshake"
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate") || strings.Contains(msg, "no certificate"):
		reason = "no_client_certificate"
	case strings.Contains(msg, "x509") || strings.Contains(msg, "certificate"):
		reason = "untrusted_certificate"
	case errors.Is(err, io.EOF) || strings.Contains(msg, "connection reset"):
		// A peer that hangs up mid-handshake (a port probe): counted only.
		p.met.handshakeFailures.WithLabelValues("aborted").Inc()
		return
	}
	p.met.handshakeFailures.WithLabelValues(reason).Inc()
	p.log.Warn("inbound handshake refused", "peer", addr.String(), "reason", reason, "err", err)
	p.rec.add(&tallyv1.Record{
		Kind: tallyv1.RecordKind_RECORD_KIND_OMISSION, OmissionKind: "unauthorized",
		Destination: p.cfg.Service, DestinationIdentity: p.agent.selfID, Reporter: "callee",
		Detail: fmt.Sprintf("mTLS handshake from %s refused (%s): %v", addr, reason, err),
	})
}

type connInfoKey struct{}

// connInfo is what an inbound connection's handshake established.
type connInfo struct {
	peer    spiffeid.ID
	service string // "" when the peer is not a service identity
	key     []byte
	keyErr  error
}

func (p *Proxy) inboundServer() *mux.Server {
	return &mux.Server{
		Handler:              http.HandlerFunc(p.serveMessage),
		MaxConcurrentStreams: 1000,
		MaxHeaderBytes:       p.cfg.MaxHeaderBytes + 4096,
		NeverIndex:           perMessageFields,
		// A response complete before its header block went out carries
		// its digests and receipt in the header block: the caller reads
		// each field from the trailers, else from the header
		// (docs/PROTOCOL.md). Tally-Omission stays a trailer, so a header
		// Tally-Omission always means "refused before the app answered".
		FoldTrailer: func(k string) bool {
			switch k {
			case wire.HeaderContentDigest, wire.HeaderLength, wire.HeaderRequestDigest, wire.HeaderReceipt:
				return true
			}
			return false
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			tc, ok := c.(*tls.Conn)
			if !ok {
				return ctx
			}
			cs := tc.ConnectionState()
			ci := &connInfo{}
			ci.peer, _ = identity.PeerID(&cs)
			ci.service, _ = identity.ServiceOf(ci.peer)
			ci.key, ci.keyErr = receipt.Key(&cs)
			return context.WithValue(ctx, connInfoKey{}, ci)
		},
		OnError: func(c net.Conn, err error) {
			p.log.Debug("inbound connection ended", "peer", c.RemoteAddr().String(), "err", err)
		},
	}
}

// serveInbound serves the handshaken connections of ln until it closes.
func (p *Proxy) serveInbound(ctx context.Context, srv *mux.Server, ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Go(func() { srv.ServeConn(ctx, c) })
	}
}

// serveMessage receives one message from another sidecar, checks it while
// delivering it to the app, and answers with the app's response followed by
// the digests and the receipt.
func (p *Proxy) serveMessage(w http.ResponseWriter, r *http.Request) {
	ci, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if ci == nil || ci.service == "" || ci.keyErr != nil {
		p.met.badInput.WithLabelValues("peer_identity").Inc()
		p.log.Warn("inbound request from a peer that is not a mesh service", "peer", r.RemoteAddr)
		refuse(w, "unauthorized", http.StatusForbidden, "peer is not a mesh service")
		return
	}
	in := p.inEdge(ci.service)
	id := r.Header.Get(wire.HeaderMessageID)
	seq, serr := wire.ParseSeq(r.Header.Get(wire.HeaderSeq))
	if err := wire.ParseID(id); err != nil || serr != nil {
		p.met.badInput.WithLabelValues("message_header").Inc()
		p.log.Warn("inbound message without valid id or sequence", "peer", ci.peer.String(), "id_err", err, "seq_err", serr)
		refuse(w, "unconfirmed", http.StatusBadRequest, "bad Tally-Message-Id or Tally-Seq")
		return
	}
	m := &inMessage{id: id, seq: seq, edge: in, peer: ci, proto: r.Header.Get(wire.HeaderProtocol),
		peerInstance: r.Header.Get(wire.HeaderInstance)}
	if dest := r.Header.Get(wire.HeaderDestination); dest != p.cfg.Service {
		// Addressed to another service: do not deliver.
		p.calleeOmission(m, "misrouted", fmt.Sprintf("message for %q arrived at %q; not delivered", dest, p.cfg.Service))
		refuse(w, "misrouted", http.StatusMisdirectedRequest, fmt.Sprintf("this is %s, not %s", p.cfg.Service, dest))
		return
	}
	if n := headerSize(r.Header); n > p.cfg.MaxHeaderBytes {
		p.met.limitHits.WithLabelValues("header_bytes").Inc()
		detail := fmt.Sprintf("request header block of %d bytes over the limit of %d; not delivered", n, p.cfg.MaxHeaderBytes)
		p.calleeOmission(m, "unconfirmed", detail)
		refuse(w, "unconfirmed", http.StatusRequestHeaderFieldsTooLarge, detail)
		return
	}
	switch m.proto {
	case "tcp":
		p.serveInboundTCP(w, r, m)
		return
	case "http", "grpc":
	default:
		p.met.badInput.WithLabelValues("protocol").Inc()
		detail := fmt.Sprintf("unknown Tally-Protocol %q; not delivered", m.proto)
		p.calleeOmission(m, "unconfirmed", detail)
		refuse(w, "unconfirmed", http.StatusBadRequest, detail)
		return
	}
	p.deliverHTTP(w, r, m)
}

type inMessage struct {
	id           string
	seq          uint64
	edge         *edge
	peer         *connInfo
	proto        string
	peerInstance string // the caller's instance: the sequence space of seq
}

// refuse answers a message the callee will not deliver; Tally-Omission tells
// the caller's sidecar why.
func refuse(w http.ResponseWriter, kind string, status int, msg string) {
	w.Header().Set(wire.HeaderOmission, kind)
	http.Error(w, "tally: "+msg, status)
}

func (p *Proxy) inEdge(source string) *edge {
	k := "<-" + source
	if e, ok := p.edges.Load(k); ok {
		return e.(*edge)
	}
	e, _ := p.edges.LoadOrStore(k, p.met.newEdge(source, p.cfg.Service, spiffeid.ID{}))
	return e.(*edge)
}

func (p *Proxy) calleeOmission(m *inMessage, kind, detail string) {
	m.edge.omitted(kind)
	p.log.Warn("omission", "kind", kind, "source", m.edge.source, "message_id", m.id, "seq", m.seq, "detail", detail)
	p.rec.add(&tallyv1.Record{
		Kind: tallyv1.RecordKind_RECORD_KIND_OMISSION, OmissionKind: kind, Detail: detail,
		MessageId: m.id, Seq: m.seq, Source: m.edge.source, Destination: p.cfg.Service,
		SourceIdentity: m.peer.peer.String(), DestinationIdentity: p.agent.selfID, Protocol: m.proto, Reporter: "callee",
		PeerInstanceId: m.peerInstance,
	})
}

// requestCheck verifies a request body against the caller's digest and
// length, which travel in the trailer (or the header for an empty body).
func requestCheck(r *http.Request) checkFunc {
	return func(sum [32]byte, n int64) error {
		get := func(k string) string {
			if v := r.Trailer.Get(k); v != "" {
				return v
			}
			return r.Header.Get(k)
		}
		cd := get(wire.HeaderContentDigest)
		if cd == "" {
			return omitted("truncated", fmt.Sprintf("request ended after %d bytes without its digest", n))
		}
		declared, err := wire.ParseLength(get(wire.HeaderLength))
		if err != nil {
			return omitted("digest_mismatch", "Tally-Length: "+err.Error())
		}
		if declared != n {
			if n < declared {
				return omitted("truncated", fmt.Sprintf("received %d of %d request bytes", n, declared))
			}
			return omitted("digest_mismatch", fmt.Sprintf("received %d request bytes, caller sent %d", n, declared))
		}
		if err := digest.CheckSHA256(cd, sum); err != nil {
			return omitted("digest_mismatch", "request body: "+err.Error())
		}
		return nil
	}
}

func (p *Proxy) deliverHTTP(w http.ResponseWriter, r *http.Request, m *inMessage) {
	grpcCall := m.proto == "grpc"
	check := requestCheck(r)
	// The caller app's own request trailers go on to the app.
	var appTrailer http.Header
	for k := range r.Trailer {
		if !isTallyField(k) {
			if appTrailer == nil {
				appTrailer = http.Header{}
			}
			appTrailer[k] = nil
		}
	}
	if appTrailer != nil {
		inner := check
		check = func(sum [32]byte, n int64) error {
			setRequestTrailers(appTrailer, r.Trailer)
			return inner(sum, n)
		}
	}
	var (
		body *verifyingReader
		held []byte // the whole request body, verified; nil when it streams
	)
	switch {
	case r.ContentLength == 0 && len(r.Trailer) == 0:
		body = endedEmpty(check)
	case r.ContentLength > 0 && r.ContentLength <= p.holdBytes() && !grpcCall:
		// Small and of known size: verify it whole before the app sees it.
		body = newVerifyingReader(r.Body, newMeter(), false, check)
		buf := bufPool.Get().(*bytes.Buffer)
		defer func() { buf.Reset(); bufPool.Put(buf) }()
		io.Copy(buf, body)
		held = buf.Bytes()
	default:
		body = newVerifyingReader(r.Body, newMeter(), !grpcCall, check)
	}
	defer body.Close()
	if body.ended() {
		if _, _, err := body.result(); err != nil {
			om := asOmission(err, body.m.n)
			p.calleeOmission(m, om.kind, om.detail)
			refuse(w, om.kind, http.StatusBadGateway, "request not delivered: "+om.Error())
			return
		}
	}
	if p.calleeFault(m.edge.source, "drop") != nil {
		// Injected: a hop that swallows the request.
		io.Copy(io.Discard, r.Body)
		panic(http.ErrAbortHandler)
	}

	var resp *http.Response
	var err error
	if streamed := !body.ended(); !streamed && appTrailer == nil && p.app.lean(m.proto) && canFast(r) {
		resp, err = p.app.h1.roundTrip(r.Context(), r, held)
	} else {
		resp, err = p.appRoundTrip(r, m, body, held, appTrailer)
	}
	if err != nil {
		if berr := body.failure(); berr != nil {
			om := asOmission(berr, 1)
			p.calleeOmission(m, om.kind, om.detail)
			refuse(w, om.kind, http.StatusBadGateway, "request not delivered whole: "+om.Error())
			return
		}
		if errors.Is(err, errRequestTarget) {
			// The caller's request, not the app, is at fault.
			p.calleeOmission(m, "unconfirmed", err.Error())
			refuse(w, "unconfirmed", http.StatusBadRequest, err.Error())
			return
		}
		if errors.Is(err, errAppHeaderTooLarge) {
			p.met.limitHits.WithLabelValues("header_bytes").Inc()
		}
		p.log.Warn("app unreachable", "app", p.cfg.AppAddr, "err", err)
		p.calleeOmission(m, "unconfirmed", "app did not answer: "+err.Error())
		refuse(w, "unconfirmed", http.StatusBadGateway, "app did not answer: "+err.Error())
		return
	}
	defer resp.Body.Close()
	if n := headerSize(resp.Header); n > p.cfg.MaxHeaderBytes {
		p.met.limitHits.WithLabelValues("header_bytes").Inc()
		p.calleeOmission(m, "unconfirmed", fmt.Sprintf("app response header block of %d bytes over the limit", n))
		refuse(w, "unconfirmed", http.StatusBadGateway, "app response header too large")
		return
	}

	if p.calleeFault(m.edge.source, "abort") != nil {
		// Injected: the app answered, the response is lost.
		panic(http.ErrAbortHandler)
	}
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	if r.Method != http.MethodHead {
		h.Del("Content-Length")
	}
	setFields(h, wire.HeaderMessageID, m.id, "Trailer", responseTrailers)
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	streaming := grpcCall || resp.ContentLength < 0
	if streaming {
		rc.Flush()
	}
	fault := p.responseFault(m.edge.source)
	rm := newMeter()
	chunk := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(chunk)
	var appErr, werr error
	for {
		n, err := resp.Body.Read(*chunk)
		if n > 0 {
			b := (*chunk)[:n]
			rm.add(b)
			if fault != nil {
				b = fault.apply(b)
			}
			if werr == nil {
				if _, werr = w.Write(b); werr == nil && streaming {
					werr = rc.Flush()
				}
			}
			if fault != nil && fault.cut {
				// Injected truncation: the stream dies mid-body.
				rc.Flush()
				panic(http.ErrAbortHandler)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			appErr = err
			break
		}
	}
	sum := rm.sum()
	respDigest, respLen := digest.Format(sum), strconv.FormatInt(rm.n, 10)
	if appErr != nil {
		// The app's response ended early (closed before its declared
		// length, or a chunked body without its last chunk): say so in
		// the trailer and issue no receipt.
		detail := fmt.Sprintf("app response ended after %d bytes: %v", rm.n, appErr)
		if resp.ContentLength > 0 {
			detail = fmt.Sprintf("app declared Content-Length %d and closed after %d bytes", resp.ContentLength, rm.n)
		}
		p.calleeOmission(m, "truncated", detail)
		setFields(h, wire.HeaderContentDigest, respDigest, wire.HeaderLength, respLen, wire.HeaderOmission, "truncated")
		return
	}
	setAppTrailers(h, resp.Trailer)
	// The receipt covers the request as received: wait for its end (the
	// app normally read it all before answering).
	reqSum, reqLen, reqErr := body.resultWithin(5 * time.Second)
	if reqErr != nil {
		om := asOmission(reqErr, reqLen)
		p.calleeOmission(m, om.kind, "request: "+om.detail)
		setFields(h, wire.HeaderContentDigest, respDigest, wire.HeaderLength, respLen, wire.HeaderOmission, om.kind)
		return
	}
	mac := receipt.Sign(m.peer.key, receipt.Receipt{Kind: receipt.KindHTTP, MessageID: m.id, Seq: m.seq,
		RequestDigest: reqSum, RequestLen: reqLen, ResponseDigest: sum, ResponseLen: rm.n})
	setFields(h, wire.HeaderContentDigest, respDigest, wire.HeaderLength, respLen,
		wire.HeaderRequestDigest, digest.Format(reqSum), wire.HeaderReceipt, receipt.Format(mac))
	m.edge.received.Inc()
	p.rec.add(&tallyv1.Record{
		Kind: tallyv1.RecordKind_RECORD_KIND_RECEIVED, MessageId: m.id, Seq: m.seq,
		Source: m.edge.source, Destination: p.cfg.Service, SourceIdentity: m.peer.peer.String(),
		DestinationIdentity: p.agent.selfID, Protocol: m.proto, Reporter: "callee", RequestDigest: reqSum[:], ResponseDigest: sum[:],
		RequestBytes: reqLen, ResponseBytes: rm.n, PeerInstanceId: m.peerInstance,
	})
}

var errRequestTarget = errors.New("request target")

// appRoundTrip carries a message to the app through net/http: a body that
// streams, request trailers, or h2c.
func (p *Proxy) appRoundTrip(r *http.Request, m *inMessage, body *verifyingReader, held []byte, trailer http.Header) (*http.Response, error) {
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.cfg.AppAddr+r.URL.RequestURI(), nil)
	if err != nil {
		p.met.badInput.WithLabelValues("request_target").Inc()
		return nil, fmt.Errorf("%w: %v", errRequestTarget, err)
	}
	out.Header = r.Header.Clone()
	for _, h := range append(hopHeaders, tallyHeaders...) {
		delete(out.Header, h) // canonical names, as are the keys
	}
	delete(out.Header, wire.HeaderContentDigest)
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	out.Trailer = trailer
	switch {
	case !body.ended():
		out.Body = body
	case held != nil:
		out.Body = io.NopCloser(bytes.NewReader(held))
	default:
		out.Body = http.NoBody
	}
	return p.app.forProto(m.proto).RoundTrip(out)
}

func setRequestTrailers(dst, src http.Header) {
	for k := range dst {
		dst[k] = src[k]
	}
}

// appClients reach the local app: HTTP/1.1 for plain requests, h2c for gRPC.
type appClients struct {
	h1         *h1Client // a body held whole, over HTTP/1.1
	http1, h2c *http.Transport
	mode       string
}

func newAppClients(addr, mode string, maxHeader int) *appClients {
	mk := func(h2c bool) *http.Transport {
		protos := new(http.Protocols)
		if h2c {
			protos.SetUnencryptedHTTP2(true)
		} else {
			protos.SetHTTP1(true)
		}
		return &http.Transport{
			Protocols:              protos,
			DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:           1024,
			MaxIdleConnsPerHost:    1024,
			IdleConnTimeout:        90 * time.Second,
			DisableCompression:     true,
			MaxResponseHeaderBytes: int64(maxHeader) + 4096,
		}
	}
	return &appClients{h1: newH1Client(addr, maxHeader), http1: mk(false), h2c: mk(true), mode: mode}
}

// lean reports whether messages of proto reach the app over HTTP/1.1.
func (a *appClients) lean(proto string) bool { return a.forProto(proto) == a.http1 }

func (a *appClients) forProto(proto string) *http.Transport {
	switch {
	case a.mode == "h2c", a.mode == "auto" && proto == "grpc":
		return a.h2c
	}
	return a.http1
}

// slogErrorLog routes net/http's internal errors to the structured log.
func slogErrorLog(l *slog.Logger, listener string) *log.Logger {
	return slog.NewLogLogger(l.With("listener", listener).Handler(), slog.LevelDebug)
}
