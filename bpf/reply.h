/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Checksums and the RST+ACK reply, built in place (katran/xdp_synproxy style).
 *
 * The reply keeps the frame's L2 headers (VLAN tags, PPPoE session) and replaces
 * everything from the IP header on with a fresh 20/40-byte IP header and a bare 20-byte
 * TCP header: addresses, ports and MACs swapped, seq 0, ack = SYN seq + 1 + payload
 * (RFC 9293 3.10.7.1 for a segment without ACK), options and payload stripped. */
#ifndef PC_REPLY_H
#define PC_REPLY_H

#include "parsing.h"

/* One's-complement sum of n 16-bit words read in memory order. The sum is byte-order
 * independent, so folding it and storing the complement in memory order is right. */
static __always_inline __u32 csum_words(const void *buf, int words, __u32 sum)
{
	const __u16 *w = buf;

#pragma unroll
	for (int i = 0; i < words; i++)
		sum += w[i];
	return sum;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Rewrite the frame into the RST+ACK answering p and trim it. Returns 0 when the frame
 * is ready for XDP_TX, -1 when it could not be built (the caller drops). Global, so
 * the verifier checks it once rather than once per parse path. */
__attribute__((noinline)) int pc_build_rst(struct xdp_md *ctx, const struct pc_pkt *p)
{
	if (!p)
		return -1;

	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct pc_ethhdr *eth = data;
	__u8 mac[ETH_ALEN];
	__u32 l3 = p->l3_off;
	__u32 iplen;

	/* l3_off 0: a raw-IP interface, no link-layer header to turn around. */
	if (l3) {
		if ((void *)(eth + 1) > end)
			return -1;
		__builtin_memcpy(mac, eth->dst, ETH_ALEN);
		__builtin_memcpy(eth->dst, eth->src, ETH_ALEN);
		__builtin_memcpy(eth->src, mac, ETH_ALEN);
	}

	struct pc_tcphdr th = {
		.source = p->dport,
		.dest = p->sport,
		.seq = 0,
		.ack_seq = bpf_htonl(bpf_ntohl(p->seq) + 1 + p->payload),
		.doff_res = 5 << 4,
		.flags = PC_TCP_RST | PC_TCP_ACK,
	};

	if (l3 > PC_MAX_L2)
		return -1;

	if (p->family == PC_FAM_V4) {
		struct pc_iphdr ip = {
			.ver_ihl = 0x45,
			.tot_len = bpf_htons(sizeof(ip) + sizeof(th)),
			.frag_off = bpf_htons(PC_IP_DF),
			.ttl = PC_RST_TTL,
			.protocol = IPPROTO_TCP,
		};
		__builtin_memcpy(ip.saddr, p->daddr, 4);
		__builtin_memcpy(ip.daddr, p->saddr, 4);
		ip.check = csum_fold(csum_words(&ip, sizeof(ip) / 2, 0));

		__u32 sum = csum_words(ip.saddr, 4, 0);
		sum += bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(th));
		th.check = csum_fold(csum_words(&th, sizeof(th) / 2, sum));

		void *pos = data + l3;
		if (pos + sizeof(ip) + sizeof(th) > end)
			return -1;
		__builtin_memcpy(pos, &ip, sizeof(ip));
		__builtin_memcpy(pos + sizeof(ip), &th, sizeof(th));
		iplen = sizeof(ip) + sizeof(th);
	} else {
		struct pc_ipv6hdr ip6 = {
			.ver_tc_flow = bpf_htonl(0x60000000),
			.payload_len = bpf_htons(sizeof(th)),
			.nexthdr = IPPROTO_TCP,
			.hop_limit = PC_RST_TTL,
		};
		__builtin_memcpy(ip6.saddr, p->daddr, 16);
		__builtin_memcpy(ip6.daddr, p->saddr, 16);

		__u32 sum = csum_words(ip6.saddr, 16, 0);
		sum += bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(th));
		th.check = csum_fold(csum_words(&th, sizeof(th) / 2, sum));

		void *pos = data + l3;
		if (pos + sizeof(ip6) + sizeof(th) > end)
			return -1;
		__builtin_memcpy(pos, &ip6, sizeof(ip6));
		__builtin_memcpy(pos + sizeof(ip6), &th, sizeof(th));
		iplen = sizeof(ip6) + sizeof(th);
	}

	if (p->pppoe_off) {
		__u32 po = p->pppoe_off;
		if (po > PC_MAX_L2)
			return -1;
		struct pc_pppoehdr *ph = data + po;
		if ((void *)(ph + 1) > end)
			return -1;
		/* The PPP protocol field (1 or 2 bytes) sits between PPPoE and IP. The reply
		 * is a well-formed session frame whatever version/type and code the SYN
		 * carried (the kernel routes those unchecked). */
		ph->ver_type = 0x11;
		ph->code = 0;
		ph->length = bpf_htons(iplen + (l3 - po - sizeof(*ph)));
	}

	int delta = (int)(l3 + iplen) - (int)(end - data);
	if (delta < 0 && bpf_xdp_adjust_tail(ctx, delta))
		return -1;
	return 0;
}

#endif
