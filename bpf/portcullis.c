//go:build ignore
// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* Portcullis: judge subscriber packets to governed TCP ports (default 25) by source.
 *
 * Read top to bottom as the packet path: parse -> governed port? -> relay? ->
 * quarantine -> ranges -> default (scoped entries of the ingress interface first) -> act (pass / drop / reset / monitor) -> one exit that counts.
 * Anything we cannot positively identify as TCP to a governed port passes untouched,
 * with one exception (an IPv6 chain too long to reach TCP, from a blocking source). */

#include "headers/kernel.h"
#include "headers/bpf/bpf_helpers.h"
#include "headers/bpf/bpf_endian.h"

#include "limits.h"
#include "types.h"
#include "maps.h"
#include "parsing.h"
#include "reply.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* The judgement of one packet, filled along the path and counted at the exit. */
struct pc_result {
	__u32 path;    /* enum pc_reason, first block */
	__u32 flags;   /* bit per flag reason (second block) */
	__u32 rule;
	__u8 outcome;  /* enum pc_outcome, when judged */
	__u8 judged;
};

static __always_inline int port_governed(const struct pc_config *cfg, __be16 port_be)
{
	__u32 port = bpf_ntohs(port_be);

	return (cfg->governed[(port >> 6) & (PC_PORT_WORDS - 1)] >> (port & 63)) & 1;
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d). Linux forwards packets with such a
 * source (only local TCPv6 delivery refuses them), so they are judged as the IPv4
 * address they map, as the policy and `explain` read them. */
static __always_inline int v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/* The scope group of the interface the packet came in on; 0 (no scoped entry applies
 * there) for every interface of a policy without scopes, at the cost of one flag test. */
static __always_inline __u32 scope_group(const struct pc_config *cfg, struct xdp_md *ctx)
{
	struct pc_scope_key k = { .slot = cfg->slot & (PC_SLOTS - 1) };
	__u32 *g;

	if (!(cfg->flags & PC_CFG_SCOPED))
		return 0;
	k.ifindex = ctx->ingress_ifindex;
	g = bpf_map_lookup_elem(&scopes, &k);
	return g ? *g & ~PC_GROUP_QUARANTINE : 0;
}

static __always_inline struct pc_rule *unexpired(struct pc_rule *r, __u64 now)
{
	if (r && r->expires && now >= r->expires)
		return 0;
	return r;
}

/* The source lookup of one family in the tables of one slot: with a scope group, the
 * group's entries first (see model.ScopePlan for why the first hit is the longest
 * match that applies on this interface). quarantine selects the quarantine tables.
 * One body for both families: the key types and lengths differ, nothing else. */
#define PC_FIND(NAME, LPM_KEY, SCOPED_KEY, BYTES, SCOPED, QUARANTINE, RANGES)              \
	static __always_inline struct pc_rule *NAME(const __u8 *addr, __u32 slot,          \
						    __u32 group, int quarantine, __u64 now) \
	{                                                                                  \
		LPM_KEY k = { .prefixlen = BYTES * 8 };                                    \
		struct pc_rule *r = 0;                                                     \
		void *t;                                                                   \
                                                                                           \
		if (group) {                                                               \
			SCOPED_KEY sk = { .prefixlen = 32 + BYTES * 8 };                   \
                                                                                           \
			sk.group = quarantine ? group | PC_GROUP_QUARANTINE : group;       \
			__builtin_memcpy(sk.addr, addr, BYTES);                            \
			t = bpf_map_lookup_elem(&SCOPED, &slot);                           \
			if (t)                                                             \
				r = bpf_map_lookup_elem(t, &sk);                           \
			if (quarantine)                                                    \
				r = unexpired(r, now);                                     \
			if (r)                                                             \
				return r;                                                  \
		}                                                                          \
		__builtin_memcpy(k.addr, addr, BYTES);                                     \
		t = bpf_map_lookup_elem(quarantine ? (void *)&QUARANTINE : (void *)&RANGES, &slot); \
		if (t)                                                                     \
			r = bpf_map_lookup_elem(t, &k);                                    \
		return quarantine ? unexpired(r, now) : r;                                 \
	}

PC_FIND(find_v4, struct pc_lpm_v4, struct pc_scoped_v4, 4, scoped_v4, quarantine_v4, ranges_v4)
PC_FIND(find_v6, struct pc_lpm_v6, struct pc_scoped_v6, 16, scoped_v6, quarantine_v6, ranges_v6)

/* A packet's source as the tables key it, worked out once per packet: an IPv4-mapped
 * IPv6 source is looked up as the IPv4 address it maps, as the policy and `explain`
 * read it. */
struct pc_source {
	const __u8 *addr;
	__u32 slot;
	__u32 group; /* the ingress interface's scope group (scope_group) */
	int v4;
};

static __always_inline struct pc_source source_of(const struct pc_config *cfg, const struct pc_pkt *p,
						  struct xdp_md *ctx)
{
	struct pc_source s = { .addr = p->saddr, .slot = cfg->slot & (PC_SLOTS - 1),
			       .group = scope_group(cfg, ctx), .v4 = p->family == PC_FAM_V4 };

	if (!s.v4 && v4_mapped(p->saddr)) {
		s.addr = p->saddr + 12;
		s.v4 = 1;
	}
	return s;
}

static __always_inline struct pc_rule *find_source(const struct pc_source *s, int quarantine, __u64 now)
{
	if (s->v4)
		return find_v4(s->addr, s->slot, s->group, quarantine, now);
	return find_v6(s->addr, s->slot, s->group, quarantine, now);
}

/* Quarantine first (an entry past its expiry is ignored, so it lifts on time without
 * the daemon), then the longest matching range, then the default (rule 0). */
static __always_inline __u8 lookup_source(const struct pc_config *cfg, const struct pc_source *s,
					  __u64 now, struct pc_result *res)
{
	struct pc_rule *r = find_source(s, 1, now);

	if (r)
		res->flags |= 1 << PC_R_QUARANTINE;
	else
		r = find_source(s, 0, now);
	if (!r) {
		res->rule = 0;
		return cfg->default_verdict;
	}
	res->rule = r->rule;
	return r->verdict;
}

/* The relay towards the packet's destination that lets its port through, if any: the
 * most specific relay prefix decides, like the most specific range for sources. */
static __always_inline struct pc_relay *relay_of(const struct pc_config *cfg, const struct pc_pkt *p)
{
	__u32 slot = cfg->slot & (PC_SLOTS - 1);
	struct pc_relay *rl = 0;
	__u16 port;
	void *t;

	if (!(cfg->flags & PC_CFG_RELAYS))
		return 0;
	if (p->family == PC_FAM_V4 || v4_mapped(p->daddr)) {
		struct pc_lpm_v4 k = { .prefixlen = 32 };

		__builtin_memcpy(k.addr, p->family == PC_FAM_V4 ? p->daddr : p->daddr + 12, 4);
		t = bpf_map_lookup_elem(&relays_v4, &slot);
		if (t)
			rl = bpf_map_lookup_elem(t, &k);
	} else {
		struct pc_lpm_v6 k = { .prefixlen = 128 };

		__builtin_memcpy(k.addr, p->daddr, 16);
		t = bpf_map_lookup_elem(&relays_v6, &slot);
		if (t)
			rl = bpf_map_lookup_elem(t, &k);
	}
	if (!rl || !rl->nports)
		return rl;
	port = bpf_ntohs(p->dport);
#pragma unroll
	for (int i = 0; i < PC_RELAY_PORTS; i++)
		if (i < rl->nports && rl->ports[i] == port)
			return rl;
	return 0;
}

/* Per-CPU token bucket; no atomics needed since only this CPU touches its bucket and
 * XDP programs do not preempt each other on one CPU. */
static __always_inline int rst_allowed(const struct pc_config *cfg, __u64 now)
{
	__u32 zero = 0;

	if (!cfg->rst_rate)
		return 1;
	struct pc_bucket *b = bpf_map_lookup_elem(&rst_bucket, &zero);
	if (!b)
		return 0;
	__u64 cost = 1000000000ULL / cfg->rst_rate;
	__u64 cap = cost * (cfg->rst_burst ? cfg->rst_burst : 1);
	__u64 credit = b->credit + (now - b->last);

	if (credit > cap)
		credit = cap;
	b->last = now;
	if (credit < cost) {
		b->credit = credit;
		return 0;
	}
	b->credit = credit - cost;
	return 1;
}

/* The offender record's hash of a source (family, address): the address words folded
 * with a multiply each (so that IPv4 sources differing only in their last bits spread),
 * then mixed down. loader/offenders.go computes the same (sourceHash) to read it back. */
static __always_inline __u64 pc_src_hash(__u8 family, const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;
	__u64 h = (__u64)family + 1;

#pragma unroll
	for (int i = 0; i < 4; i++)
		h = (h ^ w[i]) * 0xff51afd7ed558ccdULL;
	return h ^ (h >> 29);
}

/* Column of the hash in sketch row i, and the source's bucket in the table of named
 * sources: multiply-shift, one odd constant each (loader/offenders.go mirrors them). */
_Static_assert(PC_SKETCH_DEPTH >= 1 && PC_SKETCH_DEPTH <= 4, "pc_sketch_col has 4 row constants");

static __always_inline __u32 pc_sketch_col(__u64 h, int i)
{
	__u64 m = i == 0 ? 0x9e3779b97f4a7c15ULL : i == 1 ? 0xc2b2ae3d27d4eb4fULL :
		  i == 2 ? 0x165667b19e3779f9ULL : 0xd6e8feb86659fd93ULL;

	return (h * m) >> (64 - PC_SKETCH_WIDTH_LOG);
}

static __always_inline __u32 pc_bucket_of(__u64 h)
{
	return (h * 0x94d049bb133111ebULL) >> (64 - PC_OFFENDER_BUCKETS_LOG);
}

static __always_inline int pc_holds(const struct pc_offender *o, const struct pc_pkt *p)
{
	const __u32 *a = (const __u32 *)o->src.addr, *b = (const __u32 *)p->saddr;

	return o->est && o->src.family == p->family && a[0] == b[0] && a[1] == b[1] &&
	       a[2] == b[2] && a[3] == b[3];
}

/* Remember a blocked (or monitored) attempt for the "who keeps trying" report, at a
 * cost that does not grow with the number of sources: everything is per CPU (this CPU's
 * maps only; XDP programs do not preempt each other on one CPU, so no atomics) and
 * nothing is inserted.
 *  1. Count it in this CPU's count-min sketch, with the conservative update (a counter
 *     is raised only as far as the new estimate): every counter of a source stays at
 *     least its true count on this CPU, so the union the loader reads (each row summed
 *     over the CPUs, then the least row) never undercounts.
 *  2. Name it in this CPU's table of sources, a bucket of two chosen by the hash: the
 *     holder of an entry updates it; another source takes the entry with the lower
 *     estimate only if its own estimate (after this attempt) is at least as high, so a
 *     spray of one-off sources cannot evict the sources that keep trying.
 * Both go to the current period's half of the maps (offender_period); the daemon
 * clears the other half and makes it current at each turn. */
static __always_inline void record_offender(const struct pc_pkt *p, const struct pc_result *res,
					    __u64 now)
{
	__u64 h = pc_src_hash(p->family, p->saddr);
	__u32 *cell[PC_SKETCH_DEPTH];
	__u32 est = 0xffffffff;
	__u32 zero = 0;
	struct pc_offender_period *per = bpf_map_lookup_elem(&offender_period, &zero);
	__u32 cur = per ? per->current & 1 : 0;
	__u64 *n = bpf_map_lookup_elem(&offender_attempts, &cur);

	if (n)
		*n += 1;
#pragma unroll
	for (int i = 0; i < PC_SKETCH_DEPTH; i++) {
		__u32 row = cur * PC_SKETCH_DEPTH + i;
		struct pc_sketch_row *r = bpf_map_lookup_elem(&offender_sketch, &row);

		if (!r)
			return;
		cell[i] = &r->count[pc_sketch_col(h, i)];
		if (*cell[i] < est)
			est = *cell[i];
	}
	if (est != 0xffffffff) /* saturated: stays there */
		est++;
#pragma unroll
	for (int i = 0; i < PC_SKETCH_DEPTH; i++)
		if (*cell[i] < est)
			*cell[i] = est;

	__u32 b = cur * PC_OFFENDER_BUCKETS + pc_bucket_of(h);
	struct pc_offender_bucket *bk = bpf_map_lookup_elem(&offender_slots, &b);
	struct pc_offender *o;

	if (!bk)
		return;
	if (pc_holds(&bk->way[0], p)) {
		o = &bk->way[0];
	} else if (pc_holds(&bk->way[1], p)) {
		o = &bk->way[1];
	} else {
		o = bk->way[0].est <= bk->way[1].est ? &bk->way[0] : &bk->way[1];
		if (est < o->est)
			return;
		o->src.family = p->family;
		__builtin_memcpy(o->src.addr, p->saddr, 16);
		o->first_seen = now;
	}
	o->est = est;
	o->last_seen = now;
	o->rule = res->rule;
	o->port = p->dport;
	o->outcome = res->outcome;
	__builtin_memcpy(o->mac, p->smac, ETH_ALEN);
	o->vlan[0] = p->vlan[0];
	o->vlan[1] = p->vlan[1];
	o->pppoe_sid = p->pppoe_sid;
}

/* A control-plane probe (PC_PROBE_MAGIC in the XDP metadata) is judged like any packet
 * but leaves no trace: production counters, offenders and RST tokens stay untouched. */
static __always_inline int is_probe(struct xdp_md *ctx)
{
	void *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;

	if (meta + sizeof(__u32) > data)
		return 0;
	return *(__u32 *)meta == PC_PROBE_MAGIC;
}

static __always_inline void count(void *map, __u32 key, __u64 bytes)
{
	struct pc_counter *c = bpf_map_lookup_elem(map, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The whole judgement of one frame. raw_ip is a compile-time constant at each entry
 * point below: frames that start at an Ethernet header, or at the IP header. */
static __always_inline int judge(struct xdp_md *ctx, const int raw_ip)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct pc_result res = { .path = PC_R_NO_POLICY };
	struct pc_pkt p = {};
	__u32 action = XDP_PASS;
	__u32 zero = 0;
	int probe = is_probe(ctx);
	struct pc_source src;
	struct pc_relay *relay;
	__u64 now;
	__u8 verdict;

	/* 1. The live policy. No policy loaded: pass everything. */
	void *cfg_map = bpf_map_lookup_elem(&policy, &zero);
	if (!cfg_map)
		goto out;
	struct pc_config *cfg = bpf_map_lookup_elem(cfg_map, &zero);
	if (!cfg)
		goto out;

	/* 2. Parse. Only TCP with ports (or an over-long IPv6 chain) goes on. */
	switch (parse_frame(ctx, &p, raw_ip)) {
	case PC_P_TCP:
		break;
	case PC_P_EVASION:
		goto evasion;
	case PC_P_FRAGMENT:
		res.path = PC_R_FRAGMENT;
		goto out;
	case PC_P_MALFORMED:
		res.path = PC_R_MALFORMED;
		goto out;
	default:
		res.path = PC_R_NOT_TCP;
		goto out;
	}

	/* 3. Governed port? Ordinary traffic stops here, before any address lookup. */
	if (!port_governed(cfg, p.dport)) {
		res.path = PC_R_NOT_GOVERNED;
		goto out;
	}

	/* 4. Where it goes: towards a relay (the ISP's own mail servers) it passes, from
	 * anyone, quarantined sources too unless the relay says otherwise. */
	res.path = PC_R_JUDGED;
	res.judged = 1;
	now = bpf_ktime_get_boot_ns();
	relay = relay_of(cfg, &p);
	if (relay) {
		struct pc_rule *q = 0;

		if (relay->flags & PC_RELAY_BLOCK_QUARANTINED) {
			src = source_of(cfg, &p, ctx);
			q = find_source(&src, 1, now);
		}
		if (!q) {
			res.rule = relay->rule;
			res.outcome = PC_OUT_PASS;
			goto out;
		}
		res.flags |= 1 << PC_R_QUARANTINE;
		res.rule = q->rule;
		verdict = q->verdict;
	} else {
		/* 5. Who sent it: quarantine, then ranges, then the default, each looking at
		 * the entries scoped to this interface first. */
		src = source_of(cfg, &p, ctx);
		verdict = lookup_source(cfg, &src, now, &res);
	}

	/* 6. Act. */
	switch (verdict) {
	case PC_DROP:
		res.outcome = PC_OUT_DROP;
		action = XDP_DROP;
		break;
	case PC_RESET:
		/* Only a bare SYN in a whole segment gets an RST; other segments, fragments,
		 * PPP VJ frames and SYNs over the RST budget are dropped. */
		res.outcome = PC_OUT_DROP;
		action = XDP_DROP;
		if ((p.tcp_flags & (PC_TCP_SYN | PC_TCP_ACK | PC_TCP_RST)) != PC_TCP_SYN ||
		    p.fragment || p.vj)
			break;
		if (!probe && !rst_allowed(cfg, now)) {
			res.flags |= 1 << PC_R_RATE_LIMITED;
			break;
		}
		if (pc_build_rst(ctx, &p) == 0) {
			res.outcome = PC_OUT_RST;
			res.flags |= 1 << PC_R_RST_SENT;
			action = XDP_TX;
		}
		break;
	case PC_MONITOR:
		res.outcome = PC_OUT_MONITOR;
		break;
	default:
		res.outcome = PC_OUT_PASS;
		goto out;
	}
	if (!probe)
		record_offender(&p, &res, now);
	goto out;

evasion:
	/* The transport header is out of reach. If this source's rule blocks, drop: a long
	 * chain must not be a way around the policy. Otherwise pass as we would anyway. */
	res.path = PC_R_EVASION;
	res.judged = 1;
	now = bpf_ktime_get_boot_ns();
	/* No port, so no relay; scopes apply. */
	src = source_of(cfg, &p, ctx);
	verdict = lookup_source(cfg, &src, now, &res);
	if (verdict == PC_DROP || verdict == PC_RESET) {
		res.outcome = PC_OUT_DROP;
		res.flags |= 1 << PC_R_UNPARSEABLE_BLOCKED;
		action = XDP_DROP;
		if (!probe)
			record_offender(&p, &res, now);
	} else if (verdict == PC_MONITOR) {
		res.outcome = PC_OUT_MONITOR;
		if (!probe)
			record_offender(&p, &res, now);
	} else {
		res.outcome = PC_OUT_PASS;
	}

out:
	if (probe)
		return action;
	/* The one exit: every packet counts once in its path reason; judged packets count
	 * per rule x outcome x family and in their flag reasons. Per-CPU maps: no atomics. */
	count(&reasons, res.path, bytes);
	if (res.judged) {
		__u32 rule = res.rule < PC_MAX_RULES ? res.rule : 0;

		count(&stats, (rule * PC_OUT_MAX + res.outcome) * PC_FAM_MAX + p.family, bytes);
#pragma unroll
		for (int i = PC_R_QUARANTINE; i < PC_R_MAX; i++)
			if (res.flags & (1 << i))
				count(&reasons, i, bytes);
	}
	return action;
}

/* Interfaces with an Ethernet header (Ethernet, VLAN, bonds, veth, tap...). */
SEC("xdp")
int portcullis(struct xdp_md *ctx)
{
	return judge(ctx, 0);
}

/* Interfaces whose frames start at the IP header (tun, ppp, WireGuard, IP tunnels).
 * The loader picks this entry point from the interface's link type. */
SEC("xdp")
int portcullis_l3(struct xdp_md *ctx)
{
	return judge(ctx, 1);
}
