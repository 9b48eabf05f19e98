package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/identity"
	"github.com/tally-mesh/tally/internal/mux"
	"github.com/tally-mesh/tally/internal/receipt"
	"github.com/tally-mesh/tally/internal/wire"
	"github.com/tally-mesh/tally/internal/wire/digest"
)

// Trailer names the sidecars exchange; declared up front on every stream.
var (
	requestTrailers  = []string{wire.HeaderContentDigest, wire.HeaderLength}
	responseTrailers = strings.Join([]string{wire.HeaderContentDigest, wire.HeaderLength,
		wire.HeaderRequestDigest, wire.HeaderReceipt, wire.HeaderOmission}, ", ")
)

// perMessageFields differ in every message; HPACK sends them as
// never-indexed literals (mux.ClientConfig.NeverIndex).
var perMessageFields = []string{wire.HeaderMessageID, wire.HeaderSeq, wire.HeaderReceipt,
	wire.HeaderContentDigest, wire.HeaderRequestDigest}

// hopHeaders are connection-specific and never forwarded (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Upgrade", "Transfer-Encoding", "Trailer"}

// tallyHeaders are ours: stripped from what an app sends, set by the sidecar.
var tallyHeaders = []string{wire.HeaderMessageID, wire.HeaderSeq, wire.HeaderInstance, wire.HeaderDestination,
	wire.HeaderProtocol, wire.HeaderLength, wire.HeaderRequestDigest, wire.HeaderReceipt, wire.HeaderOmission}

func (p *Proxy) outboundServer() *http.Server {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           http.HandlerFunc(p.serveOutbound),
		Protocols:         protos,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Go's own limit is a backstop; the configured limit is checked in
		// the handler, where hitting it is counted and explained.
		MaxHeaderBytes: p.cfg.MaxHeaderBytes + 4096,
		HTTP2:          &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ErrorLog:       slogErrorLog(p.log, "outbound"),
	}
}

// headerSize is the size of a header block as HTTP/2 counts it (RFC 9113 §6.5.2).
func headerSize(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 32
		}
	}
	return n
}

// call is one message on its way out.
type call struct {
	id    string
	seq   uint64
	edge  *edge
	proto string // http, grpc, tcp
	start time.Time
	pc    *peerConn
	req   *verifyingReader // the request body as sent
	sent  pendingRef       // the SENT record, which its CONFIRMED may replace
}

func (p *Proxy) edgeFor(dest string) *edge {
	if e, ok := p.edges.Load(dest); ok {
		return e.(*edge)
	}
	id, _ := identity.ServiceID(p.agent.td, dest)
	ne := p.met.newEdge(p.cfg.Service, dest, id)
	ne.sourceID = p.agent.selfID
	e, _ := p.edges.LoadOrStore(dest, ne)
	return e.(*edge)
}

func isGRPC(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "application/grpc")
}

// serveOutbound carries one request of the local app to the service its
// Host names, and delivers the response only once it is accounted for.
func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	grpcCall := isGRPC(r.Header)
	if n := headerSize(r.Header); n > p.cfg.MaxHeaderBytes {
		p.met.limitHits.WithLabelValues("header_bytes").Inc()
		p.log.Warn("request header too large", "bytes", n, "limit", p.cfg.MaxHeaderBytes, "host", r.Host)
		localError(w, grpcCall, http.StatusRequestHeaderFieldsTooLarge,
			fmt.Sprintf("request header block is %d bytes, over the limit of %d (--max-header-bytes)", n, p.cfg.MaxHeaderBytes))
		return
	}
	dest, err := wire.ServiceFromHost(r.Host)
	if err != nil {
		p.met.badInput.WithLabelValues("host").Inc()
		p.log.Warn("request with unroutable host", "host", r.Host, "err", err)
		localError(w, grpcCall, http.StatusBadRequest, fmt.Sprintf("cannot route Host %q: %v", r.Host, err))
		return
	}
	if r.ProtoMajor == 1 {
		http.NewResponseController(w).EnableFullDuplex()
	}
	e := p.edgeFor(dest)
	c := &call{id: wire.NewID(), edge: e, proto: "http", start: time.Now()}
	if grpcCall {
		c.proto = "grpc"
	}
	pc, err := p.connect(r.Context(), e)
	if err != nil {
		p.failBeforeSend(w, r, c, err)
		return
	}
	c.pc = pc
	c.seq = e.seq.Add(1)

	out := p.outboundRequest(r, c)
	var body *verifyingReader
	if r.ContentLength == 0 && r.Body == http.NoBody || r.Body == nil {
		out.Body = nil
		setFields(out.Header, wire.HeaderContentDigest, emptyDigest, wire.HeaderLength, "0")
		body = endedEmpty(nil)
	} else {
		out.Trailer = http.Header{}
		for _, k := range requestTrailers {
			out.Trailer[k] = nil
		}
		body = newVerifyingReader(r.Body, newMeter(), false, func(sum [32]byte, n int64) error {
			// The app's own request trailers travel on, beside ours.
			for k, vs := range r.Trailer {
				if !isTallyField(k) && len(vs) > 0 {
					out.Trailer[k] = vs
				}
			}
			out.Trailer.Set(wire.HeaderContentDigest, digest.Format(sum))
			out.Trailer.Set(wire.HeaderLength, strconv.FormatInt(n, 10))
			return nil
		})
		for k := range r.Trailer {
			if !isTallyField(k) {
				out.Trailer[k] = nil
			}
		}
		out.Body = body
	}
	c.req = body

	p.markSent(c)
	resp, err := pc.cc.RoundTrip(out)
	if errors.Is(err, mux.ErrGoAway) {
		// The peer is draining and took no new stream: nothing left this
		// sidecar, so another connection (or endpoint) may carry it.
		p.pool.dropIfBroken(pc)
		e.retries.Inc()
		if pc, err = p.connect(r.Context(), e); err == nil {
			c.pc = pc
			resp, err = pc.cc.RoundTrip(out)
		}
	}
	if err != nil {
		if c.pc != nil {
			p.pool.dropIfBroken(c.pc)
		}
		detail := "request failed before any response: " + err.Error()
		if r.Context().Err() != nil {
			detail = "the calling app went away before the response (hung up or canceled)"
		}
		p.failCaller(w, r, c, omitted("unconfirmed", detail), false)
		return
	}
	defer resp.Body.Close()
	if k := resp.Header.Get(wire.HeaderOmission); k != "" {
		// The peer sidecar refused or failed the message before its app
		// answered: pass the failure on.
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		p.failCaller(w, r, c, omitted(k, "peer sidecar: "+strings.TrimSpace(string(msg))), false)
		return
	}
	if grpcCall {
		p.relayGRPC(w, r, c, resp, body)
		return
	}
	p.relayHTTP(w, r, c, resp, body)
}

// connect picks an endpoint of e's service and returns a connection to the
// sidecar there whose identity is the service addressed. Endpoints that
// cannot be reached are skipped (nothing was sent, so this is safe and is
// counted as a retry); one that answers with another identity is misrouted.
func (p *Proxy) connect(ctx context.Context, e *edge) (*peerConn, error) {
	eps := p.agent.endpoints(e.dest)
	if len(eps) == 0 {
		return nil, errNoEndpoints
	}
	if f := p.faultFor(e.dest, "misroute"); f != nil {
		eps = p.misrouteTargets(e.dest, eps)
	}
	var lastErr error
	for i, ep := range eps {
		if i > 0 {
			e.retries.Inc()
		}
		pc, err := p.pool.get(ctx, ep.addr)
		if err != nil {
			lastErr = err
			continue
		}
		if pc.peer != e.destID {
			return nil, omitted("misrouted", fmt.Sprintf("endpoint %s of %s answered as %s; request not sent", ep.addr, e.destID, pc.peer))
		}
		return pc, nil
	}
	return nil, fmt.Errorf("no endpoint of %s reachable: %w", e.dest, lastErr)
}

func (p *Proxy) outboundRequest(r *http.Request, c *call) *http.Request {
	// The incoming request is ours alone: reuse its header map instead of
	// cloning it (r is not read again after this).
	out := new(http.Request)
	*out = *r
	u := *r.URL
	out.URL = &u
	out.RequestURI = ""
	out.URL.Scheme = "https"
	out.URL.Host = c.edge.dest
	out.Host = r.Host
	out.Close = false
	// The names are canonical, as are the parsed header's keys: delete,
	// not Del, which would canonicalize each name again.
	for _, h := range hopHeaders {
		delete(out.Header, h)
	}
	if te := r.Header["Te"]; len(te) > 0 && !strings.EqualFold(te[0], "trailers") {
		delete(out.Header, "Te")
	}
	for _, h := range tallyHeaders {
		delete(out.Header, h)
	}
	delete(out.Header, wire.HeaderContentDigest)
	setFields(out.Header, wire.HeaderMessageID, c.id, wire.HeaderSeq, strconv.FormatUint(c.seq, 10),
		wire.HeaderInstance, p.rec.instance, wire.HeaderDestination, c.edge.dest, wire.HeaderProtocol, c.proto)
	out.Trailer = nil
	return out
}

// relayHTTP delivers a plain HTTP response: whole and verified when it fits
// HoldBytes, else streamed with its tail withheld until the digest checks.
func (p *Proxy) relayHTTP(w http.ResponseWriter, r *http.Request, c *call, resp *http.Response, req *verifyingReader) {
	m := newMeter()
	buf := bufPool.Get().(*bytes.Buffer)
	defer func() { buf.Reset(); bufPool.Put(buf) }()
	ended, err := readUpTo(buf, resp.Body, p.holdBytes(), &m)
	if err != nil {
		p.failCaller(w, r, c, asOmission(err, m.n), false)
		return
	}
	if ended {
		sum := m.sum()
		if om := p.verifyResponse(c, resp, req, sum, m.n); om != nil {
			p.failCaller(w, r, c, om, false)
			return
		}
		h := w.Header()
		copyResponseHeader(h, resp.Header)
		setFields(h, wire.HeaderMessageID, c.id, wire.HeaderContentDigest, digest.Format(sum))
		appTrailers := declareAppTrailers(h, resp.Trailer)
		if !appTrailers && (r.Method != http.MethodHead || m.n > 0) {
			// Trailers need chunked encoding on HTTP/1.1; without
			// them the length is known and kept.
			h.Set("Content-Length", strconv.FormatInt(m.n, 10))
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(buf.Bytes())
		setAppTrailers(h, resp.Trailer)
		p.confirm(c, req, sum, m.n)
		return
	}
	// Larger than HoldBytes: stream it. What was read so far is not the
	// tail; the rest passes through a reader that withholds its last chunk.
	p.met.limitHits.WithLabelValues("hold_bytes").Inc()
	var vr *verifyingReader
	vr = newVerifyingReader(resp.Body, m, true, func(sum [32]byte, n int64) error {
		if om := p.verifyResponse(c, resp, req, sum, n); om != nil {
			return om
		}
		return nil
	})
	defer vr.Close()
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	h.Del("Content-Length")
	h.Set(wire.HeaderMessageID, c.id)
	h.Set("Trailer", wire.HeaderContentDigest)
	w.WriteHeader(resp.StatusCode)
	w.Write(buf.Bytes())
	chunk := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(chunk)
	_, cerr := io.CopyBuffer(w, vr, *chunk)
	sum, n, verr := vr.result()
	if cerr != nil || verr != nil {
		om := asOmission(verr, n)
		if verr == nil {
			om = omitted("truncated", "caller connection failed: "+cerr.Error())
		}
		p.failCaller(w, r, c, om, true)
		return
	}
	h.Set(wire.HeaderContentDigest, digest.Format(sum))
	setAppTrailers(h, resp.Trailer)
	p.confirm(c, req, sum, n)
}

// emptyDigest is the Content-Digest of an empty body.
var emptyDigest = digest.Format(emptySum)

// setFields sets header fields from name, value pairs; the names must be
// in canonical form. The values share one allocation.
func setFields(h http.Header, kv ...string) {
	vals := make([]string, len(kv)/2)
	for i := range vals {
		vals[i] = kv[2*i+1]
		h[kv[2*i]] = vals[i : i+1 : i+1]
	}
}

// declareAppTrailers announces the app's own trailers (not the sidecars'
// accounting fields) and reports whether there are any.
func declareAppTrailers(h, trailer http.Header) bool {
	any := false
	for k := range trailer {
		if !isTallyField(k) {
			h.Add("Trailer", k)
			any = true
		}
	}
	return any
}

// setAppTrailers passes the app's own trailers on to the caller.
func setAppTrailers(h, trailer http.Header) {
	for k, vs := range trailer {
		if !isTallyField(k) && len(vs) > 0 {
			h[http.TrailerPrefix+k] = vs
		}
	}
}

// relayGRPC streams a gRPC response as it comes (messages must flow) and
// turns any failure into status DATA_LOSS instead of the app's status.
func (p *Proxy) relayGRPC(w http.ResponseWriter, r *http.Request, c *call, resp *http.Response, req *verifyingReader) {
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	h.Set(wire.HeaderMessageID, c.id)
	trailersOnly := resp.Header.Get("Grpc-Status") != ""
	vr := newVerifyingReader(resp.Body, newMeter(), false, func(sum [32]byte, n int64) error {
		if om := p.verifyResponse(c, resp, req, sum, n); om != nil {
			return om
		}
		return nil
	})
	defer vr.Close()
	if trailersOnly {
		io.Copy(io.Discard, vr)
		sum, n, err := vr.result()
		if err != nil {
			p.failCaller(w, r, c, asOmission(err, n), false)
			return
		}
		h.Set(wire.HeaderContentDigest, digest.Format(sum))
		w.WriteHeader(resp.StatusCode)
		p.confirm(c, req, sum, n)
		return
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	chunk := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(chunk)
	var werr error
	for {
		n, err := vr.Read(*chunk)
		if n > 0 && werr == nil {
			if _, werr = w.Write((*chunk)[:n]); werr == nil {
				werr = rc.Flush()
			}
		}
		if err != nil {
			break
		}
	}
	sum, n, err := vr.result()
	if err == nil && werr != nil {
		err = omitted("truncated", "caller connection failed: "+werr.Error())
	}
	if err != nil {
		p.failCaller(w, r, c, asOmission(err, n), true)
		return
	}
	setAppTrailers(h, resp.Trailer)
	h.Set(http.TrailerPrefix+wire.HeaderContentDigest, digest.Format(sum))
	p.confirm(c, req, sum, n)
}

// verifyResponse checks a finished response against the peer's trailers and
// receipt. It returns nil only if the peer's digest and length match what
// arrived, the peer saw exactly the request that was sent, and the receipt
// verifies under this TLS session's key.
func (p *Proxy) verifyResponse(c *call, resp *http.Response, req *verifyingReader, sum [32]byte, n int64) *omission {
	if k := field(resp, wire.HeaderOmission); k != "" {
		return omitted(k, "peer sidecar reported the response incomplete after "+strconv.FormatInt(n, 10)+" bytes")
	}
	cd := field(resp, wire.HeaderContentDigest)
	if cd == "" {
		return omitted("truncated", fmt.Sprintf("response ended after %d bytes without its digest", n))
	}
	declared, err := wire.ParseLength(field(resp, wire.HeaderLength))
	if err != nil {
		p.met.badInput.WithLabelValues("length").Inc()
		return omitted("digest_mismatch", "peer's Tally-Length: "+err.Error())
	}
	if declared != n {
		if n < declared {
			return omitted("truncated", fmt.Sprintf("received %d of %d response bytes", n, declared))
		}
		return omitted("digest_mismatch", fmt.Sprintf("received %d response bytes, peer sent %d", n, declared))
	}
	if err := digest.CheckSHA256(cd, sum); err != nil {
		return omitted("digest_mismatch", "response body: "+err.Error())
	}
	reqSum, reqLen, reqErr := req.result()
	if reqErr != nil {
		return omitted("truncated", "request body: "+reqErr.Error())
	}
	if err := digest.CheckSHA256(field(resp, wire.HeaderRequestDigest), reqSum); err != nil {
		return omitted("digest_mismatch", "peer received a different request body: "+err.Error())
	}
	mac, err := receipt.Parse(field(resp, wire.HeaderReceipt))
	if err != nil {
		p.met.badInput.WithLabelValues("receipt").Inc()
		return omitted("unconfirmed", "receipt: "+err.Error())
	}
	rc := receipt.Receipt{Kind: receipt.KindHTTP, MessageID: c.id, Seq: c.seq,
		RequestDigest: reqSum, RequestLen: reqLen, ResponseDigest: sum, ResponseLen: n}
	if err := receipt.Verify(c.pc.key, rc, mac); err != nil {
		return omitted("unconfirmed", "receipt does not verify: "+err.Error())
	}
	return nil
}

// field reads one of the peer's accounting fields, k (a canonical name):
// from the trailer, or from the header when the response had no body to
// trail.
func field(resp *http.Response, k string) string {
	if v := resp.Trailer[k]; len(v) > 0 && v[0] != "" {
		return v[0]
	}
	if v := resp.Header[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (p *Proxy) confirm(c *call, req *verifyingReader, sum [32]byte, n int64) {
	reqSum, reqLen, _ := req.result()
	lat := time.Since(c.start)
	c.edge.confirmed.Inc()
	c.edge.bytesSent.Add(float64(reqLen))
	c.edge.bytesConfirmed.Add(float64(reqLen + n))
	c.edge.duration.Observe(lat.Seconds())
	rec := c.record(tallyv1.RecordKind_RECORD_KIND_CONFIRMED)
	rec.RequestDigest = reqSum[:]
	rec.ResponseDigest = sum[:]
	rec.RequestBytes = reqLen
	rec.ResponseBytes = n
	rec.LatencyNanos = int64(lat)
	p.rec.settle(c.sent, rec)
}

// markSent counts and records a message as sent: from here on it ends as
// confirmed or as an omission.
func (p *Proxy) markSent(c *call) {
	c.edge.sent.Inc()
	c.sent = p.rec.add(c.record(tallyv1.RecordKind_RECORD_KIND_SENT))
}

// callerOmission counts, records and logs an omission seen by the caller's
// sidecar; the record carries what had been sent of the request.
func (p *Proxy) callerOmission(c *call, om *omission) {
	c.edge.omitted(om.kind)
	rec := c.record(tallyv1.RecordKind_RECORD_KIND_OMISSION)
	rec.OmissionKind = om.kind
	rec.Detail = om.detail
	if c.req != nil && c.req.ended() {
		if _, n, _ := c.req.result(); n > 0 {
			rec.RequestBytes = n
			c.edge.bytesSent.Add(float64(n))
		}
	}
	p.rec.add(rec)
	p.log.Warn("omission", "kind", om.kind, "destination", c.edge.dest, "message_id", c.id, "seq", c.seq, "detail", om.detail)
}

func (c *call) record(kind tallyv1.RecordKind) *tallyv1.Record {
	return &tallyv1.Record{
		Kind: kind, MessageId: c.id, Seq: c.seq, Source: c.edge.source, Destination: c.edge.dest,
		SourceIdentity: c.edge.sourceID, DestinationIdentity: c.edge.destID.String(), Protocol: c.proto, Reporter: "caller",
	}
}

// failBeforeSend answers a request that could not be sent at all.
func (p *Proxy) failBeforeSend(w http.ResponseWriter, r *http.Request, c *call, err error) {
	var om *omission
	if errors.As(err, &om) {
		// Misrouted: a message was addressed (and so counts as sent),
		// nothing was delivered.
		c.seq = c.edge.seq.Add(1)
		p.markSent(c)
		p.failCaller(w, r, c, om, false)
		return
	}
	p.log.Warn("no peer reachable", "destination", c.edge.dest, "err", err)
	status := http.StatusBadGateway
	if errors.Is(err, errNoEndpoints) {
		status = http.StatusServiceUnavailable
		err = fmt.Errorf("service %q has no endpoints in the mesh", c.edge.dest)
	}
	if isGRPC(r.Header) {
		grpcFail(w, 14, "tally: "+err.Error(), "")
		return
	}
	w.Header().Set("Tally-Error", "unavailable")
	http.Error(w, "tally: "+err.Error(), status)
}

// failCaller makes a failure loud: a 502 (or gRPC status) naming the
// omission if nothing reached the caller yet, an aborted body otherwise;
// and records the omission at once.
func (p *Proxy) failCaller(w http.ResponseWriter, r *http.Request, c *call, om *omission, started bool) {
	p.callerOmission(c, om)
	grpcCall := c.proto == "grpc"
	switch {
	case grpcCall && started:
		h := w.Header()
		h.Set(http.TrailerPrefix+"Grpc-Status", "15")
		h.Set(http.TrailerPrefix+"Grpc-Message", grpcMessage("tally: "+om.kind+": "+om.detail))
		h.Set(http.TrailerPrefix+wire.HeaderOmission, om.kind)
	case grpcCall:
		w.Header().Set(wire.HeaderMessageID, c.id)
		grpcFail(w, 15, "tally: "+om.kind+": "+om.detail, om.kind)
	case started:
		// Headers and part of the body are out: abort so the caller sees
		// a broken body, never a complete-looking one.
		panic(http.ErrAbortHandler)
	default:
		h := w.Header()
		h.Set(wire.HeaderOmission, om.kind)
		h.Set(wire.HeaderMessageID, c.id)
		http.Error(w, "tally: "+om.kind+": "+om.detail, http.StatusBadGateway)
	}
}

// grpcFail answers a gRPC call with a trailers-only status.
func grpcFail(w http.ResponseWriter, code int, msg, kind string) {
	h := w.Header()
	for k := range h {
		if k != wire.HeaderMessageID {
			delete(h, k)
		}
	}
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", grpcMessage(msg))
	if kind != "" {
		h.Set(wire.HeaderOmission, kind)
	}
	w.WriteHeader(http.StatusOK)
}

// grpcMessage percent-encodes a grpc-message value (gRPC over HTTP/2 spec).
func grpcMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// localError answers a request the sidecar refuses itself (bad input).
func localError(w http.ResponseWriter, grpcCall bool, status int, msg string) {
	if grpcCall {
		code := 3 // INVALID_ARGUMENT
		if status == http.StatusRequestHeaderFieldsTooLarge {
			code = 8 // RESOURCE_EXHAUSTED
		}
		grpcFail(w, code, "tally: "+msg, "")
		return
	}
	w.Header().Set("Tally-Error", "bad_request")
	http.Error(w, "tally: "+msg, status)
}

// asOmission classifies a body failure: an omission passes as is; a broken
// stream is truncated if part of the body arrived, unconfirmed if none did.
func asOmission(err error, n int64) *omission {
	var om *omission
	if errors.As(err, &om) {
		return om
	}
	if n > 0 {
		return omitted("truncated", fmt.Sprintf("stream broke after %d bytes: %v", n, err))
	}
	return omitted("unconfirmed", "stream broke before any body: "+err.Error())
}

func isTallyField(k string) bool {
	if strings.EqualFold(k, wire.HeaderContentDigest) {
		return true
	}
	return len(k) > 6 && strings.EqualFold(k[:6], "Tally-")
}

func copyResponseHeader(dst, src http.Header) {
	for k, vs := range src {
		if isTallyField(k) || isHopHeader[k] {
			continue
		}
		dst[k] = vs
	}
}

// isHopHeader holds hopHeaders, for lookups by a canonical key.
var isHopHeader = func() map[string]bool {
	m := map[string]bool{}
	for _, h := range hopHeaders {
		m[h] = true
	}
	return m
}()
