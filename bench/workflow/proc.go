package main

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/junctionhq/junction/bench/internal/procstat"
)

// procCPU is process pid's CPU time (0 for pid 0).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	return procstat.ProcCPU(pid)
}

// machineBusy is the time all CPUs have spent busy since boot (the first
// line of /proc/stat, in ticks of 1/100 s): 0 where unknown.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// busy describes how loaded the machine is: the load average and, where
// the kernel has it, the CPU pressure over the last 10 s.
func busy() string {
	s := "load average ?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			s = "load average " + strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/pressure/cpu"); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if v, ok := strings.CutPrefix(f, "avg10="); ok {
				s += ", cpu pressure " + v + "%"
				break
			}
		}
	}
	return s
}
