package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSample is what a throughput run's CPU is measured from: the server's
// processes, this process (the clients, or the agents and their AMI
// clients), and the machine's ticks from /proc/stat.
type cpuSample struct {
	server, self       time.Duration
	total, idle, steal int64
	io                 procIO // the server's
}

// procIO is what /proc/PID/io counts: bytes read and written through
// syscalls (sockets too), and the read and write syscalls.
type procIO struct{ rchar, wchar, syscr, syscw int64 }

func (a procIO) sub(b procIO) procIO {
	return procIO{a.rchar - b.rchar, a.wchar - b.wchar, a.syscr - b.syscr, a.syscw - b.syscw}
}

func (a procIO) plus(b procIO) procIO {
	return procIO{a.rchar + b.rchar, a.wchar + b.wchar, a.syscr + b.syscr, a.syscw + b.syscw}
}

func readProcIO(pid int) procIO {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return procIO{}
	}
	var io procIO
	fields := map[string]*int64{"rchar": &io.rchar, "wchar": &io.wchar, "syscr": &io.syscr, "syscw": &io.syscw}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if f := fields[k]; ok && f != nil {
			*f, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return io
}

// cpuMeter samples the CPU of the server's processes and of this one.
type cpuMeter func() cpuSample

// The server's processes are found once, here: walking /proc in the
// measured loop would delay the sender.
func newCPUMeter(serverPIDs []int) cpuMeter {
	self := os.Getpid()
	return func() cpuSample {
		var s cpuSample
		for _, pid := range serverPIDs {
			s.server += procCPU(pid)
			s.io = s.io.plus(readProcIO(pid))
		}
		s.self = procCPU(self)
		s.total, s.idle, s.steal = machineTicks()
		return s
	}
}

// machineTicks reads the first line of /proc/stat: all ticks, idle (with
// iowait) and steal (taken by the hypervisor for other guests).
func machineTicks() (total, idle, steal int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, 0
	}
	var v [8]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
		total += v[i]
	}
	return total, v[3] + v[4], v[7]
}

// cpuUse is the CPU a throughput run took over its measured part.
type cpuUse struct {
	server, self       time.Duration
	ticks, idle, steal int64
	io                 procIO
	changes            int64 // seen by the slowest receiver
}

func (u cpuUse) add(o cpuUse) cpuUse {
	return cpuUse{u.server + o.server, u.self + o.self, u.ticks + o.ticks, u.idle + o.idle, u.steal + o.steal,
		u.io.plus(o.io), u.changes + o.changes}
}

func usedBetween(a, b cpuSample, changes int64) cpuUse {
	return cpuUse{server: b.server - a.server, self: b.self - a.self,
		ticks: b.total - a.total, idle: b.idle - a.idle, steal: b.steal - a.steal, io: b.io.sub(a.io), changes: changes}
}

// ioPerChange is the server's reads and writes per change: syscalls and
// bytes.
func (u cpuUse) ioPerChange() (syscr, syscw, rchar, wchar float64) {
	if u.changes <= 0 {
		return 0, 0, 0, 0
	}
	n := float64(u.changes)
	return float64(u.io.syscr) / n, float64(u.io.syscw) / n, float64(u.io.rchar) / n, float64(u.io.wchar) / n
}

// perChange is d spread over the changes, in microseconds.
func (u cpuUse) perChange(d time.Duration) float64 {
	if u.changes <= 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(u.changes)
}

// share is n ticks as a percentage of the machine's (all CPUs).
func (u cpuUse) share(n int64) float64 {
	if u.ticks <= 0 {
		return 0
	}
	return 100 * float64(n) / float64(u.ticks)
}

// shareOf is CPU time d as a percentage of the machine's (all CPUs).
func (u cpuUse) shareOf(d time.Duration) float64 {
	if u.ticks <= 0 {
		return 0
	}
	return 100 * float64(d) / float64(time.Duration(u.ticks)*clockTick())
}
