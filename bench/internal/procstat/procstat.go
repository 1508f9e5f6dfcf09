// Package procstat reads CPU time from /proc, for the load drivers'
// per-process CPU-per-request figures.
package procstat

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"
)

// ProcCPU reads a process's user+system CPU time from /proc/PID/stat
// (fields 14 and 15, in clock ticks of 1/100 s on Linux); 0 if unknown.
func ProcCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields follow its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
