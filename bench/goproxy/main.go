// Command goproxy is one hop of the Go baseline: a net/http/httputil.ReverseProxy.
//
// Two of them make the pair the benchmark compares tally with:
//
//	wrk -> goproxy A (plain HTTP in; TLS-originating: -upstream https://..., client cert)
//	    -> goproxy B (TLS-terminating, client cert required) -> backend (HTTP/1.1)
//
// Between the hops Go negotiates HTTP/2 by ALPN (ForceAttemptHTTP2 is set because a
// custom TLS config otherwise turns it off); with -h2=false it stays on HTTP/1.1.
// The first upstream response's protocol is logged to stderr so the run shows which.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Config is one hop's configuration; zero values are documented per field.
type Config struct {
	Listen   string // address to listen on
	Upstream string // http:// or https:// URL of the next hop

	// Serving TLS: when CertFile is set the listener is TLS 1.3; when ClientCA is
	// also set a client certificate signed by it is required.
	CertFile, KeyFile, ClientCA string

	// Originating TLS (Upstream is https://): UpstreamCA verifies the next hop, whose
	// name is UpstreamName (empty: the URL's host); UpstreamCert/UpstreamKey is the
	// client certificate presented (empty: none).
	UpstreamCA, UpstreamCert, UpstreamKey, UpstreamName string

	H2 bool // attempt HTTP/2 to an https upstream
}

func main() {
	var c Config
	flag.StringVar(&c.Listen, "listen", "127.0.0.1:0", "address to listen on")
	flag.StringVar(&c.Upstream, "upstream", "", "URL of the next hop (http:// or https://)")
	flag.StringVar(&c.CertFile, "tls-cert", "", "serve TLS with this certificate (PEM)")
	flag.StringVar(&c.KeyFile, "tls-key", "", "key of -tls-cert (PEM)")
	flag.StringVar(&c.ClientCA, "client-ca", "", "require client certificates signed by this CA (PEM)")
	flag.StringVar(&c.UpstreamCA, "upstream-ca", "", "CA that signs the upstream's certificate (PEM)")
	flag.StringVar(&c.UpstreamCert, "upstream-cert", "", "client certificate for the upstream (PEM)")
	flag.StringVar(&c.UpstreamKey, "upstream-key", "", "key of -upstream-cert (PEM)")
	flag.StringVar(&c.UpstreamName, "upstream-name", "", "expected name in the upstream's certificate")
	flag.BoolVar(&c.H2, "h2", true, "attempt HTTP/2 (ALPN) to an https upstream")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "goproxy:", err)
		os.Exit(1)
	}
}

func run(c Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	target, err := url.Parse(c.Upstream)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return fmt.Errorf("parsing -upstream %q: want http://host:port or https://host:port", c.Upstream)
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if target.Scheme == "https" {
		tc, err := clientTLS(c)
		if err != nil {
			return err
		}
		tr.TLSClientConfig = tc
		tr.ForceAttemptHTTP2 = c.H2
	}

	var once sync.Once
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
		},
		Transport:  tr,
		BufferPool: newBufferPool(),
		ErrorLog:   log.New(os.Stderr, "goproxy: ", log.LstdFlags),
		ModifyResponse: func(resp *http.Response) error {
			once.Do(func() { log.Printf("goproxy: upstream %s speaks %s", target.Host, resp.Proto) })
			return nil
		},
	}

	srv := &http.Server{
		Handler:           rp,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(os.Stderr, "goproxy: ", log.LstdFlags),
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.Listen, err)
	}
	errc := make(chan error, 1)
	if c.CertFile != "" {
		sc, err := serverTLS(c)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = sc // ServeTLS adds "h2" to NextProtos
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	log.Printf("goproxy: listening on %s (tls=%v) -> %s", ln.Addr(), c.CertFile != "", target)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func clientTLS(c Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: c.UpstreamName}
	if c.UpstreamCA != "" {
		pool, err := loadPool(c.UpstreamCA)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if c.UpstreamCert != "" {
		cert, err := tls.LoadX509KeyPair(c.UpstreamCert, c.UpstreamKey)
		if err != nil {
			return nil, fmt.Errorf("loading upstream client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func serverTLS(c Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading server certificate: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if c.ClientCA != "" {
		pool, err := loadPool(c.ClientCA)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("reading CA %q: no certificate", file)
	}
	return pool, nil
}

// bufferPool reuses the 32 KiB copy buffers, as a tuned Go proxy would.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
