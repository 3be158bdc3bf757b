package policy

import "net/netip"

func addr_(s string) netip.Addr { return netip.MustParseAddr(s) }
