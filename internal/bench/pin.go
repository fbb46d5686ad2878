package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// The e2e and burst phases (latency, throughput, the burst against its
// floor) pin the server to the last CPU and this process (the bare
// clients, the agents, their AMI clients) to the others. On a machine of two CPUs the server and the agents
// otherwise compete for them, and ejabberd's schedulers, which spin
// before they sleep, take more of them the more often they wait: in one
// run unpinned, ejabberd took 467 µs of CPU per change on the baseline's
// side and 504 µs on busylamp's (BENCHMARKS.md, 2026-12-04, night).
// That measures the machine, not what busylamp asks of the server. In
// production the XMPP server runs elsewhere. -pin=false measures
// without. The scale, live and many phases run on every CPU.

// pinTasks sets the CPU affinity of every thread of pid; threads created
// later inherit it from their creator.
func pinTasks(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pid %d thread %d: %w", pid, tid, err)
		}
	}
	return nil
}

func cpuSet(cpus ...int) *unix.CPUSet {
	var s unix.CPUSet
	for _, c := range cpus {
		s.Set(c)
	}
	return &s
}

// pinApart puts the server's processes on the last CPU and this process
// on the others, and returns what undoes it (every CPU for both). With
// a single CPU it does nothing.
func pinApart(serverPIDs []int) (undo func(), desc string, err error) {
	n := runtime.NumCPU()
	if n < 2 {
		return func() {}, "not pinned (1 CPU)", nil
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	self := os.Getpid()
	undo = func() {
		for _, pid := range append([]int{self}, serverPIDs...) {
			_ = pinTasks(pid, cpuSet(all...))
		}
	}
	for _, pid := range serverPIDs {
		if err := pinTasks(pid, cpuSet(n-1)); err != nil {
			undo()
			return nil, "", err
		}
	}
	if err := pinTasks(self, cpuSet(all[:n-1]...)); err != nil {
		undo()
		return nil, "", err
	}
	rest := "CPU 0"
	if n > 2 {
		rest = fmt.Sprintf("CPUs 0-%d", n-2)
	}
	return undo, fmt.Sprintf("the server on CPU %d, the bench (clients, agents) on %s", n-1, rest), nil
}
