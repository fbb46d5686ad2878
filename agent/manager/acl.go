package manager

import "net/netip"

// ACLRule is one permit= or deny= line of the account: a network and
// whether addresses in it may log in.
type ACLRule struct {
	Permit bool
	Net    netip.Prefix
}

// ACL is the account's permit/deny lines in file order, applied as
// Asterisk's main/acl.c applies them: every line is tried, the last line
// whose network holds the address decides, and an address no line holds is
// permitted. An IPv4 line matches IPv4 and IPv4-mapped IPv6 addresses; an
// IPv6 line matches only other IPv6 addresses. So "deny=0.0.0.0/0" then
// "permit=10.0.0.0/8" lets only 10/8 in over IPv4.
type ACL []ACLRule

// Permits reports whether ip may log in.
func (a ACL) Permits(ip netip.Addr) bool {
	ok := true
	v4 := ip.Is4() || ip.Is4In6()
	ip4 := ip.Unmap()
	for _, r := range a {
		switch {
		case r.Net.Addr().Is4() && v4:
			if r.Net.Contains(ip4) {
				ok = r.Permit
			}
		case r.Net.Addr().Is6() && !v4:
			if r.Net.Contains(ip.WithZone("")) {
				ok = r.Permit
			}
		}
	}
	return ok
}
