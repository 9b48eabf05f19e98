// Command soakload sends GET requests to one loopback URL at a fixed rate for a
// bounded time, for bench/soak.sh. The load is open loop: request i is due at
// start + i/rate whatever happened to the earlier ones; a due request that finds
// every worker busy is counted as missed, not queued, so a slow target shows as
// missed requests instead of a silently lower rate.
//
//	soakload -url http://127.0.0.1:PORT/1k [-host backend] [-rate 1000] [-duration 10m]
//	         [-workers 64] [-timeout 5s] [-progress 1m]
//
// It prints a progress line to stderr every -progress and one summary line to stdout
// at the end:
//
//	soakload: due=N ok=N non2xx=N errors=N missed=N rate=R/s p50=D p99=D max=D
//
// Exit: 0 every due request answered 2xx; 3 some failed or were missed; 2 usage;
// SIGINT/SIGTERM end the run early with the summary of what was sent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	u := flag.String("url", "", "loopback http:// URL to GET (required)")
	host := flag.String("host", "", "Host header (tally's outbound routes by it)")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 10*time.Minute, "how long to send (at most 24h)")
	workers := flag.Int("workers", 64, "concurrent requests at most")
	timeout := flag.Duration("timeout", 5*time.Second, "per request, body included")
	progress := flag.Duration("progress", time.Minute, "interval of progress lines on stderr (0: none)")
	flag.Parse()
	if err := check(*u, *rate, *duration, *workers, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "soakload:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s := run(ctx, config{url: *u, host: *host, rate: *rate, duration: *duration,
		workers: *workers, timeout: *timeout, progress: *progress})
	fmt.Println("soakload: " + s.String())
	if s.nonOK+s.errors+s.missed > 0 {
		if s.firstErr != "" {
			fmt.Fprintln(os.Stderr, "soakload: first error:", s.firstErr)
		}
		os.Exit(3)
	}
}

// check refuses anything but a bounded run against a loopback http:// URL.
func check(raw string, rate float64, d time.Duration, workers int, timeout time.Duration) error {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return fmt.Errorf("-url %q: want http://127.0.0.1:PORT/PATH", raw)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("-url %q: only http:// is supported", raw)
	}
	h := u.Hostname()
	if ip := net.ParseIP(h); (ip == nil || !ip.IsLoopback()) && h != "localhost" {
		return fmt.Errorf("-url %q: the host must be a loopback address", raw)
	}
	switch {
	case rate <= 0 || rate > 1e6 || math.IsNaN(rate):
		return fmt.Errorf("-rate %v: want 0 < rate <= 1e6", rate)
	case d <= 0 || d > 24*time.Hour:
		return fmt.Errorf("-duration %v: want 0 < duration <= 24h", d)
	case workers < 1 || workers > 10000:
		return fmt.Errorf("-workers %d: want 1 to 10000", workers)
	case timeout <= 0:
		return fmt.Errorf("-timeout %v: want > 0", timeout)
	}
	return nil
}

type config struct {
	url, host string
	rate      float64
	duration  time.Duration
	workers   int
	timeout   time.Duration
	progress  time.Duration
}

// stats are the counts of a run. Safe for concurrent use.
type stats struct {
	due, ok, nonOK, errors, missed atomic.Int64
	lat                            histogram
	start                          time.Time

	mu       sync.Mutex // guards firstErr
	firstErr string
}

func (s *stats) fail(msg string) {
	s.mu.Lock()
	if s.firstErr == "" {
		s.firstErr = msg
	}
	s.mu.Unlock()
}

// summary is a snapshot of stats.
type summary struct {
	due, ok, nonOK, errors, missed int64
	elapsed                        time.Duration
	p50, p99, max                  time.Duration
	firstErr                       string
}

func (s *stats) summary() summary {
	s.mu.Lock()
	fe := s.firstErr
	s.mu.Unlock()
	return summary{
		due: s.due.Load(), ok: s.ok.Load(), nonOK: s.nonOK.Load(), errors: s.errors.Load(),
		missed: s.missed.Load(), elapsed: time.Since(s.start),
		p50: s.lat.quantile(0.50), p99: s.lat.quantile(0.99), max: s.lat.maximum(), firstErr: fe,
	}
}

func (s summary) String() string {
	r := 0.0
	if s.elapsed > 0 {
		r = float64(s.ok) / s.elapsed.Seconds()
	}
	return fmt.Sprintf("due=%d ok=%d non2xx=%d errors=%d missed=%d rate=%.1f/s p50=%v p99=%v max=%v",
		s.due, s.ok, s.nonOK, s.errors, s.missed, r, round(s.p50), round(s.p99), round(s.max))
}

func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(10 * time.Microsecond)
}

func run(ctx context.Context, cfg config) summary {
	tr := &http.Transport{
		MaxIdleConns:        cfg.workers,
		MaxIdleConnsPerHost: cfg.workers,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: cfg.timeout}
	s := &stats{start: time.Now()}
	jobs := make(chan struct{}, cfg.workers)
	var wg sync.WaitGroup
	for range cfg.workers {
		wg.Go(func() {
			for range jobs {
				get(ctx, client, cfg, s)
			}
		})
	}
	var pwg sync.WaitGroup
	pctx, stopProgress := context.WithCancel(ctx)
	defer func() { stopProgress(); pwg.Wait() }()
	if cfg.progress > 0 {
		pwg.Go(func() {
			t := time.NewTicker(cfg.progress)
			defer t.Stop()
			for {
				select {
				case <-pctx.Done():
					return
				case <-t.C:
					fmt.Fprintf(os.Stderr, "soakload: %s after %v\n", s.summary(), time.Since(s.start).Round(time.Second))
				}
			}
		})
	}

	interval := time.Duration(float64(time.Second) / cfg.rate)
	n := int64(cfg.duration / interval)
	timer := time.NewTimer(0)
	defer timer.Stop()
dispatch:
	for i := range n {
		if wait := time.Until(s.start.Add(time.Duration(i) * interval)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				break dispatch
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			break
		}
		s.due.Add(1)
		select {
		case jobs <- struct{}{}:
		default:
			s.missed.Add(1)
		}
	}
	close(jobs)
	wg.Wait()
	return s.summary()
}

func get(ctx context.Context, c *http.Client, cfg config, s *stats) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.url, nil)
	if err != nil {
		s.errors.Add(1)
		s.fail(err.Error())
		return
	}
	if cfg.host != "" {
		req.Host = cfg.host
	}
	t0 := time.Now()
	resp, err := c.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	switch {
	case err != nil:
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return // the run was ended early: not the target's fault
		}
		s.errors.Add(1)
		s.fail(err.Error())
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		s.nonOK.Add(1)
		s.fail(fmt.Sprintf("status %s, Tally-Error %q", resp.Status, resp.Header.Get("Tally-Error")))
	default:
		s.ok.Add(1)
		s.lat.add(time.Since(t0))
	}
}

// histogram holds latencies in buckets 2% wide from 1µs, bounded memory
// whatever the run's length. Safe for concurrent use.
type histogram struct {
	mu     sync.Mutex // guards following
	counts [1200]int64
	n      int64
	max    time.Duration
}

const growth = 1.02

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	return min(int(math.Log(us)/math.Log(growth))+1, 1199)
}

func (h *histogram) add(d time.Duration) {
	b := bucketOf(d)
	h.mu.Lock()
	h.counts[b]++
	h.n++
	h.max = max(h.max, d)
	h.mu.Unlock()
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(math.Pow(growth, float64(i))*float64(time.Microsecond)), h.max)
		}
	}
	return h.max
}

func (h *histogram) maximum() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max
}
