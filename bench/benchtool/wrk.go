package main

import (
	"bufio"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run printed.
type wrkResult struct {
	RPS      float64
	P50, P99 time.Duration
	Requests int64
	Duration time.Duration
	Non2xx   int64 // wrk counts statuses > 399 here ("Non-2xx or 3xx responses")
	// Socket errors.
	Connect, Read, Write, Timeout int64
}

// Errors reports whether any request failed.
func (r wrkResult) Errors() bool {
	return r.Non2xx+r.Connect+r.Read+r.Write+r.Timeout > 0
}

// parseWrk reads the output of `wrk --latency`:
//
//	  Latency Distribution
//	     50%  123.00us
//	     99%    1.23ms
//	  123456 requests in 3.00s, 123.45MB read
//	  Socket errors: connect 0, read 0, write 0, timeout 0
//	  Non-2xx or 3xx responses: 12
//	Requests/sec:  41152.00
//
// The error lines are optional (wrk prints them only when non-zero); the others are
// required.
func parseWrk(r io.Reader) (wrkResult, error) {
	var res wrkResult
	var haveRPS, haveReq, inDist bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case line == "Latency Distribution":
			inDist = true
			continue
		case inDist && len(f) == 2 && strings.HasSuffix(f[0], "%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return res, fmt.Errorf("latency %s: %w", f[0], err)
			}
			switch f[0] {
			case "50%":
				res.P50 = d
			case "99%":
				res.P99 = d
			}
			continue
		}
		inDist = false
		switch {
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return res, fmt.Errorf("requests/sec %q: %w", f[1], err)
			}
			res.RPS, haveRPS = v, true
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return res, fmt.Errorf("requests %q: %w", f[0], err)
			}
			d, err := parseWrkDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return res, fmt.Errorf("test duration: %w", err)
			}
			res.Requests, res.Duration, haveReq = n, d, true
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			rest := strings.TrimPrefix(line, "Socket errors:")
			for _, part := range strings.Split(rest, ",") {
				kv := strings.Fields(part)
				if len(kv) != 2 {
					return res, fmt.Errorf("socket errors %q", line)
				}
				n, err := strconv.ParseInt(kv[1], 10, 64)
				if err != nil {
					return res, fmt.Errorf("socket errors %q: %w", line, err)
				}
				switch kv[0] {
				case "connect":
					res.Connect = n
				case "read":
					res.Read = n
				case "write":
					res.Write = n
				case "timeout":
					res.Timeout = n
				default:
					return res, fmt.Errorf("socket errors: unknown kind %q", kv[0])
				}
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(f) == 5:
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return res, fmt.Errorf("non-2xx %q: %w", f[4], err)
			}
			res.Non2xx = n
		}
	}
	if err := sc.Err(); err != nil {
		return res, err
	}
	var missing []string
	if !haveRPS {
		missing = append(missing, "Requests/sec")
	}
	if !haveReq {
		missing = append(missing, "requests in")
	}
	if res.P50 == 0 || res.P99 == 0 {
		missing = append(missing, "Latency Distribution 50%/99%")
	}
	if len(missing) > 0 {
		return res, fmt.Errorf("no %s line in wrk output", strings.Join(missing, ", "))
	}
	return res, nil
}

// parseWrkDuration reads wrk's time format: 123.45us, 1.23ms, 1.00s, 2.00m, 1.00h.
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		d      time.Duration
	}{
		{suffix: "us", d: time.Microsecond},
		{suffix: "ms", d: time.Millisecond},
		{suffix: "s", d: time.Second},
		{suffix: "m", d: time.Minute},
		{suffix: "h", d: time.Hour},
	}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			// The bound keeps the conversion exact in range: a float64 of
			// math.MaxInt64 or above (or NaN, Inf) turns into a negative Duration.
			if err != nil || !(v >= 0) || v*float64(u.d) >= math.MaxInt64 {
				return 0, fmt.Errorf("duration %q", s)
			}
			return time.Duration(v * float64(u.d)), nil
		}
	}
	return 0, fmt.Errorf("duration %q: unknown unit", s)
}

// rawHeader are the columns of the raw per-round CSV.
var rawHeader = []string{
	"round", "config", "size", "conc", "status", "error",
	"rps", "p50_us", "p99_us", "requests", "duration_s",
	"non2xx", "err_connect", "err_read", "err_write", "err_timeout",
	"proxy_cpu_us_per_req", "backend_cpu_us_per_req", "aux_cpu_us_per_req",
	"rss_hop_a_mib", "rss_hop_b_mib", "rss_max_proc_mib", "load1",
	"wrk_cpu_us_per_req", "other_cpu_pct", "steal_pct",
}

// disturbedPct is the share of the machine's CPU used by others (other_cpu_pct) from
// which a measurement is flagged as disturbed.
const disturbedPct = 25

// errMeasurement marks a measurement that failed; the row is still recorded.
var errMeasurement = errors.New("measurement failed")

// cmdRecord parses one wrk output, works out CPU per request and peak RSS from the
// samples taken around the run, and appends one row to the raw CSV.
func cmdRecord(args []string) error {
	fs := flag.NewFlagSet("record", flag.ContinueOnError)
	raw := fs.String("raw", "", "raw CSV to append to")
	wrkFile := fs.String("wrk", "", "wrk output")
	wrkExit := fs.Int("wrk-exit", 0, "wrk's exit status")
	round := fs.Int("round", 0, "round number")
	config := fs.String("config", "", "configuration name")
	size := fs.String("size", "", "response size name")
	conc := fs.String("conc", "", "concurrency name")
	hz := fs.Float64("hz", 100, "clock ticks per second (getconf CLK_TCK)")
	cpu := fs.String("cpu", "", "proxy ticks before and after, \"T0 T1\" (empty: no proxy)")
	bcpu := fs.String("backend-cpu", "", "backend ticks before and after")
	acpu := fs.String("aux-cpu", "", "auxiliary (control plane) ticks before and after")
	rss := fs.String("rss", "", "`hwm` output after the run: KiB per hop, then max per process")
	load := fs.String("load", "", "1-minute load average")
	note := fs.String("note", "", "error found by the caller (process died, ...)")
	sys0 := fs.String("sys0", "", "`benchtool sys` before the run")
	sys1 := fs.String("sys1", "", "`benchtool sys` after the run")
	wrkCPU := fs.Float64("wrk-cpu", -1, "CPU seconds wrk used (negative: unknown)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *raw == "" || *config == "" {
		return fmt.Errorf("want -raw and -config")
	}

	row := map[string]string{
		"round": strconv.Itoa(*round), "config": *config, "size": *size, "conc": *conc,
		"load1": *load,
	}
	var problems []string
	if *note != "" {
		problems = append(problems, *note)
	}
	var res wrkResult
	if *wrkFile != "" {
		f, err := os.Open(*wrkFile)
		if err != nil {
			return err
		}
		res, err = parseWrk(f)
		f.Close()
		if err != nil {
			problems = append(problems, "wrk output: "+err.Error())
		}
	} else if *note == "" {
		problems = append(problems, "no wrk output")
	}
	if *wrkExit != 0 {
		problems = append(problems, fmt.Sprintf("wrk exit %d", *wrkExit))
	}
	if res.Non2xx > 0 {
		problems = append(problems, fmt.Sprintf("%d non-2xx", res.Non2xx))
	}
	if n := res.Connect + res.Read + res.Write + res.Timeout; n > 0 {
		problems = append(problems, fmt.Sprintf("socket errors connect %d read %d write %d timeout %d",
			res.Connect, res.Read, res.Write, res.Timeout))
	}
	if res.Requests > 0 {
		row["rps"] = fmt.Sprintf("%.2f", res.RPS)
		row["p50_us"] = fmt.Sprintf("%.1f", float64(res.P50)/float64(time.Microsecond))
		row["p99_us"] = fmt.Sprintf("%.1f", float64(res.P99)/float64(time.Microsecond))
		row["requests"] = strconv.FormatInt(res.Requests, 10)
		row["duration_s"] = fmt.Sprintf("%.2f", res.Duration.Seconds())
	} else if len(problems) == 0 {
		problems = append(problems, "no request completed")
	}
	row["non2xx"] = strconv.FormatInt(res.Non2xx, 10)
	row["err_connect"] = strconv.FormatInt(res.Connect, 10)
	row["err_read"] = strconv.FormatInt(res.Read, 10)
	row["err_write"] = strconv.FormatInt(res.Write, 10)
	row["err_timeout"] = strconv.FormatInt(res.Timeout, 10)

	for col, pair := range map[string]string{
		"proxy_cpu_us_per_req": *cpu, "backend_cpu_us_per_req": *bcpu, "aux_cpu_us_per_req": *acpu,
	} {
		if pair == "" || res.Requests == 0 {
			continue
		}
		t := strings.Fields(pair)
		if len(t) != 2 {
			problems = append(problems, fmt.Sprintf("%s: samples %q", col, pair))
			continue
		}
		t0, err0 := strconv.ParseFloat(t[0], 64)
		t1, err1 := strconv.ParseFloat(t[1], 64)
		if err0 != nil || err1 != nil || t1 < t0 {
			problems = append(problems, fmt.Sprintf("%s: samples %q", col, pair))
			continue
		}
		row[col] = fmt.Sprintf("%.1f", (t1-t0)/(*hz)*1e6/float64(res.Requests))
	}
	// Noise: machine CPU not used by the measured processes nor wrk, as a share of all
	// CPUs over the run. The user+nice+system ticks of every task are compared, so
	// loopback softirq work may show up here as a small steady share.
	if s0, s1 := strings.Fields(*sys0), strings.Fields(*sys1); len(s0) == 3 && len(s1) == 3 && res.Requests > 0 {
		var a, b [3]float64
		for i := range 3 {
			a[i], _ = strconv.ParseFloat(s0[i], 64)
			b[i], _ = strconv.ParseFloat(s1[i], 64)
		}
		if total := b[1] - a[1]; total > 0 {
			ours := 0.0
			for _, pair := range []string{*cpu, *bcpu, *acpu} {
				if t := strings.Fields(pair); len(t) == 2 {
					t0, _ := strconv.ParseFloat(t[0], 64)
					t1, _ := strconv.ParseFloat(t[1], 64)
					ours += t1 - t0
				}
			}
			if *wrkCPU >= 0 {
				ours += *wrkCPU * (*hz)
				row["wrk_cpu_us_per_req"] = fmt.Sprintf("%.1f", *wrkCPU*1e6/float64(res.Requests))
				row["other_cpu_pct"] = fmt.Sprintf("%.1f", max(0, b[0]-a[0]-ours)/total*100)
			}
			row["steal_pct"] = fmt.Sprintf("%.1f", (b[2]-a[2])/total*100)
		}
	}
	if o, err := strconv.ParseFloat(row["other_cpu_pct"], 64); err == nil && o >= disturbedPct && len(problems) > 0 {
		problems = append(problems, fmt.Sprintf("machine busy: %.0f%% other CPU", o))
	}
	if *rss != "" {
		v := strings.Fields(*rss)
		cols := []string{"rss_hop_a_mib", "rss_hop_b_mib"}
		for i, s := range v {
			kib, err := strconv.ParseFloat(s, 64)
			if err != nil {
				problems = append(problems, fmt.Sprintf("rss %q", *rss))
				break
			}
			col := "rss_max_proc_mib"
			if i < len(v)-1 && i < len(cols) {
				col = cols[i]
			}
			row[col] = fmt.Sprintf("%.1f", kib/1024)
		}
	}
	row["status"] = "ok"
	if len(problems) > 0 {
		row["status"] = "error"
		row["error"] = strings.Join(problems, "; ")
	}
	if err := appendRow(*raw, row); err != nil {
		return err
	}

	line := fmt.Sprintf("round %d %-8s %-4s %-4s", *round, *config, *size, *conc)
	if res.Requests > 0 {
		line += fmt.Sprintf("  %9.0f req/s  p50 %8s  p99 %8s", res.RPS, fmtUS(row["p50_us"]), fmtUS(row["p99_us"]))
	}
	if c := row["proxy_cpu_us_per_req"]; c != "" {
		line += fmt.Sprintf("  proxy CPU %s µs/req", c)
	}
	if o := row["other_cpu_pct"]; o != "" {
		line += fmt.Sprintf("  other CPU %s%%", o)
	}
	if r := row["rss_max_proc_mib"]; r != "" {
		line += fmt.Sprintf("  RSS %s/%s MiB", row["rss_hop_a_mib"], row["rss_hop_b_mib"])
	}
	if row["status"] != "ok" {
		line += "  ERROR: " + row["error"]
		fmt.Println(line)
		return errMeasurement
	}
	fmt.Println(line)
	return nil
}

func appendRow(path string, row map[string]string) error {
	fi, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if statErr != nil || fi.Size() == 0 {
		w.Write(rawHeader)
	}
	rec := make([]string, len(rawHeader))
	for i, c := range rawHeader {
		rec[i] = row[c]
	}
	w.Write(rec)
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fmtUS formats a microsecond value for people: 812µs, 1.23ms, 1.50s.
func fmtUS(s string) string {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return "—"
	}
	return fmtMicros(v)
}

func fmtMicros(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fs", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fms", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.2fms", v/1e3)
	default:
		return fmt.Sprintf("%.0fµs", v)
	}
}
