package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sumMetrics adds up, per metric name, the counter and gauge samples of a
// Prometheus text exposition (the format every tally /metrics serves).
func sumMetrics(r io.Reader) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	sums := map[string]float64{}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			switch {
			case m.Counter != nil:
				sums[name] += m.Counter.GetValue()
			case m.Gauge != nil:
				sums[name] += m.Gauge.GetValue()
			case m.Untyped != nil:
				sums[name] += m.Untyped.GetValue()
			}
		}
	}
	return sums, nil
}

func fetchMetrics(c *http.Client, url string) (map[string]float64, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	m, err := sumMetrics(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return m, nil
}

// cmdAccounting checks, after the load, that tally accounted for every
// message: the caller sidecar confirmed all it sent, the callee received as
// many, neither detected an omission or dropped a record, and the control
// plane's ledger holds a leaf for each (it may lag by a batch: it waits).
func cmdAccounting(args []string) error {
	fs := flag.NewFlagSet("accounting", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "how long the ledger may take to catch up")
	caller := fs.String("caller", "", "caller sidecar's metrics URL")
	callee := fs.String("callee", "", "callee sidecar's metrics URL")
	control := fs.String("control", "", "control plane's metrics URL")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *caller == "" || *callee == "" || *control == "" {
		return fmt.Errorf("want -caller URL -callee URL -control URL [-timeout D]")
	}
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(*timeout)
	for {
		a, err := fetchMetrics(c, *caller)
		if err != nil {
			return err
		}
		b, err := fetchMetrics(c, *callee)
		if err != nil {
			return err
		}
		ctl, err := fetchMetrics(c, *control)
		if err != nil {
			return err
		}
		sent, confirmed := a["tally_messages_sent_total"], a["tally_messages_confirmed_total"]
		received, leaves := b["tally_messages_received_total"], ctl["tally_ledger_size"]
		omissions := a["tally_omissions_total"] + b["tally_omissions_total"]
		dropped := a["tally_proxy_records_dropped_total"] + b["tally_proxy_records_dropped_total"]
		line := fmt.Sprintf("sent %.0f, confirmed %.0f (caller), received %.0f (callee), ledger %.0f leaves, omissions %.0f, records dropped %.0f",
			sent, confirmed, received, leaves, omissions, dropped)
		// The sidecars' counters are final once the load has stopped; only
		// the ledger may still be a batch behind.
		var bad []string
		if sent == 0 {
			bad = append(bad, "nothing sent")
		}
		if confirmed != sent || received != sent {
			bad = append(bad, "not every message confirmed and received")
		}
		if omissions != 0 || dropped != 0 {
			bad = append(bad, "omissions or dropped records")
		}
		switch {
		case len(bad) > 0:
		case leaves == confirmed:
			fmt.Println(line)
			return nil
		case leaves > confirmed:
			bad = append(bad, "more ledger leaves than confirmations")
		case time.Now().After(deadline):
			bad = append(bad, fmt.Sprintf("ledger behind after %s", *timeout))
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s: %s", line, strings.Join(bad, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
