// Package testenv builds a small ISP in network namespaces, for the end-to-end tests and
// `portcullis demo`: subscriber hosts (dynamic pools, business space, a registered mail
// server, a quarantined host, one reached over 802.1Q), a gateway that routes them to an
// "internet" namespace, Portcullis attached to the gateway's subscriber-facing
// interfaces (native or generic XDP), and a real SMTP server on 25, 587 and 465.
//
// Everything is built through netlink from Go; nothing touches the host's own
// interfaces, and all addresses are documentation prefixes or 100.64.0.0/10. Work that
// must happen inside a namespace (opening sockets, attaching programs, sysctls) runs on
// a locked OS thread that enters the namespace and leaves it again (Namespace.Do).
// Topology.Close removes everything, also after a failed New. Building one needs root.
//
// See docs/TESTENV.md for the diagram and addresses.
package testenv
