//go:build ignore
// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* Portcullis: judge subscriber packets to governed TCP ports (default 25) by source.
 *
 * Read top to bottom as the packet path: parse -> governed port? -> relay? ->
 * quarantine -> ranges -> default (scoped entries of the ingress interface first) -> act (pass / drop / reset / monitor) -> one exit that counts.
 * Anything we cannot positively identify as TCP to a governed port passes untouched,
 * with two exceptions: TCP out of reach (an IPv6 chain too long, a first fragment
 * without ports) from a blocking source, and a frame with more VLAN tags than we
 * read. */

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

/* CLOCK_BOOTTIME, read the first time a packet's judgement needs it (*now == 0 until
 * then): only a quarantine with an expiry and the RST budget do. Reading the clock
 * costs about as much as the rest of a blocked packet's judgement on a VM. */
static __always_inline __u64 boot_ns(__u64 *now)
{
	if (!*now)
		*now = bpf_ktime_get_boot_ns();
	return *now;
}

static __always_inline struct pc_entry *unexpired(struct pc_entry *r, __u64 *now)
{
	if (r && r->expires && boot_ns(now) >= r->expires)
		return 0;
	return r;
}

/* What a source lookup found: the rule that decides and its verdict. */
struct pc_hit {
	__u32 rule;
	__u8 verdict;
	__u8 found;
};

static __always_inline struct pc_hit hit_of(const struct pc_entry *r)
{
	struct pc_hit h = {};

	if (r) {
		h.rule = r->rule;
		h.verdict = r->verdict;
		h.found = 1;
	}
	return h;
}

/* A packet's source as the tables key it, worked out once per packet: an IPv4-mapped
 * IPv6 source is looked up as the IPv4 address it maps, as the policy and `explain`
 * read it. An IPv4 source's DIR-24-8 entry is read here, once. */
struct pc_source {
	const __u8 *addr;
	__u32 slot;
	__u32 group; /* the ingress interface's scope group (scope_group) */
	__u32 a4;    /* IPv4: the address in host order */
	__u32 dir;   /* IPv4: its DIR-24-8 entry (enum pc_dir_bits, dir_entry) */
	__u32 flags; /* the config's (enum pc_config_flag) */
	int v4;
};

/* The DIR-24-8 entry of address a4 (host order) in slot: its /24's entry, or the
 * entry of its group when the /24 has one, with the /24's quarantine mark. */
static __always_inline __u32 dir_entry(__u32 slot, __u32 a4)
{
	__u32 idx = a4 >> 8;
	__u32 key = slot * PC_DIR_CHUNKS + idx / PC_DIR_CHUNK;
	struct pc_dir_chunk *c = bpf_map_lookup_elem(&dir_v4, &key);
	__u32 e, g;

	if (!c)
		return 0;
	e = c->e[idx & (PC_DIR_CHUNK - 1)];
	if (!(e & PC_DIR_GROUP))
		return e;
	g = e & PC_DIR_GROUP_MASK;
	if (g >= PC_DIR8_GROUPS)
		return e & PC_DIR_QUARANTINE;
	key = slot * PC_DIR8_CHUNKS + g * (256 / PC_DIR_CHUNK) + (a4 & 0xff) / PC_DIR_CHUNK;
	c = bpf_map_lookup_elem(&dir8_v4, &key);
	if (!c)
		return e & PC_DIR_QUARANTINE;
	return c->e[a4 & (PC_DIR_CHUNK - 1)] | (e & PC_DIR_QUARANTINE);
}

static __always_inline struct pc_source source_of(const struct pc_config *cfg, const struct pc_pkt *p,
						  struct xdp_md *ctx)
{
	struct pc_source s = { .addr = p->saddr, .slot = cfg->slot & (PC_SLOTS - 1),
			       .group = scope_group(cfg, ctx), .flags = cfg->flags,
			       .v4 = p->family == PC_FAM_V4 };

	if (!s.v4 && v4_mapped(p->saddr)) {
		s.addr = p->saddr + 12;
		s.v4 = 1;
	}
	if (s.v4) {
		s.a4 = ((__u32)s.addr[0] << 24) | ((__u32)s.addr[1] << 16) | ((__u32)s.addr[2] << 8) | s.addr[3];
		s.dir = dir_entry(s.slot, s.a4);
	}
	return s;
}

/* The IPv4 ranges (those on every interface): the address's DIR-24-8 entry, read
 * once per packet by source_of, decides. */
static __always_inline struct pc_hit dir_range(const struct pc_source *s)
{
	struct pc_hit h = {};

	if (s->dir & PC_DIR_HIT) {
		h.rule = s->dir & PC_DIR_RULE;
		h.verdict = (s->dir >> PC_DIR_VERDICT_SHIFT) & 3;
		h.found = 1;
	}
	return h;
}

/* The entry of the longest prefix of table (enum pc_table) of slot that holds addr
 * (4 bytes when v4, else 16), in scope group group (0 for the unscoped tables). */
static __always_inline struct pc_entry *find_prefix(__u32 slot, __u32 table, __u32 group, const __u8 *addr,
						     const int v4)
{
	struct pc_key k = { .prefixlen = 64 + (v4 ? 32 : 128), .table = table, .group = group };
	void *t = bpf_map_lookup_elem(&prefixes, &slot);

	if (!t)
		return 0;
	if (v4)
		__builtin_memcpy(k.addr, addr, 4);
	else
		__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(t, &k);
}

/* The IPv6 ranges of a policy with many (PC_CFG_HASH_V6): binary search on the slot's
 * prefix lengths (lens_v6) in ranges_v6. A probe at the middle length (the lower one of
 * an even count: the longest lengths, /128 customers, are the sparsest, so a source
 * outside them misses a shorter, shared key rather than a random one) that hits (a
 * range or a marker) remembers its best matching range and goes on among the longer
 * lengths, a miss among the shorter; the last hit's is the longest range that holds the
 * address (loader/hash6.go places the markers on the same path). Then, under PC_CFG_RUNTIME_V6, the trie's runtime ranges: the
 * longer match wins, the policy's range on a tie (as the model, which lists runtime
 * entries after the policy's). */
static __always_inline struct pc_hit find_range6(const struct pc_source *s)
{
	struct pc_v6_lens *ls = bpf_map_lookup_elem(&lens_v6, &s->slot);
	void *h = bpf_map_lookup_elem(&ranges_v6, &s->slot);
	const __u32 *a = (const __u32 *)s->addr;
	struct pc_v6_key k = {};
	__u32 *kw = (__u32 *)k.addr;
	struct pc_v6_val *best = 0;
	struct pc_hit hit = {};
	__u32 lo = 0, hi;
	__u8 blen = 0;

	if (!ls || !h)
		return hit;
	hi = ls->n;
#pragma unroll
	for (int i = 0; i < PC_V6_PROBES; i++) {
		__u32 mid = ((lo + hi - 1) >> 1) & (PC_V6_MAX_LENS - 1);
		struct pc_v6_val *v;

		if (lo >= hi)
			continue; /* done: the probes left do nothing (a break defeats the unroll) */
		k.len = ls->len[mid];
		kw[0] = a[0] & ls->mask[mid][0];
		kw[1] = a[1] & ls->mask[mid][1];
		kw[2] = a[2] & ls->mask[mid][2];
		kw[3] = a[3] & ls->mask[mid][3];
		v = bpf_map_lookup_elem(h, &k);
		if (v) {
			best = v;
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	if (best && best->hit) {
		hit.rule = best->rule;
		hit.verdict = best->verdict;
		hit.found = 1;
		blen = best->len;
	}
	if (s->flags & PC_CFG_RUNTIME_V6) {
		struct pc_entry *r = find_prefix(s->slot, PC_T_RANGE_V6, 0, s->addr, 0);

		if (r && (!hit.found || r->plen > blen))
			return hit_of(r);
	}
	return hit;
}

/* The source lookup in the tables of the packet's slot: with a scope group, the
 * group's entries first (see model.ScopePlan for why the first hit is the longest
 * match that applies on this interface); then the quarantines (for IPv4 only when a
 * quarantine overlaps the source's /24, for IPv6 only when the policy has any) or the
 * ranges (IPv4's from the DIR-24-8
 * entry). quarantine selects the quarantine tables. */
static __always_inline struct pc_hit find_source(const struct pc_source *s, int quarantine, __u64 *now)
{
	struct pc_entry *r = 0;

	if (s->group) {
		__u32 g = quarantine ? s->group | PC_GROUP_QUARANTINE : s->group;

		if (s->v4)
			r = find_prefix(s->slot, PC_T_SCOPED_V4, g, s->addr, 1);
		else
			r = find_prefix(s->slot, PC_T_SCOPED_V6, g, s->addr, 0);
		if (quarantine)
			r = unexpired(r, now);
		if (r)
			return hit_of(r);
	}
	if (s->v4) {
		if (!quarantine)
			return dir_range(s);
		if (!(s->dir & PC_DIR_QUARANTINE))
			return hit_of(0);
		return hit_of(unexpired(find_prefix(s->slot, PC_T_QUARANTINE_V4, 0, s->addr, 1), now));
	}
	if (!quarantine) {
		if (s->flags & PC_CFG_HASH_V6)
			return find_range6(s);
		return hit_of(find_prefix(s->slot, PC_T_RANGE_V6, 0, s->addr, 0));
	}
	if (!(s->flags & PC_CFG_QUARANTINE_V6))
		return hit_of(0);
	return hit_of(unexpired(find_prefix(s->slot, PC_T_QUARANTINE_V6, 0, s->addr, 0), now));
}

/* Quarantine first (an entry past its expiry is ignored, so it lifts on time without
 * the daemon), then the longest matching range, then the default (rule 0). */
static __always_inline __u8 lookup_source(const struct pc_config *cfg, const struct pc_source *s,
					  __u64 *now, struct pc_result *res)
{
	struct pc_hit h = find_source(s, 1, now);

	if (h.found)
		res->flags |= 1 << PC_R_QUARANTINE;
	else
		h = find_source(s, 0, now);
	if (!h.found) {
		res->rule = 0;
		return cfg->default_verdict;
	}
	res->rule = h.rule;
	return h.verdict;
}

/* The relay towards the packet's destination that lets its port through, if any: the
 * most specific relay prefix decides, like the most specific range for sources. */
static __always_inline struct pc_entry *relay_of(const struct pc_config *cfg, const struct pc_pkt *p)
{
	__u32 slot = cfg->slot & (PC_SLOTS - 1);
	struct pc_entry *rl;
	__u16 port;

	if (!(cfg->flags & PC_CFG_RELAYS))
		return 0;
	if (p->family == PC_FAM_V4)
		rl = find_prefix(slot, PC_T_RELAY_V4, 0, p->daddr, 1);
	else if (v4_mapped(p->daddr))
		rl = find_prefix(slot, PC_T_RELAY_V4, 0, p->daddr + 12, 1);
	else
		rl = find_prefix(slot, PC_T_RELAY_V6, 0, p->daddr, 0);
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
 * clears the other half and makes it current at each turn. First and last seen are
 * CLOCK_MONOTONIC_COARSE (a tick's resolution, read without the clocksource). */
static __always_inline void record_offender(const struct pc_pkt *p, const struct pc_result *res)
{
	__u64 now = bpf_ktime_get_coarse_ns();
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

/* A frame to or from a group (broadcast, multicast) MAC: read only when a reset verdict
 * would answer it, not for every packet. A raw-IP frame (l3_off 0) has no MACs. */
static __always_inline int group_mac(struct xdp_md *ctx, const struct pc_pkt *p)
{
	const __u8 *eth = (void *)(long)ctx->data;

	if (!p->l3_off || (void *)(eth + ETH_ALEN * 2) > (void *)(long)ctx->data_end)
		return 0;
	return (eth[0] | eth[ETH_ALEN]) & 1;
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
	struct pc_entry *relay;
	__u64 now = 0; /* boot_ns */
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
	case PC_P_TOO_MANY_TAGS:
		/* Nothing behind the tags was read, so no source to judge by: dropped. */
		res.path = PC_R_TOO_MANY_TAGS;
		action = XDP_DROP;
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
	relay = relay_of(cfg, &p);
	if (relay) {
		struct pc_hit q = {};

		if (relay->flags & PC_RELAY_BLOCK_QUARANTINED) {
			src = source_of(cfg, &p, ctx);
			q = find_source(&src, 1, &now);
		}
		if (!q.found) {
			res.rule = relay->rule;
			res.outcome = PC_OUT_PASS;
			goto out;
		}
		res.flags |= 1 << PC_R_QUARANTINE;
		res.rule = q.rule;
		verdict = q.verdict;
	} else {
		/* 5. Who sent it: quarantine, then ranges, then the default, each looking at
		 * the entries scoped to this interface first. */
		src = source_of(cfg, &p, ctx);
		verdict = lookup_source(cfg, &src, &now, &res);
	}

	/* 6. Act. */
	switch (verdict) {
	case PC_DROP:
		res.outcome = PC_OUT_DROP;
		action = XDP_DROP;
		break;
	case PC_RESET:
		/* Only a bare SYN in a whole segment gets an RST; other segments, fragments,
		 * PPP VJ frames, frames to or from a group MAC (the RST would go to every
		 * host of the segment; Linux routes no frame sent to one) and SYNs over the
		 * RST budget are dropped. */
		res.outcome = PC_OUT_DROP;
		action = XDP_DROP;
		if ((p.tcp_flags & (PC_TCP_SYN | PC_TCP_ACK | PC_TCP_RST)) != PC_TCP_SYN ||
		    p.fragment || p.vj || group_mac(ctx, &p))
			break;
		if (!probe && !rst_allowed(cfg, boot_ns(&now))) {
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
		record_offender(&p, &res);
	goto out;

evasion:
	/* The transport header is out of reach. If this source's rule blocks, drop: a long
	 * chain must not be a way around the policy. Otherwise pass as we would anyway. */
	res.path = PC_R_EVASION;
	res.judged = 1;
	/* No port, so no relay; scopes apply. */
	src = source_of(cfg, &p, ctx);
	verdict = lookup_source(cfg, &src, &now, &res);
	if (verdict == PC_DROP || verdict == PC_RESET) {
		res.outcome = PC_OUT_DROP;
		res.flags |= 1 << PC_R_UNPARSEABLE_BLOCKED;
		action = XDP_DROP;
		if (!probe)
			record_offender(&p, &res);
	} else if (verdict == PC_MONITOR) {
		res.outcome = PC_OUT_MONITOR;
		if (!probe)
			record_offender(&p, &res);
	} else {
		res.outcome = PC_OUT_PASS;
	}

out:
	if (probe)
		return action;
	/* The one exit: every packet counts once in its path reason; judged packets count
	 * per rule x outcome x family and in their flag reasons. Per-CPU maps: no atomics. */
	count(&reason_counts, res.path, bytes);
	if (res.judged) {
		__u32 rule = res.rule < PC_MAX_RULES ? res.rule : 0;

		count(&stats, (rule * PC_OUT_MAX + res.outcome) * PC_FAM_MAX + p.family, bytes);
#pragma unroll
		for (int i = PC_R_QUARANTINE; i < PC_R_MAX; i++)
			if (res.flags & (1 << i))
				count(&reason_counts, i, bytes);
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
