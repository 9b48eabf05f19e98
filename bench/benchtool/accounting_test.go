package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const metricsText = `# HELP tally_messages_confirmed_total Sent messages whose receipt verified.
# TYPE tally_messages_confirmed_total counter
tally_messages_confirmed_total{destination="backend",source="client"} 1200
tally_messages_confirmed_total{destination="other",source="client"} 34
tally_ledger_size 1234
odd_label{path="/a b{c}",q="say \"hi\" }"} 2 1700000000000
process_cpu_seconds_total 1.5e+01
`

func TestSumMetrics(t *testing.T) {
	got, err := sumMetrics(strings.NewReader(metricsText))
	if err != nil {
		t.Fatalf("sumMetrics: %v", err)
	}
	want := map[string]float64{
		"tally_messages_confirmed_total": 1234,
		"tally_ledger_size":              1234,
		"odd_label":                      2,
		"process_cpu_seconds_total":      15,
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}

	for _, bad := range []string{"x{a=\"b\" 3\n", "x 1 2 3\n", "x one\n"} {
		if _, err := sumMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("sumMetrics(%q): no error", bad)
		}
	}
}

func FuzzSumMetrics(f *testing.F) {
	f.Add(metricsText)
	f.Add("x{a=\"\\\"}\"} 1\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := sumMetrics(strings.NewReader(in))
		if err != nil {
			return
		}
		for name := range got {
			if name == "" {
				t.Fatalf("a sum without a metric name in %q", in)
			}
		}
	})
}

// TestAccounting drives cmdAccounting against served metrics: the verdict
// for a run that accounted for everything, a ledger that stays behind, and
// a sidecar that saw an omission.
func TestAccounting(t *testing.T) {
	serve := func(body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	caller := serve("tally_messages_sent_total{source=\"a\",destination=\"b\"} 10\n" +
		"tally_messages_confirmed_total{source=\"a\",destination=\"b\"} 10\n")
	callee := serve("tally_messages_received_total{source=\"a\",destination=\"b\"} 10\n")
	lossy := serve("tally_messages_received_total{source=\"a\",destination=\"b\"} 10\n" +
		"tally_omissions_total{source=\"a\",destination=\"b\",kind=\"truncated\"} 1\n")
	for _, tc := range []struct {
		name, callee, ledger, wantErr string
	}{
		{"all accounted", callee, "tally_ledger_size 10\n", ""},
		{"ledger behind", callee, "tally_ledger_size 9\n", "ledger behind after"},
		{"ledger ahead", callee, "tally_ledger_size 11\n", "more ledger leaves than confirmations"},
		{"omission", lossy, "tally_ledger_size 10\n", "omissions or dropped records"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := cmdAccounting([]string{"-timeout", "300ms", "-caller", caller, "-callee", tc.callee, "-control", serve(tc.ledger)})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("cmdAccounting: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("cmdAccounting: error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
