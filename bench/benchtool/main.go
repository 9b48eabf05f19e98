// Command benchtool holds the small helpers bench/run.sh needs and bash does badly:
// free ports, throwaway certificates, readiness waits, a body-checking probe, process
// CPU and peak-RSS sampling from /proc, wrk output parsing, and the final report.
//
//	benchtool ports N                      N distinct free loopback ports
//	benchtool certs DIR                    CA, server and client certificates (ECDSA P-256)
//	benchtool wait-file -timeout D PATH    until PATH exists
//	benchtool wait-http -timeout D URL     until GET URL answers 200
//	benchtool probe -timeout D -host H -size N URL   until GET URL returns the backend's N-byte body
//	benchtool cpu PID...                   utime+stime (+ reaped children) of the trees, clock ticks
//	benchtool hwm [-reset] PID...          VmHWM KiB per tree (summed over its processes), then max per process
//	benchtool tree PID...                  the PIDs of the trees, roots first
//	benchtool sys                          machine CPU ticks: busy (user+nice+system), total, steal
//	benchtool record [flags]               parse one wrk output, append a raw CSV row
//	benchtool report [flags]               medians, ratios, Markdown table, targets
//	benchtool accounting -caller URL -callee URL -control URL   every message confirmed, received and in the ledger
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/tally-mesh/tally/bench/payload"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "ports":
		err = cmdPorts(args)
	case "certs":
		err = cmdCerts(args)
	case "wait-file":
		err = cmdWaitFile(args)
	case "wait-http":
		err = cmdWaitHTTP(args)
	case "probe":
		err = cmdProbe(args)
	case "cpu":
		err = cmdCPU(args)
	case "hwm":
		err = cmdHWM(args)
	case "tree":
		err = cmdTree(args)
	case "sys":
		err = cmdSys(args)
	case "record":
		err = cmdRecord(args)
	case "report":
		err = cmdReport(args)
	case "accounting":
		err = cmdAccounting(args)
	default:
		usage()
	}
	switch {
	case err == nil:
	case errors.Is(err, errMeasurement):
		os.Exit(3) // the row is recorded and the line printed
	case errors.Is(err, errTargets):
		os.Exit(4)
	default:
		fmt.Fprintf(os.Stderr, "benchtool %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchtool ports|certs|wait-file|wait-http|probe|cpu|hwm|tree|sys|record|report|accounting ...")
	os.Exit(2)
}

// cmdPorts holds N listeners open at once, so the ports are distinct, then closes them.
func cmdPorts(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want one argument, the count")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > 100 {
		return fmt.Errorf("count %q: want 1..100", args[0])
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("listening: %w", err)
		}
		lns = append(lns, ln)
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

func cmdWaitFile(args []string) error {
	fs := flag.NewFlagSet("wait-file", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return fmt.Errorf("want -timeout D PATH")
	}
	path := fs.Arg(0)
	deadline := time.Now().Add(*timeout)
	for {
		fi, err := os.Stat(path)
		if err == nil && fi.Size() > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not there after %s", path, *timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func cmdWaitHTTP(args []string) error {
	fs := flag.NewFlagSet("wait-http", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return fmt.Errorf("want -timeout D URL")
	}
	u := fs.Arg(0)
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(*timeout)
	var last string
	for {
		resp, err := c.Get(u)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s: no 200 after %s (last: %s)", u, *timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cmdProbe checks a whole chain end to end: status 200 and the exact body.
func cmdProbe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after")
	host := fs.String("host", "", "Host header")
	size := fs.Int("size", 1024, "expected body size")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return fmt.Errorf("want [-timeout D] [-host H] [-size N] URL")
	}
	u := fs.Arg(0)
	want := payload.Body(*size)
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(*timeout)
	var last string
	for {
		last = probeOnce(c, u, *host, want)
		if last == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET %s (Host %q): no good answer after %s (last: %s)", u, *host, *timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// probeOnce returns "" on success, else what was wrong.
func probeOnce(c *http.Client, u, host string, want []byte) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err.Error()
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return fmt.Sprintf("status %s, reading body: %v", resp.Status, err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Sprintf("status %s, body %.200q", resp.Status, got)
	case len(got) != len(want):
		return fmt.Sprintf("body of %d bytes, want %d", len(got), len(want))
	case string(got) != string(want):
		return "body differs from the backend's"
	}
	return ""
}
