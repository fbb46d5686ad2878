// Package sdnotify tells systemd how the service is doing, through the
// sd_notify datagram protocol: ready, reloading, stopping, a status line
// and watchdog keep-alives. It owns only that client; when to send what
// is the agent's business.
//
// Every function is a no-op returning nil when $NOTIFY_SOCKET is unset,
// that is when the process was not started by systemd with Type=notify
// (or NotifyAccess=), so callers need not check.
//
// systemd accepts a message only from the service's main process unless
// the unit sets NotifyAccess=all; send from the busylamp process itself.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// EnvSocket is the variable systemd sets to the socket to notify.
const EnvSocket = "NOTIFY_SOCKET"

// Notify sends state, one or more newline-separated KEY=VALUE
// assignments (see sd_notify(3)), to $NOTIFY_SOCKET. It returns nil
// without doing anything when the variable is unset or empty.
func Notify(state string) error {
	name := os.Getenv(EnvSocket)
	if name == "" {
		return nil
	}
	addr, err := socketAddr(name)
	if err != nil {
		return err
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", name, err)
	}
	return nil
}

// socketAddr is the datagram address of $NOTIFY_SOCKET: an absolute
// path, or "@name" for a Linux abstract socket (Go's net package maps
// the leading '@' to the abstract namespace itself).
func socketAddr(name string) (*net.UnixAddr, error) {
	switch {
	case strings.HasPrefix(name, "/"), strings.HasPrefix(name, "@") && len(name) > 1:
		return &net.UnixAddr{Name: name, Net: "unixgram"}, nil
	default:
		// systemd 254+ may also hand out vsock: addresses (for VMs); the
		// agent does not run in that setup.
		return nil, fmt.Errorf("sd_notify: unsupported %s=%q: want an absolute path or @abstract", EnvSocket, name)
	}
}

// Ready says start-up is finished (READY=1): with Type=notify systemd
// holds the unit in "activating" until then, and units ordered after it
// wait.
func Ready() error { return Notify("READY=1") }

// Reloading says the service began re-reading its configuration
// (RELOADING=1). It carries MONOTONIC_USEC, the CLOCK_MONOTONIC time in
// microseconds, which Type=notify-reload (systemd 253+) requires to tell
// this reload from an earlier one; older systemd ignores the field.
// Send Ready when the reload is done, successful or not.
func Reloading() error {
	state := "RELOADING=1"
	if us, ok := monotonicUsec(); ok {
		state += "\nMONOTONIC_USEC=" + strconv.FormatUint(us, 10)
	}
	return Notify(state)
}

// Stopping says the service began shutting down (STOPPING=1).
func Stopping() error { return Notify("STOPPING=1") }

// Status sets the free-form line `systemctl status` shows (STATUS=...).
// A newline in s would end the assignment and start another, so it is
// replaced by a space.
func Status(s string) error {
	return Notify("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s))
}

// Watchdog sends a keep-alive (WATCHDOG=1). Send it at least every
// WatchdogInterval()/2 when the unit sets WatchdogSec=.
func Watchdog() error { return Notify("WATCHDOG=1") }

// WatchdogInterval returns the watchdog timeout systemd expects
// keep-alives within ($WATCHDOG_USEC), and false when the unit has no
// watchdog, or when $WATCHDOG_PID names another process (the variables
// were inherited, not meant for this one).
func WatchdogInterval() (time.Duration, bool) {
	d, err := watchdogInterval(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
	return d, err == nil && d > 0
}

var errNoWatchdog = errors.New("no watchdog")

func watchdogInterval(usec, pid string, self int) (time.Duration, error) {
	if usec == "" {
		return 0, errNoWatchdog
	}
	if pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil {
			return 0, fmt.Errorf("WATCHDOG_PID=%q: %w", pid, err)
		}
		if p != self {
			return 0, errNoWatchdog
		}
	}
	us, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || us == 0 {
		return 0, fmt.Errorf("WATCHDOG_USEC=%q: want a positive whole number", usec)
	}
	return time.Duration(us) * time.Microsecond, nil
}
