package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	tallyv1 "github.com/tally-mesh/tally/api/tally/v1"
	"github.com/tally-mesh/tally/internal/receipt"
	"github.com/tally-mesh/tally/internal/wire"
)

// A TCP connection crosses between sidecars as one HTTP/2 stream: the
// request body carries the caller->callee direction as frames, the response
// body the callee->caller direction (wire.Frame). Each direction ends with
// FIN (byte count and sha-256), which the other side answers with FIN_ACK
// carrying a receipt MAC. The connection is confirmed when both FINs are
// acknowledged; anything else resets the caller's connection (RST).

func (p *Proxy) serveUpstream(ctx context.Context, dest string, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			p.log.Warn("upstream accept failed", "upstream", dest, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.flights.Add(1)
		go func() {
			defer p.flights.Done()
			p.relayTCP(ctx, dest, c.(*net.TCPConn))
		}()
	}
}

// resetConn closes c with RST, so its peer cannot take the end for a
// normal close.
func resetConn(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// direction accounts for the bytes of one direction of a TCP stream.
type direction struct {
	m   meter
	fin chan finState // the sender's FIN, handed from the sending goroutine
}

type finState struct {
	sum [32]byte
	n   int64
}

func newDirection() *direction { return &direction{m: newMeter(), fin: make(chan finState, 1)} }

// frameWriter serializes whole frames onto a stream.
type frameWriter struct {
	mu    sync.Mutex
	w     io.Writer
	flush func() error
	buf   []byte
}

func (fw *frameWriter) write(f wire.Frame) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.buf = wire.AppendFrame(fw.buf[:0], f)
	if _, err := fw.w.Write(fw.buf); err != nil {
		return err
	}
	if fw.flush != nil {
		return fw.flush()
	}
	return nil
}

// pump copies src into DATA frames until src ends, then sends FIN.
func pump(src io.Reader, fw *frameWriter, d *direction, maxFrame int) error {
	buf := make([]byte, min(maxFrame, chunkSize))
	for {
		n, err := src.Read(buf)
		if n > 0 {
			d.m.add(buf[:n])
			if werr := fw.write(wire.Frame{Type: wire.FrameData, Data: buf[:n]}); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			fs := finState{sum: d.m.sum(), n: d.m.n}
			d.fin <- fs
			return fw.write(wire.Frame{Type: wire.FrameFin, Count: uint64(fs.n), Digest: fs.sum})
		}
		if err != nil {
			return err
		}
	}
}

func tcpReceipt(id string, seq uint64, up bool, fs finState) receipt.Receipt {
	r := receipt.Receipt{Kind: receipt.KindTCP, MessageID: id, Seq: seq}
	if up {
		r.RequestDigest, r.RequestLen = fs.sum, fs.n
	} else {
		r.ResponseDigest, r.ResponseLen = fs.sum, fs.n
	}
	return r
}

// checkFin compares a peer's FIN with what arrived.
func checkFin(f wire.Frame, d *direction, what string) *omission {
	n := d.m.n
	if int64(f.Count) != n {
		if n < int64(f.Count) {
			return omitted("truncated", fmt.Sprintf("%s: received %d of %d bytes", what, n, f.Count))
		}
		return omitted("digest_mismatch", fmt.Sprintf("%s: received %d bytes, peer sent %d", what, n, f.Count))
	}
	if f.Digest != d.m.sum() {
		return omitted("digest_mismatch", what+": digest differs from the peer's")
	}
	return nil
}

// checkFinAck verifies the peer's acknowledgement of our FIN.
func checkFinAck(f wire.Frame, d *direction, key []byte, id string, seq uint64, up bool, what string) *omission {
	var fs finState
	select {
	case fs = <-d.fin:
		d.fin <- fs
	default:
		return omitted("digest_mismatch", what+": FIN_ACK before FIN")
	}
	if int64(f.Count) != fs.n || f.Digest != fs.sum {
		return omitted("digest_mismatch", fmt.Sprintf("%s: peer acknowledged %d bytes, %d were sent", what, f.Count, fs.n))
	}
	if err := receipt.Verify(key, tcpReceipt(id, seq, up, fs), f.MAC); err != nil {
		return omitted("unconfirmed", what+": FIN_ACK receipt does not verify")
	}
	return nil
}

func (p *Proxy) relayTCP(ctx context.Context, dest string, client *net.TCPConn) {
	e := p.edgeFor(dest)
	c := &call{id: wire.NewID(), edge: e, proto: "tcp", start: time.Now()}
	pc, err := p.connect(ctx, e)
	if err != nil {
		var om *omission
		if errors.As(err, &om) {
			c.seq = e.seq.Add(1)
			p.markSent(c)
			p.callerOmission(c, om)
		} else {
			p.log.Warn("no peer reachable", "destination", dest, "err", err)
		}
		resetConn(client)
		return
	}
	c.pc, c.seq = pc, e.seq.Add(1)

	pr, pw := io.Pipe()
	req := &http.Request{
		Method: http.MethodPost, URL: &url.URL{Scheme: "https", Host: dest, Path: "/"}, Host: dest,
		Header: http.Header{
			wire.HeaderMessageID:   {c.id},
			wire.HeaderSeq:         {strconv.FormatUint(c.seq, 10)},
			wire.HeaderInstance:    {p.rec.instance},
			wire.HeaderDestination: {dest},
			wire.HeaderProtocol:    {"tcp"},
		},
		Body: pr, ContentLength: -1,
	}
	req = req.WithContext(ctx)
	p.markSent(c)

	up, down := newDirection(), newDirection()
	fw := &frameWriter{w: pw}
	upErr := make(chan error, 1)
	go func() {
		err := pump(client, fw, up, p.cfg.MaxFrameBytes)
		if err != nil {
			// The local client broke its side: tell the peer, end the stream.
			fw.write(wire.Frame{Type: wire.FrameReset, Data: []byte(truncateString("caller's client connection: "+err.Error(), 256))})
			pw.CloseWithError(err)
		}
		upErr <- err
	}()

	fail := func(om *omission) {
		pw.CloseWithError(om)
		resetConn(client)
		p.callerOmission(c, om)
	}
	resp, err := pc.cc.RoundTrip(req)
	if err != nil {
		p.pool.dropIfBroken(pc)
		fail(omitted("unconfirmed", "stream to peer failed: "+err.Error()))
		return
	}
	defer resp.Body.Close()
	if k := resp.Header.Get(wire.HeaderOmission); k != "" || resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if k == "" {
			k = "unconfirmed"
		}
		fail(omitted(k, fmt.Sprintf("peer sidecar answered %d: %s", resp.StatusCode, msg)))
		return
	}

	fr := wire.NewFrameReader(resp.Body, p.cfg.MaxFrameBytes)
	var upAcked, downDone bool
	for !(upAcked && downDone) {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, wire.ErrFrameTooLarge) {
				p.met.limitHits.WithLabelValues("frame_bytes").Inc()
			}
			if errors.Is(err, wire.ErrBadFrame) || errors.Is(err, wire.ErrFrameTooLarge) {
				p.met.badInput.WithLabelValues("tcp_frame").Inc()
			}
			// Which of our bytes did not make it is unknowable: report
			// what had crossed when the stream broke.
			select {
			case e := <-upErr:
				if e != nil {
					upErr <- e
				}
			default:
			}
			fail(asOmission(fmt.Errorf("stream from peer: %w", err), up.m.n+down.m.n))
			return
		}
		switch f.Type {
		case wire.FrameData:
			down.m.add(f.Data)
			if _, err := client.Write(f.Data); err != nil {
				fail(omitted("truncated", fmt.Sprintf("local client gone after %d bytes: %v", down.m.n, err)))
				return
			}
		case wire.FrameFin:
			if om := checkFin(f, down, "callee->caller"); om != nil {
				fail(om)
				return
			}
			client.CloseWrite()
			fs := finState{sum: down.m.sum(), n: down.m.n}
			mac := receipt.Sign(pc.key, tcpReceipt(c.id, c.seq, false, fs))
			if err := fw.write(wire.Frame{Type: wire.FrameFinAck, Count: uint64(fs.n), Digest: fs.sum, MAC: mac}); err != nil {
				fail(asOmission(err, up.m.n+down.m.n))
				return
			}
			downDone = true
		case wire.FrameFinAck:
			if om := checkFinAck(f, up, pc.key, c.id, c.seq, true, "caller->callee"); om != nil {
				fail(om)
				return
			}
			upAcked = true
		case wire.FrameReset:
			fail(omitted("truncated", "peer reset the stream: "+string(f.Data)))
			return
		}
	}
	pw.Close()
	io.Copy(io.Discard, resp.Body)
	client.Close()
	upFin := <-up.fin
	lat := time.Since(c.start)
	e.confirmed.Inc()
	e.bytesSent.Add(float64(upFin.n))
	e.bytesConfirmed.Add(float64(upFin.n + down.m.n))
	e.duration.Observe(lat.Seconds())
	rec := c.record(tallyv1.RecordKind_RECORD_KIND_CONFIRMED)
	ds := down.m.sum()
	rec.RequestDigest, rec.RequestBytes = upFin.sum[:], upFin.n
	rec.ResponseDigest, rec.ResponseBytes = ds[:], down.m.n
	rec.LatencyNanos = int64(lat)
	p.rec.settle(c.sent, rec)
}

// serveInboundTCP is the callee side of a TCP stream: it dials the app and
// relays both directions, confirming each FIN.
func (p *Proxy) serveInboundTCP(w http.ResponseWriter, r *http.Request, m *inMessage) {
	d := net.Dialer{Timeout: 5 * time.Second}
	ac, err := d.DialContext(r.Context(), "tcp", p.cfg.AppAddr)
	if err != nil {
		p.calleeOmission(m, "unconfirmed", "app did not accept the connection: "+err.Error())
		refuse(w, "unconfirmed", http.StatusBadGateway, "app unreachable")
		return
	}
	app := ac.(*net.TCPConn)
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	fw := &frameWriter{w: w, flush: rc.Flush}
	up, down := newDirection(), newDirection()

	var wg sync.WaitGroup
	downErr := make(chan error, 1)
	wg.Go(func() {
		err := pump(app, fw, down, p.cfg.MaxFrameBytes)
		if err != nil {
			fw.write(wire.Frame{Type: wire.FrameReset, Data: []byte(truncateString("app connection: "+err.Error(), 256))})
		}
		downErr <- err
	})
	fail := func(om *omission) {
		resetConn(app)
		wg.Wait()
		p.calleeOmission(m, om.kind, om.detail)
	}

	fr := wire.NewFrameReader(r.Body, p.cfg.MaxFrameBytes)
	var upDone, downAcked bool
	for !(upDone && downAcked) {
		select {
		case err := <-downErr:
			if err != nil {
				fail(omitted("truncated", fmt.Sprintf("app connection failed after %d bytes: %v", down.m.n, err)))
				return
			}
		default:
		}
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, wire.ErrFrameTooLarge) {
				p.met.limitHits.WithLabelValues("frame_bytes").Inc()
			}
			if errors.Is(err, wire.ErrBadFrame) || errors.Is(err, wire.ErrFrameTooLarge) {
				p.met.badInput.WithLabelValues("tcp_frame").Inc()
			}
			fail(asOmission(fmt.Errorf("stream from caller: %w", err), up.m.n+down.m.n))
			return
		}
		switch f.Type {
		case wire.FrameData:
			up.m.add(f.Data)
			if _, err := app.Write(f.Data); err != nil {
				fw.write(wire.Frame{Type: wire.FrameReset, Data: []byte("app connection: write failed")})
				fail(omitted("truncated", fmt.Sprintf("app connection failed after %d bytes: %v", up.m.n, err)))
				return
			}
		case wire.FrameFin:
			if om := checkFin(f, up, "caller->callee"); om != nil {
				fw.write(wire.Frame{Type: wire.FrameReset, Data: []byte(om.Error())})
				fail(om)
				return
			}
			app.CloseWrite()
			fs := finState{sum: up.m.sum(), n: up.m.n}
			up.fin <- fs
			mac := receipt.Sign(m.peer.key, tcpReceipt(m.id, m.seq, true, fs))
			if err := fw.write(wire.Frame{Type: wire.FrameFinAck, Count: uint64(fs.n), Digest: fs.sum, MAC: mac}); err != nil {
				fail(asOmission(err, up.m.n+down.m.n))
				return
			}
			upDone = true
		case wire.FrameFinAck:
			if om := checkFinAck(f, down, m.peer.key, m.id, m.seq, false, "callee->caller"); om != nil {
				fail(om)
				return
			}
			downAcked = true
		case wire.FrameReset:
			fail(omitted("truncated", "caller reset the stream: "+string(f.Data)))
			return
		}
	}
	wg.Wait()
	app.Close()
	m.edge.received.Inc()
	upFin, downFin := <-up.fin, <-down.fin
	p.rec.add(&tallyv1.Record{
		Kind: tallyv1.RecordKind_RECORD_KIND_RECEIVED, MessageId: m.id, Seq: m.seq,
		Source: m.edge.source, Destination: p.cfg.Service, SourceIdentity: m.peer.peer.String(),
		DestinationIdentity: p.agent.selfID, Protocol: "tcp", Reporter: "callee", RequestDigest: upFin.sum[:], ResponseDigest: downFin.sum[:],
		RequestBytes: upFin.n, ResponseBytes: downFin.n, PeerInstanceId: m.peerInstance,
	})
}

// truncateString cuts s to at most n bytes without splitting a character
// (a RESET reason must stay valid UTF-8).
func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
