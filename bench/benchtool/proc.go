package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procStat is what /proc/PID/stat says about one process (all its threads together).
type procStat struct {
	ppid  int
	ticks uint64 // utime+stime+cutime+cstime: cutime/cstime cover children it reaped
}

// readStat parses /proc/PID/stat. The command name may hold spaces and parentheses,
// so the fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat: no ')'")
	}
	// After ')': state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("stat: %d fields after the name", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("stat ppid: %w", err)
	}
	var sum uint64
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat times: %w", err)
		}
		if v > 0 {
			sum += uint64(v)
		}
	}
	return procStat{ppid: ppid, ticks: sum}, nil
}

// tree returns root and its live descendants (root first), or nil when root is gone.
func tree(root int) []int {
	if _, err := readStat(root); err != nil {
		return nil
	}
	children := map[int][]int{}
	ents, _ := filepath.Glob("/proc/[0-9]*")
	for _, e := range ents {
		pid, err := strconv.Atoi(filepath.Base(e))
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

func pidArgs(args []string) ([]int, error) {
	var pids []int
	for _, a := range args {
		p, err := strconv.Atoi(a)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("pid %q: not a number", a)
		}
		pids = append(pids, p)
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("want one or more PIDs")
	}
	return pids, nil
}

// cmdCPU prints the CPU clock ticks used so far by the trees of the given PIDs.
// A root that is gone is an error: its CPU time can no longer be counted.
func cmdCPU(args []string) error {
	roots, err := pidArgs(args)
	if err != nil {
		return err
	}
	var total uint64
	for _, r := range roots {
		t := tree(r)
		if t == nil {
			return fmt.Errorf("process %d is gone", r)
		}
		for _, p := range t {
			if st, err := readStat(p); err == nil {
				total += st.ticks
			}
		}
	}
	fmt.Println(total)
	return nil
}

// cmdHWM prints, for each root, the VmHWM (peak RSS) in KiB summed over its tree, then
// the largest VmHWM of any single process. With -reset it resets the peaks instead
// (writing 5 to /proc/PID/clear_refs sets VmHWM to the current RSS).
func cmdHWM(args []string) error {
	fs := flag.NewFlagSet("hwm", flag.ContinueOnError)
	reset := fs.Bool("reset", false, "reset the peaks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	roots, err := pidArgs(fs.Args())
	if err != nil {
		return err
	}
	var out []string
	var maxProc uint64
	for _, r := range roots {
		t := tree(r)
		if t == nil {
			return fmt.Errorf("process %d is gone", r)
		}
		var sum uint64
		for _, p := range t {
			if *reset {
				if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p), []byte("5"), 0); err != nil {
					return fmt.Errorf("resetting peak RSS of %d: %w", p, err)
				}
				continue
			}
			kib, err := vmHWM(p)
			if err != nil {
				continue // exited in between
			}
			sum += kib
			maxProc = max(maxProc, kib)
		}
		out = append(out, strconv.FormatUint(sum, 10))
	}
	if !*reset {
		out = append(out, strconv.FormatUint(maxProc, 10))
		fmt.Println(strings.Join(out, " "))
	}
	return nil
}

func vmHWM(pid int) (uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		v := strings.Fields(rest)
		if len(v) == 0 {
			break
		}
		return strconv.ParseUint(v[0], 10, 64)
	}
	return 0, fmt.Errorf("process %d: no VmHWM", pid)
}

func cmdTree(args []string) error {
	roots, err := pidArgs(args)
	if err != nil {
		return err
	}
	for _, r := range roots {
		for _, p := range tree(r) {
			fmt.Println(p)
		}
	}
	return nil
}

// cmdSys prints the machine's CPU ticks from the first line of /proc/stat: busy
// (user+nice+system), total (user..steal) and steal.
func cmdSys(args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("no arguments")
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return err
	}
	busy, total, steal, err := parseProcStat(b)
	if err != nil {
		return err
	}
	fmt.Println(busy, total, steal)
	return nil
}

func parseProcStat(b []byte) (busy, total, steal uint64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var v [8]uint64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return 0, 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v[i]
	}
	return v[0] + v[1] + v[2], total, v[7], nil
}
