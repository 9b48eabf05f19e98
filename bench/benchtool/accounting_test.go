package main

import (
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
