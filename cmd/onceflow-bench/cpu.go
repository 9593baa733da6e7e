package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the kernel's USER_HZ, the unit of /proc's CPU times: 100 on
// every Linux this runs on.
const clockTick = 10 * time.Millisecond

// cpuSample is where the CPU time went up to a moment: this process (client,
// broker and runtime when they are embedded), the Postgres server processes,
// and the whole machine (everything, including what else runs on it).
type cpuSample struct {
	self, postgres, box time.Duration
}

func sampleCPU() cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	s.postgres = postgresCPU()
	s.box = boxBusy()
	return s
}

func (s cpuSample) sub(o cpuSample) cpuSample {
	return cpuSample{self: s.self - o.self, postgres: s.postgres - o.postgres, box: s.box - o.box}
}

// perOp returns the CPU per operation in microseconds: self, postgres, box.
func (s cpuSample) perOp(n int) (self, postgres, box float64) {
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(max(n, 1)) }
	return us(s.self), us(s.postgres), us(s.box)
}

// postgresCPU sums the user and system time of the running processes named
// postgres (the server and its backends; a backend that exited meanwhile is
// not counted, so keep the pool's connections open across a measurement).
func postgresCPU() time.Duration {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || closing < open || string(b[open+1:closing]) != "postgres" {
			continue
		}
		// After "(comm) ": state is field 3; utime and stime are 14, 15.
		fields := strings.Fields(string(b[closing+1:]))
		if len(fields) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * clockTick
}

// boxBusy is the machine's busy CPU time since boot (every core: all but
// idle and iowait).
func boxBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, f := range fields[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		busy += v
	}
	return time.Duration(busy) * clockTick
}

// writeAllocProfile writes the allocations since the start (go tool pprof
// -sample_index=alloc_space) to file.
func writeAllocProfile(file string) {
	f, err := os.Create(file)
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.Lookup("allocs").WriteTo(f, 0)
}
