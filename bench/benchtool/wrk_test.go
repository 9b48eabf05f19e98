package main

import (
	"strings"
	"testing"
	"time"
)

const wrkOK = `Running 2s test @ http://127.0.0.1:18081/1k
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.69ms    6.47ms  56.85ms   92.02%
    Req/Sec    23.22k     8.11k   35.40k    64.29%
  Latency Distribution
     50%  503.00us
     75%    1.55ms
     90%    7.01ms
     99%   37.80ms
  97037 requests in 2.10s, 105.68MB read
Requests/sec:  46176.85
Transfer/sec:     50.29MB
`

const wrkErrors = `Running 1s test @ http://127.0.0.1:18081/nope
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   378.37us    1.27ms  12.25ms   92.82%
    Req/Sec    23.59k     9.24k   29.08k    81.82%
  Latency Distribution
     50%   36.00us
     75%   50.00us
     90%  644.00us
     99%    1.00s
  25777 requests in 1.10s, 4.33MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 25777
Requests/sec:  23438.15
Transfer/sec:      3.93MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    wrkResult
		wantErr string
	}{
		{
			name: "clean run",
			in:   wrkOK,
			want: wrkResult{RPS: 46176.85, P50: 503 * time.Microsecond, P99: 37800 * time.Microsecond,
				Requests: 97037, Duration: 2100 * time.Millisecond},
		},
		{
			name: "errors reported",
			in:   wrkErrors,
			want: wrkResult{RPS: 23438.15, P50: 36 * time.Microsecond, P99: time.Second,
				Requests: 25777, Duration: 1100 * time.Millisecond, Non2xx: 25777,
				Connect: 1, Read: 2, Write: 3, Timeout: 4},
		},
		{
			name:    "connection refused",
			in:      "unable to connect to 127.0.0.1:18081 Connection refused\n",
			wantErr: "no Requests/sec, requests in, Latency Distribution 50%/99% line",
		},
		{
			name:    "no --latency",
			in:      strings.Replace(wrkOK, "  Latency Distribution\n", "", 1),
			wantErr: "Latency Distribution",
		},
		{
			name:    "bad unit",
			in:      strings.Replace(wrkOK, "503.00us", "503.00xx", 1),
			wantErr: "unknown unit",
		},
		{
			// Found by FuzzParseWrk: 1e300 hours overflowed into a negative Duration.
			name:    "duration out of range",
			in:      strings.Replace(wrkOK, "37.80ms", "1e300h", 1),
			wantErr: `latency 99%: duration "1e300h"`,
		},
		{
			name:    "not a number",
			in:      strings.Replace(wrkOK, "503.00us", "NaNus", 1),
			wantErr: `latency 50%: duration "NaNus"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseWrk: got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseWrk: %v", err)
			}
			// Durations parsed from floats may be off by a rounding nanosecond.
			near := func(a, b time.Duration) bool { return (a - b).Abs() <= time.Nanosecond }
			if !near(got.P50, tt.want.P50) || !near(got.P99, tt.want.P99) || !near(got.Duration, tt.want.Duration) {
				t.Errorf("durations: got p50 %v p99 %v dur %v, want %v %v %v",
					got.P50, got.P99, got.Duration, tt.want.P50, tt.want.P99, tt.want.Duration)
			}
			got.P50, got.P99, got.Duration = tt.want.P50, tt.want.P99, tt.want.Duration
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if got.Errors() != (tt.want.Non2xx+tt.want.Connect > 0) {
				t.Errorf("Errors() = %v", got.Errors())
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantPPID  int
		wantTicks uint64
	}{
		{
			name:      "plain name",
			in:        "42 (nginx) S 41 42 42 0 -1 4194624 100 0 0 0 7 3 2 1 20 0 1 0 100 1000 200",
			wantPPID:  41,
			wantTicks: 13,
		},
		{
			name:      "name with spaces and parens",
			in:        "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 100 50 0 0 20 0 3 0",
			wantPPID:  1,
			wantTicks: 150,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if err != nil {
				t.Fatalf("parseStat: %v", err)
			}
			if got.ppid != tt.wantPPID || got.ticks != tt.wantTicks {
				t.Errorf("got ppid %d ticks %d, want %d %d", got.ppid, got.ticks, tt.wantPPID, tt.wantTicks)
			}
		})
	}
}

func FuzzParseWrk(f *testing.F) {
	f.Add(wrkOK)
	f.Add(wrkErrors)
	f.Add("  Latency Distribution\n     50%  1.5\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseWrk(strings.NewReader(in))
		if err == nil && (got.P50 <= 0 || got.P99 <= 0) {
			t.Fatalf("accepted output without latencies: %+v", got)
		}
	})
}
