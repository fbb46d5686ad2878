package packaging

import (
	"os/exec"
	"testing"
)

func TestDebianVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v0.1", "0.1"},
		{"v1.0.0-rc1", "1.0.0~rc1"},
		{"v0.1-3-gabc1234", "0.1+git3.abc1234"},
		{"v1.0.0-rc1-12-g0123abcd", "1.0.0~rc1+git12.0123abcd"},
		{"v0.1-3-gabc1234-dirty", "0.1+git3.abc1234+dirty"},
		{"6b5f47d", "0.0~git6b5f47d"},
		{"1234567", "0.0~git1234567"}, // a hash of digits only is still a hash
		{"6b5f47d-dirty", "0.0~git6b5f47d+dirty"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"dev", "0.0~dev"},
		{"", "0.0~dev"},
		{" v1.2.3\n", "1.2.3"},
	} {
		got, err := DebianVersion(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("DebianVersion(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"latest", "v", "xyz-3-gabc1234", "1.2 3", "../1"} {
		if got, err := DebianVersion(bad); err == nil {
			t.Errorf("DebianVersion(%q) = %q, want an error", bad, got)
		}
	}
}

// The mapped versions must order as the commits do, by dpkg's own rule.
func TestDebianVersionOrder(t *testing.T) {
	dpkg := needTool(t, "dpkg")
	order := []string{"dev", "6b5f47d", "v0.1-rc1", "v0.1", "v0.1-3-gabc1234", "v0.1-3-gabc1234-dirty", "v0.1-10-g0000000", "v0.2-rc1", "v0.2", "v1.0.0"}
	for i := 1; i < len(order); i++ {
		a, err := DebianVersion(order[i-1])
		if err != nil {
			t.Fatal(err)
		}
		b, err := DebianVersion(order[i])
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(dpkg, "--compare-versions", a, "lt", b).CombinedOutput(); err != nil {
			t.Errorf("dpkg: %s (from %s) is not before %s (from %s): %v %s", a, order[i-1], b, order[i], err, out)
		}
	}
}

func TestValidDebianVersion(t *testing.T) {
	for v, want := range map[string]bool{
		"1.2.3": true, "0.0~git6b5f47d": true, "0.1+git3.abc": true,
		"": false, "v1.2": false, "1.2-3": false, "1:1.2": false, "1.2_3": false, "~1": false,
	} {
		if got := ValidDebianVersion(v); got != want {
			t.Errorf("ValidDebianVersion(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestFileName(t *testing.T) {
	for _, tc := range []struct{ version, arch, want string }{
		{"1.2.3", "amd64", "busylamp_1.2.3_amd64.deb"},
		{"0.0~git6b5f47d", "arm64", "busylamp_0.0~git6b5f47d_arm64.deb"},
		{"1.0", "386", "busylamp_1.0_i386.deb"},
		{"1.0", "arm", "busylamp_1.0_armhf.deb"},
		{"1.0", "ppc64le", "busylamp_1.0_ppc64el.deb"},
	} {
		if got := FileName(tc.version, tc.arch); got != tc.want {
			t.Errorf("FileName(%q, %q) = %q, want %q", tc.version, tc.arch, got, tc.want)
		}
	}
}
