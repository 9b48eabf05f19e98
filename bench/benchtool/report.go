package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

var (
	sizeOrder = []string{"1k", "64k"}
	concOrder = []string{"c32", "c1"}
)

// errTargets marks a report whose tally targets failed (only with -enforce).
var errTargets = errors.New("targets failed")

type rawRow map[string]string

func (r rawRow) num(col string) (float64, bool) {
	v, err := strconv.ParseFloat(r[col], 64)
	return v, err == nil && !math.IsNaN(v)
}

func (r rawRow) ok() bool { return r["status"] == "ok" }

type report struct {
	rows    []rawRow
	configs []string
}

func (rp *report) find(config, size, conc string) []rawRow {
	var out []rawRow
	for _, r := range rp.rows {
		if r["config"] == config && r["size"] == size && r["conc"] == conc {
			out = append(out, r)
		}
	}
	return out
}

func (rp *report) at(round, config, size, conc string) rawRow {
	for _, r := range rp.rows {
		if r["round"] == round && r["config"] == config && r["size"] == size && r["conc"] == conc {
			return r
		}
	}
	return nil
}

// median of the column over the rows that succeeded.
func medianOf(rows []rawRow, col string) (float64, bool) {
	var v []float64
	for _, r := range rows {
		if x, ok := r.num(col); ok && r.ok() {
			v = append(v, x)
		}
	}
	return median(v)
}

func maxOf(rows []rawRow, cols ...string) (float64, bool) {
	m, any := 0.0, false
	for _, r := range rows {
		for _, c := range cols {
			if x, ok := r.num(c); ok && r.ok() {
				m, any = max(m, x), true
			}
		}
	}
	return m, any
}

func median(v []float64) (float64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// ratio is the median over rounds of config's col divided by other's col in the same
// round, size and concurrency; rounds where either failed are left out.
func (rp *report) ratio(config, other, size, conc, col string) (float64, bool) {
	var v []float64
	for _, r := range rp.find(config, size, conc) {
		o := rp.at(r["round"], other, size, conc)
		if o == nil || !r.ok() || !o.ok() {
			continue
		}
		a, ok1 := r.num(col)
		b, ok2 := o.num(col)
		if ok1 && ok2 && b > 0 {
			v = append(v, a/b)
		}
	}
	return median(v)
}

func readRaw(path string) ([]rawRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%s: empty", path)
	}
	var rows []rawRow
	for _, rec := range recs[1:] {
		r := rawRow{}
		for i, c := range recs[0] {
			if i < len(rec) {
				r[c] = rec[i]
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	raw := fs.String("raw", "", "raw per-round CSV")
	summary := fs.String("summary", "", "summary CSV to write")
	md := fs.String("md", "", "Markdown report to write")
	configs := fs.String("configs", "direct,tally,nginx,haproxy,goproxy", "configurations, in table order")
	title := fs.String("title", "", "first lines of the Markdown report")
	enforce := fs.Bool("enforce", false, "exit 4 when a tally target fails")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rows, err := readRaw(*raw)
	if err != nil {
		return err
	}
	rp := &report{rows: rows, configs: strings.Split(*configs, ",")}

	var b strings.Builder
	if *title != "" {
		b.WriteString(*title + "\n\n")
	}
	table, sum := rp.table()
	b.WriteString(table)
	targets, failed := rp.targets()
	if targets != "" {
		b.WriteString("\n" + targets)
	}
	fmt.Print(b.String())
	if *md != "" {
		if err := os.WriteFile(*md, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	if *summary != "" {
		f, err := os.Create(*summary)
		if err != nil {
			return err
		}
		w := csv.NewWriter(f)
		w.WriteAll(sum)
		if err := w.Error(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if failed && *enforce {
		return errTargets
	}
	return nil
}

func fmtF(v float64, ok bool, format string) string {
	if !ok {
		return "—"
	}
	return fmt.Sprintf(format, v)
}

func csvF(v float64, ok bool) string {
	if !ok {
		return ""
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// table renders the Markdown table and the summary CSV records.
func (rp *report) table() (string, [][]string) {
	var b strings.Builder
	b.WriteString("Medians over rounds; ×direct is the median of per-round ratios to direct in the same round.\n")
	b.WriteString("CPU: both proxy hops together (all processes and threads), per completed request. RSS: peak (VmHWM) during the measurement, per hop (A / B; a hop's processes summed).\n\n")
	fmt.Fprintf(&b, "Other CPU: the largest share of the machine's CPU, over the rounds, that neither the measured processes nor wrk used (noise from elsewhere); ⚠ from %d%%.\n\n", disturbedPct)
	b.WriteString("| config | size | load | req/s | ×direct | p50 | ×direct | p99 | ×direct | proxy CPU µs/req | peak RSS MiB A / B | other CPU | errors |\n")
	b.WriteString("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	sum := [][]string{{
		"config", "size", "conc", "rounds", "rounds_ok",
		"rps_median", "rps_ratio_direct", "p50_us_median", "p50_ratio_direct", "p99_us_median", "p99_ratio_direct",
		"proxy_cpu_us_per_req_median", "backend_cpu_us_per_req_median", "aux_cpu_us_per_req_median",
		"rss_hop_a_mib_max", "rss_hop_b_mib_max", "rss_max_hop_mib", "rss_max_proc_mib",
		"wrk_cpu_us_per_req_median", "other_cpu_pct_max", "steal_pct_max", "errors",
	}}
	for _, size := range sizeOrder {
		for _, conc := range concOrder {
			for _, cfg := range rp.configs {
				rows := rp.find(cfg, size, conc)
				if len(rows) == 0 {
					continue
				}
				nOK := 0
				var errs []string
				for _, r := range rows {
					if r.ok() {
						nOK++
					} else {
						errs = append(errs, fmt.Sprintf("round %s: %s", r["round"], r["error"]))
					}
				}
				rps, rpsOK := medianOf(rows, "rps")
				p50, p50OK := medianOf(rows, "p50_us")
				p99, p99OK := medianOf(rows, "p99_us")
				cpu, cpuOK := medianOf(rows, "proxy_cpu_us_per_req")
				bcpu, bcpuOK := medianOf(rows, "backend_cpu_us_per_req")
				acpu, acpuOK := medianOf(rows, "aux_cpu_us_per_req")
				rssA, rssAOK := maxOf(rows, "rss_hop_a_mib")
				rssB, rssBOK := maxOf(rows, "rss_hop_b_mib")
				rssHop, rssHopOK := maxOf(rows, "rss_hop_a_mib", "rss_hop_b_mib")
				rssProc, rssProcOK := maxOf(rows, "rss_max_proc_mib")
				wcpu, wcpuOK := medianOf(rows, "wrk_cpu_us_per_req")
				other, otherOK := maxOf(rows, "other_cpu_pct")
				steal, stealOK := maxOf(rows, "steal_pct")
				rr, rrOK := rp.ratio(cfg, "direct", size, conc, "rps")
				r50, r50OK := rp.ratio(cfg, "direct", size, conc, "p50_us")
				r99, r99OK := rp.ratio(cfg, "direct", size, conc, "p99_us")

				rss := "—"
				if rssAOK || rssBOK {
					rss = fmtF(rssA, rssAOK, "%.1f") + " / " + fmtF(rssB, rssBOK, "%.1f")
				}
				errCell := ""
				if len(errs) > 0 {
					errCell = fmt.Sprintf("**%d of %d rounds FAILED**: %s", len(errs), len(rows), strings.Join(errs, "; "))
					errCell = strings.ReplaceAll(errCell, "|", "/")
				}
				p50s, p99s := "—", "—"
				if p50OK {
					p50s = fmtMicros(p50)
				}
				if p99OK {
					p99s = fmtMicros(p99)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
					cfg, size, conc,
					fmtF(rps, rpsOK, "%.0f"), fmtF(rr, rrOK, "%.2f×"),
					p50s, fmtF(r50, r50OK, "%.2f×"),
					p99s, fmtF(r99, r99OK, "%.2f×"),
					fmtF(cpu, cpuOK, "%.1f"), rss, fmtOther(other, otherOK), errCell)
				sum = append(sum, []string{
					cfg, size, conc, strconv.Itoa(len(rows)), strconv.Itoa(nOK),
					csvF(rps, rpsOK), csvF(rr, rrOK), csvF(p50, p50OK), csvF(r50, r50OK), csvF(p99, p99OK), csvF(r99, r99OK),
					csvF(cpu, cpuOK), csvF(bcpu, bcpuOK), csvF(acpu, acpuOK),
					csvF(rssA, rssAOK), csvF(rssB, rssBOK), csvF(rssHop, rssHopOK), csvF(rssProc, rssProcOK),
					csvF(wcpu, wcpuOK), csvF(other, otherOK), csvF(steal, stealOK),
					strings.Join(errs, "; "),
				})
			}
		}
	}
	return b.String(), sum
}

// targets checks the tally pair against the targets. It returns "" when tally
// was not measured.
func (rp *report) targets() (string, bool) {
	if !slices.Contains(rp.configs, "tally") || len(rp.find("tally", "1k", "c32")) == 0 {
		return "", false
	}
	var b strings.Builder
	failed := false
	b.WriteString("Tally targets (1 KiB at c32 unless said; ratios are medians of same-round ratios):\n\n")
	line := func(pass, ok bool, what, got, want string) {
		verdict := "PASS"
		switch {
		case !ok:
			verdict, failed = "FAIL", true
			got = "not measured (" + got + ")"
		case !pass:
			verdict, failed = "FAIL", true
		}
		fmt.Fprintf(&b, "%s  %s: %s (target %s)\n", verdict, what, got, want)
	}
	have := func(cfg string) bool { return slices.Contains(rp.configs, cfg) && len(rp.find(cfg, "1k", "c32")) > 0 }

	var bad []string
	for _, r := range rp.rows {
		if r["config"] == "tally" && !r.ok() {
			bad = append(bad, fmt.Sprintf("round %s %s %s", r["round"], r["size"], r["conc"]))
		}
	}
	line(len(bad) == 0, true, "tally measurements free of errors",
		fmt.Sprintf("%d failed%s", len(bad), listSuffix(bad)), "0 failed")

	if have("nginx") {
		v, ok := rp.ratio("tally", "nginx", "1k", "c32", "rps")
		line(v >= 0.6, ok, "req/s tally / nginx", fmtF(v, ok, "%.2f"), ">= 0.60")
	} else {
		fmt.Fprintf(&b, "SKIP  req/s tally / nginx: nginx not measured\n")
	}
	if have("goproxy") {
		v, ok := rp.ratio("tally", "goproxy", "1k", "c32", "rps")
		line(v >= 1.5, ok, "req/s tally / goproxy", fmtF(v, ok, "%.2f"), ">= 1.50")
	} else {
		fmt.Fprintf(&b, "SKIP  req/s tally / goproxy: goproxy not measured\n")
	}
	cpu, ok := medianOf(rp.find("tally", "1k", "c32"), "proxy_cpu_us_per_req")
	line(cpu <= 120, ok, "CPU of both sidecars per request", fmtF(cpu, ok, "%.1f µs"), "<= 120 µs")
	if have("nginx") {
		v, ok := rp.ratio("tally", "nginx", "1k", "c32", "p99_us")
		line(v <= 1.5, ok, "p99 tally / nginx", fmtF(v, ok, "%.2f"), "<= 1.50")
	} else {
		fmt.Fprintf(&b, "SKIP  p99 tally / nginx: nginx not measured\n")
	}
	var all []rawRow
	for _, r := range rp.rows {
		if r["config"] == "tally" {
			all = append(all, r)
		}
	}
	rss, ok := maxOf(all, "rss_hop_a_mib", "rss_hop_b_mib")
	line(rss <= 40, ok, "peak RSS per sidecar, any size and load", fmtF(rss, ok, "%.1f MiB"), "<= 40 MiB")
	if have("nginx") {
		r1, ok1 := rp.ratio("tally", "nginx", "1k", "c32", "rps")
		r64, ok64 := rp.ratio("tally", "nginx", "64k", "c32", "rps")
		line(r64 >= r1, ok1 && ok64, "req/s tally / nginx at 64 KiB c32 vs at 1 KiB c32",
			fmtF(r64, ok64, "%.2f")+" vs "+fmtF(r1, ok1, "%.2f"), "64 KiB ratio >= 1 KiB ratio")
	} else {
		fmt.Fprintf(&b, "SKIP  64 KiB vs 1 KiB ratio: nginx not measured\n")
	}
	var cmp []string
	for _, c := range []string{"tally", "nginx", "goproxy"} {
		if slices.Contains(rp.configs, c) {
			cmp = append(cmp, c)
		}
	}
	for _, size := range sizeOrder {
		if n, of := rp.disturbed(size, "c32", cmp...); n > 0 {
			fmt.Fprintf(&b, "WARN  %s c32: %d of %d rounds ran while others used >= %d%% of the machine's CPU; rerun on a quiet machine before trusting a verdict\n",
				size, n, of, disturbedPct)
		}
	}
	if acpu, ok := medianOf(rp.find("tally", "1k", "c32"), "aux_cpu_us_per_req"); ok {
		fmt.Fprintf(&b, "INFO  tally control plane CPU per request (not in the target): %.1f µs\n", acpu)
	}
	return b.String(), failed
}

func fmtOther(v float64, ok bool) string {
	switch {
	case !ok:
		return "—"
	case v >= disturbedPct:
		return fmt.Sprintf("⚠ %.0f%%", v)
	}
	return fmt.Sprintf("%.0f%%", v)
}

// disturbed counts the rounds in which a measurement of any of configs at size and
// conc ran while others used at least disturbedPct of the machine, out of the rounds.
func (rp *report) disturbed(size, conc string, configs ...string) (n, of int) {
	rounds := map[string]bool{}
	for _, r := range rp.rows {
		if r["size"] != size || r["conc"] != conc || !slices.Contains(configs, r["config"]) {
			continue
		}
		if _, seen := rounds[r["round"]]; !seen {
			rounds[r["round"]] = false
		}
		if o, ok := r.num("other_cpu_pct"); ok && o >= disturbedPct {
			rounds[r["round"]] = true
		}
	}
	for _, d := range rounds {
		if d {
			n++
		}
	}
	return n, len(rounds)
}

func listSuffix(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return ": " + strings.Join(v, ", ")
}
