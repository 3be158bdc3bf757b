/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Packet parsing: wire formats and a cursor walk from Ethernet to TCP.
 *
 * Contract of every parse_* function: it reads only after checking `ptr + size >
 * c->end`, advances c->pos past what it consumed, and returns the enum pc_parse class
 * of the packet or PC_P_CONTINUE to go on. Offsets that a reply needs (l3_off,
 * pppoe_off) are tracked as small integers from the frame start so the verifier can
 * bound them. */
#ifndef PC_PARSING_H
#define PC_PARSING_H

#include "types.h"

struct pc_ethhdr {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
	__be16 proto;
};

struct pc_vlanhdr {
	__be16 tci;
	__be16 proto; /* encapsulated ethertype */
};

/* PPPoE session header (RFC 2516). The PPP protocol field follows: 2 bytes, or 1 byte
 * when its first byte is odd (protocol-field compression, RFC 1661 6.5). */
struct pc_pppoehdr {
	__u8 ver_type; /* 0x11 */
	__u8 code;     /* 0x00 for session data */
	__be16 session;
	__be16 length; /* PPP payload length, including the protocol field */
};

/* PPP protocols (RFC 1661, 1332, 5072, 1144). */
#define PC_PPP_IPV4 0x0021
#define PC_PPP_IPV6 0x0057
#define PC_PPP_VJ_COMP 0x002d   /* Van Jacobson compressed TCP/IP */
#define PC_PPP_VJ_UNCOMP 0x002f /* Van Jacobson uncompressed TCP/IP */

struct pc_iphdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off; /* flags (3 bits) and offset in 8-byte units (13 bits) */
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

#define PC_IP_MF 0x2000
#define PC_IP_DF 0x4000
#define PC_IP_OFFSET 0x1fff

struct pc_ipv6hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* Hop-by-hop, routing, destination options and AH all start with these two bytes. */
struct pc_ipv6_exthdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct pc_ipv6_fraghdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units (13 bits), 2 reserved bits, M flag */
	__be32 id;
};

#define PC_IP6_OFFSET 0xfff8
#define PC_IP6_MF 0x0001

struct pc_tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res; /* data offset in 32-bit words, upper nibble */
	__u8 flags;
	__be16 window;
	__u16 check;
	__be16 urg_ptr;
};

#define PC_TCP_FIN 0x01
#define PC_TCP_SYN 0x02
#define PC_TCP_RST 0x04
#define PC_TCP_ACK 0x10

/* What the parser made of a frame. */
enum pc_parse {
	PC_P_CONTINUE = 0,
	PC_P_TCP,       /* TCP header found; ports valid (full header unless ports_only) */
	PC_P_NOT_TCP,   /* not TCP over IP, or an encapsulation we do not parse: pass */
	PC_P_MALFORMED, /* truncated or invalid: pass untouched */
	PC_P_FRAGMENT,  /* non-first fragment: no ports, pass */
	PC_P_EVASION,   /* transport header out of reach (IPv6 chain longer than PC_MAX_EXT_HDRS,
			 * or a first fragment that ends before the ports): judge on source */
	PC_P_TOO_MANY_TAGS, /* still VLAN-tagged after PC_MAX_VLAN_TAGS tags: drop */
};

struct pc_cursor {
	void *pos;
	void *end;
};

/* Everything the verdict and the reply need, copied out of the frame. */
struct pc_pkt {
	__u32 l3_off;    /* IP header offset from the frame start (<= PC_MAX_L2) */
	__u32 pppoe_off; /* PPPoE header offset, 0 when there is none */
	__u32 payload;   /* TCP payload bytes, from the IP length fields */
	__be32 seq;
	__be16 sport;
	__be16 dport;
	__u8 family;     /* enum pc_family */
	__u8 tcp_flags;
	__u8 fragment;   /* first fragment of a fragmented datagram */
	__u8 ports_only; /* first fragment too short for a full TCP header */
	__u16 l3_proto;  /* ethertype of the IP header at l3_off (host order) */
	__u8 vj;         /* PPP VJ-uncompressed: IPv4 whose protocol byte is a VJ slot */
	__u8 pad;
	__u8 saddr[16];  /* IPv4 uses the first 4 bytes, the rest stay zero */
	__u8 daddr[16];
	/* Who sent it at layer 2, for the offender record (zero when absent). */
	__u8 smac[6];    /* Ethernet source */
	__u16 vlan[2];   /* VLAN ids, outer first (host order) */
	__u16 pppoe_sid; /* PPPoE session id (host order) */
};

/* TCP. ip_payload is the length the IP header(s) announce for what follows them.
 * A TCP header with doff < 5 is malformed. A truncated header is malformed too, except
 * in a first fragment that still shows the ports: that is judged on its ports (the rest
 * of the segment would follow in fragments we pass), without a reply. */
static __always_inline int parse_tcp(struct pc_cursor *c, struct pc_pkt *p, __u32 ip_payload)
{
	struct pc_tcphdr *th = c->pos;

	/* A first fragment that ends before the ports: they come in a later fragment, which
	 * a receiver may reassemble, so it is judged on its source (PC_P_EVASION). */
	if (c->pos + 4 > c->end)
		return p->fragment ? PC_P_EVASION : PC_P_MALFORMED;
	p->sport = th->source;
	p->dport = th->dest;
	if ((void *)(th + 1) > c->end) {
		if (!p->fragment)
			return PC_P_MALFORMED;
		p->ports_only = 1;
		return PC_P_TCP;
	}

	__u32 hlen = (__u32)(th->doff_res >> 4) * 4;
	if (hlen < sizeof(*th))
		return PC_P_MALFORMED;
	p->tcp_flags = th->flags;
	p->seq = th->seq;
	p->payload = ip_payload > hlen ? ip_payload - hlen : 0;
	return PC_P_TCP;
}

/* IPv4. Options are skipped using ihl (ihl < 5 is malformed). A non-first fragment has
 * no ports and passes; a first fragment is judged like any packet. */
static __always_inline int parse_ipv4(struct pc_cursor *c, struct pc_pkt *p)
{
	struct pc_iphdr *ip = c->pos;

	if ((void *)(ip + 1) > c->end)
		return PC_P_MALFORMED;
	if ((ip->ver_ihl >> 4) != 4)
		return PC_P_MALFORMED;
	__u32 hlen = (__u32)(ip->ver_ihl & 0x0f) * 4;
	if (hlen < sizeof(*ip))
		return PC_P_MALFORMED;
	if (c->pos + hlen > c->end)
		return PC_P_MALFORMED;

	__u16 frag = bpf_ntohs(ip->frag_off);
	if (frag & PC_IP_OFFSET)
		return PC_P_FRAGMENT;
	/* A VJ-uncompressed frame carries a VJ connection slot in the protocol byte; the
	 * kernel (slhc_remember) writes IPPROTO_TCP over it and routes it as TCP. */
	if (ip->protocol != IPPROTO_TCP && !p->vj)
		return PC_P_NOT_TCP;
	p->fragment = (frag & PC_IP_MF) != 0;
	p->family = PC_FAM_V4;
	__builtin_memcpy(p->saddr, ip->saddr, 4);
	__builtin_memcpy(p->daddr, ip->daddr, 4);

	__u32 tot = bpf_ntohs(ip->tot_len);
	c->pos += hlen;
	return parse_tcp(c, p, tot > hlen ? tot - hlen : 0);
}

/* IPv6 with a bounded walk over extension headers: hop-by-hop, routing, destination
 * options, fragment and AH. A fragment header with a non-zero offset means a non-first
 * fragment (pass); ESP, "no next header" and any other protocol are not TCP (pass).
 * A chain still going after PC_MAX_EXT_HDRS headers is PC_P_EVASION: the caller drops
 * it if the source's rule blocks, so a long chain is no way around the policy. */
static __always_inline int parse_ipv6(struct pc_cursor *c, struct pc_pkt *p)
{
	struct pc_ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return PC_P_MALFORMED;
	if ((*(__u8 *)ip6 >> 4) != 6)
		return PC_P_MALFORMED;
	p->family = PC_FAM_V6;
	__builtin_memcpy(p->saddr, ip6->saddr, 16);
	__builtin_memcpy(p->daddr, ip6->daddr, 16);

	__u32 plen = bpf_ntohs(ip6->payload_len);
	__u32 ext = 0;
	__u8 nh = ip6->nexthdr;
	c->pos = ip6 + 1;

#pragma unroll
	for (int i = 0; i < PC_MAX_EXT_HDRS; i++) {
		__u32 hlen;

		if (nh == IPPROTO_TCP)
			break;
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
		    nh == IPPROTO_AH) {
			struct pc_ipv6_exthdr *eh = c->pos;

			if ((void *)(eh + 1) > c->end)
				return p->fragment ? PC_P_EVASION : PC_P_MALFORMED;
			if (nh == IPPROTO_AH)
				hlen = ((__u32)eh->hdrlen + 2) * 4;
			else
				hlen = ((__u32)eh->hdrlen + 1) * 8;
			nh = eh->nexthdr;
		} else if (nh == IPPROTO_FRAGMENT) {
			struct pc_ipv6_fraghdr *fh = c->pos;

			if ((void *)(fh + 1) > c->end)
				return p->fragment ? PC_P_EVASION : PC_P_MALFORMED;
			__u16 off = bpf_ntohs(fh->frag_off);
			if (off & PC_IP6_OFFSET)
				return PC_P_FRAGMENT;
			if (off & PC_IP6_MF)
				p->fragment = 1;
			hlen = sizeof(*fh);
			nh = fh->nexthdr;
		} else {
			return PC_P_NOT_TCP;
		}
		/* Cut short inside a first fragment: the rest of the chain (and the TCP
		 * header) comes in a later fragment (RFC 7112 forbids it, but a receiver
		 * may reassemble it), so it is judged on its source like a long chain. */
		if (c->pos + hlen > c->end)
			return p->fragment ? PC_P_EVASION : PC_P_MALFORMED;
		c->pos += hlen;
		ext += hlen;
	}

	if (nh != IPPROTO_TCP) {
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
		    nh == IPPROTO_AH || nh == IPPROTO_FRAGMENT)
			return PC_P_EVASION;
		return PC_P_NOT_TCP;
	}
	return parse_tcp(c, p, plen > ext ? plen - ext : 0);
}

/* The PPP protocol field after a PPPoE session header: 1 byte if its first byte is odd
 * (protocol-field compression), else 2. Linux's PPP stack (ppp_input) decompresses a
 * 1-byte field on every received frame, negotiated or not, so both forms are routed
 * and both are parsed here. What each protocol means for us:
 *   IPv4 0x21, IPv6 0x57  judged as IP.
 *   VJ uncompressed 0x2f  a full IPv4+TCP header whose protocol byte holds a VJ slot;
 *                         the kernel restores it to TCP and routes it (its VJ state is
 *                         allocated for every PPP unit, so this needs no negotiation).
 *                         Judged as IPv4 TCP; never answered with an RST (a reply would
 *                         need a different PPP protocol): a reset verdict drops it.
 *   VJ compressed 0x2d    carries neither addresses nor ports: only deltas against a
 *                         slot whose header came in a 0x2f frame, which was judged, so
 *                         it can only continue a connection we let through. Passed.
 *   anything else         not IP to us (LCP, IPCP, CCP 0xfd, multilink 0x3d, MPLS...):
 *                         passed. Compressed (CCP) and multilink frames carry IP only if
 *                         the BNG negotiated them; docs/DATAPLANE.md says which settings
 *                         keep them off. */
static __always_inline int parse_ppp(struct pc_cursor *c, struct pc_pkt *p, __be16 *proto,
				     __u32 *off)
{
	__u8 *pp = c->pos;
	__u16 ppp;

	if ((void *)(pp + 1) > c->end)
		return PC_P_MALFORMED;
	if (pp[0] & 1) {
		ppp = pp[0];
		c->pos = pp + 1;
		*off += 1;
	} else {
		if ((void *)(pp + 2) > c->end)
			return PC_P_MALFORMED;
		ppp = ((__u16)pp[0] << 8) | pp[1];
		c->pos = pp + 2;
		*off += 2;
	}
	switch (ppp) {
	case PC_PPP_IPV4:
		*proto = bpf_htons(ETH_P_IP);
		return PC_P_CONTINUE;
	case PC_PPP_IPV6:
		*proto = bpf_htons(ETH_P_IPV6);
		return PC_P_CONTINUE;
	case PC_PPP_VJ_UNCOMP:
		p->vj = 1;
		*proto = bpf_htons(ETH_P_IP);
		return PC_P_CONTINUE;
	}
	return PC_P_NOT_TCP;
}

static __always_inline int vlan_tpid(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* Ethernet, then up to PC_MAX_VLAN_TAGS VLAN tags (802.1Q or 802.1ad, in any order;
 * the offender record keeps the first two ids), then an optional PPPoE session header
 * and its PPP protocol (parse_ppp). More tags than that: PC_P_TOO_MANY_TAGS. PPPoE
 * discovery, other PPP protocols and unknown ethertypes are not ours: pass.
 * Fills p->l3_off and p->l3_proto and returns PC_P_CONTINUE for IPv4/IPv6. */
static __always_inline int parse_l2(struct pc_cursor *c, struct pc_pkt *p)
{
	struct pc_ethhdr *eth = c->pos;
	__u32 off = sizeof(*eth);

	if ((void *)(eth + 1) > c->end)
		return PC_P_MALFORMED;
	__be16 proto = eth->proto;
	__builtin_memcpy(p->smac, eth->src, ETH_ALEN);
	c->pos = eth + 1;

#pragma unroll
	for (int i = 0; i < PC_MAX_VLAN_TAGS; i++) {
		if (!vlan_tpid(proto))
			break;
		struct pc_vlanhdr *vh = c->pos;

		if ((void *)(vh + 1) > c->end)
			return PC_P_MALFORMED;
		proto = vh->proto;
		if (i < 2)
			p->vlan[i] = bpf_ntohs(vh->tci) & 0x0fff;
		c->pos = vh + 1;
		off += sizeof(*vh);
	}
	if (vlan_tpid(proto))
		return PC_P_TOO_MANY_TAGS;

	if (proto == bpf_htons(ETH_P_PPP_SES)) {
		struct pc_pppoehdr *ph = c->pos;

		if ((void *)(ph + 1) > c->end)
			return PC_P_MALFORMED;
		/* ver_type and code are not checked: the kernel's pppoe_rcv does not check
		 * them either (it finds the session by id and MAC), so a frame with any
		 * values there is routed, and judged here. */
		p->pppoe_off = off;
		p->pppoe_sid = bpf_ntohs(ph->session);
		c->pos = ph + 1;
		off += sizeof(*ph);
		int r = parse_ppp(c, p, &proto, &off);
		if (r != PC_P_CONTINUE)
			return r;
	}

	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return PC_P_NOT_TCP;
	p->l3_off = off;
	p->l3_proto = bpf_ntohs(proto);
	return PC_P_CONTINUE;
}

/* A frame from an interface without a link-layer header (tun, ppp, WireGuard, IP
 * tunnels): it starts at the IP header, whose version nibble says which. The kernel's
 * ip_rcv/ipv6_rcv drop a packet whose version does not match, so the nibble is what
 * the router goes by. l3_off 0 tells the reply there are no MACs to swap. */
static __always_inline int parse_raw_ip(struct pc_cursor *c, struct pc_pkt *p)
{
	__u8 *v = c->pos;

	if ((void *)(v + 1) > c->end)
		return PC_P_MALFORMED;
	p->l3_off = 0;
	switch (*v >> 4) {
	case 4:
		p->l3_proto = ETH_P_IP;
		return PC_P_CONTINUE;
	case 6:
		p->l3_proto = ETH_P_IPV6;
		return PC_P_CONTINUE;
	}
	return PC_P_NOT_TCP;
}

/* IP and TCP, from p->l3_off. A global (non-inlined) function: the verifier checks it
 * once, with the L2 offset as one bounded unknown, instead of once per L2 layout; that
 * keeps the IPv6 extension-header walk within the verifier's budget. */
__attribute__((noinline)) int pc_parse_ip(struct xdp_md *ctx, struct pc_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (!p)
		return PC_P_MALFORMED;
	__u32 off = p->l3_off;
	if (off > PC_MAX_L2)
		return PC_P_MALFORMED;
	struct pc_cursor c = { .pos = data + off, .end = end };

	if (p->l3_proto == ETH_P_IP)
		return parse_ipv4(&c, p);
	return parse_ipv6(&c, p);
}

/* The whole parse: L2 (or none, on a raw-IP interface) inline, IP and TCP in the
 * global function. */
static __always_inline int parse_frame(struct xdp_md *ctx, struct pc_pkt *p, int raw_ip)
{
	struct pc_cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	int r = raw_ip ? parse_raw_ip(&c, p) : parse_l2(&c, p);

	if (r != PC_P_CONTINUE)
		return r;
	return pc_parse_ip(ctx, p);
}

#endif
