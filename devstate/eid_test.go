package devstate

import (
	"errors"
	"testing"
)

func TestParseEID(t *testing.T) {
	good := []struct {
		in   string
		want EID
	}{
		{"00:11:22:33:44:55", EID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55}},
		{"aa:bb:cc:dd:ee:ff", EID{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}},
		{"AA:Bb:cC:DD:eE:Ff", EID{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}},
		{"0:1:2:3:4:5", EID{0, 1, 2, 3, 4, 5}},
		{"0:11:2:33:4:55", EID{0x00, 0x11, 0x02, 0x33, 0x04, 0x55}},
		{"02:00:00:00:00:01", EID{2, 0, 0, 0, 0, 1}},
		{"00:00:00:00:00:00", EID{}},
	}
	for _, tt := range good {
		got, err := ParseEID(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseEID(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	bad := []string{
		"",
		"00:11:22:33:44",
		"00:11:22:33:44:",
		"00:11:22:33:44:55:",
		"00:11:22:33:44:55:66",
		"00-11-22-33-44-55",
		"001122334455",
		"000:11:22:33:44:55",
		"00:11:22:33:44:555",
		"0g:11:22:33:44:55",
		"00:11:22:33:44:5g",
		":11:22:33:44:55",
		"00::22:33:44:55",
		" 00:11:22:33:44:55",
		"00:11:22:33:44:55 ",
		"00:11:22:33:44:55\n",
		"+0:11:22:33:44:55",
		"0x:11:22:33:44:55",
		"::::::",
	}
	for _, in := range bad {
		got, err := ParseEID(in)
		if err == nil {
			t.Errorf("ParseEID(%q) = %v, want error", in, got)
			continue
		}
		if !errors.Is(err, errEIDForm) || got != (EID{}) {
			t.Errorf("ParseEID(%q) = %v, %v; want zero EID and the form error", in, got, err)
		}
	}
}

func TestEIDString(t *testing.T) {
	tests := []struct {
		in   EID
		want string
	}{
		{EID{}, "00:00:00:00:00:00"},
		{EID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55}, "00:11:22:33:44:55"},
		{EID{0xAB, 0xCD, 0xEF, 0x01, 0x0a, 0xff}, "ab:cd:ef:01:0a:ff"},
		{EID{1, 2, 3, 4, 5, 6}, "01:02:03:04:05:06"},
	}
	for _, tt := range tests {
		s := tt.in.String()
		if s != tt.want {
			t.Errorf("%v.String() = %q, want %q", [6]byte(tt.in), s, tt.want)
		}
		back, err := ParseEID(s)
		if err != nil || back != tt.in {
			t.Errorf("ParseEID(%q) = %v, %v; want %v", s, back, err, tt.in)
		}
	}
	if !(EID{}).IsZero() || (EID{0, 0, 0, 0, 0, 1}).IsZero() {
		t.Error("IsZero wrong")
	}
}

func TestDeriveEID(t *testing.T) {
	a, b := DeriveEID("pbx1.example.org"), DeriveEID("pbx2.example.org")
	if a != DeriveEID("pbx1.example.org") {
		t.Error("DeriveEID is not stable")
	}
	if a == b {
		t.Error("DeriveEID gives one EID for two seeds")
	}
	for _, e := range []EID{a, b, DeriveEID("")} {
		if e[0]&0x02 == 0 || e[0]&0x01 != 0 {
			t.Errorf("DeriveEID gave %v: want a locally administered unicast address", e)
		}
		if e.IsZero() {
			t.Error("DeriveEID gave the zero EID")
		}
	}
}
