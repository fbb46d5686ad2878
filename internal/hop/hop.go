// Package hop names the points on a device change's way through the agents
// where a benchmark may take the time (make bench prints the time between
// them). A nil Func costs a branch at each point; nothing else reads it.
package hop

import "time"

// Stage is one point on the way of a change from the PBX of server A to
// the AMI clients of server B.
type Stage uint8

const (
	// AMIRead: A's AMI socket read the Setvar (name: the device).
	AMIRead Stage = iota
	// Written: A wrote the publish to the XMPP socket (name: the device).
	Written
	// Read: B read the notification off the XMPP stream (name: the device).
	Read
	// Merged: B's table and merge are done and the event is handed to
	// the AMI server (name: the device).
	Merged
	// Flushed: B's AMI server starts writing a batch of events to one
	// session's socket (name empty: a write carries any number of them).
	Flushed
	// Stages is the number of stages.
	Stages
)

var names = [Stages]string{"ami-read", "written", "read", "merged", "flushed"}

func (s Stage) String() string {
	if s < Stages {
		return names[s]
	}
	return "?"
}

// Func is called at each stage, on the goroutine that passes it, with the
// time taken there; it must return quickly.
type Func func(s Stage, name string, t time.Time)
