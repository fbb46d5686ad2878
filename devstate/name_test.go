package devstate

import (
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"Custom:a", "PJSIP/100", "1000@default", strings.Repeat("x", MaxNameLen), "Üñí"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", MaxNameLen+1), "a\x00b", "a\nb", string([]byte{0xc3})} {
		if CheckName(bad) == nil {
			t.Errorf("CheckName(%q) = nil, want an error", bad)
		}
	}
}
