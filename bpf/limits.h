/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Build-time limits. Each can be overridden with -D at build time; the reason for the
 * default stands beside it. Runtime knobs (governed ports, default verdict, RST rate)
 * are not here: they live in the policy config map and change without a rebuild. */
#ifndef PC_LIMITS_H
#define PC_LIMITS_H

/* IPv6 extension headers walked before giving up. Real traffic carries 0-2; RFC 8504
 * lets hosts cap the chain. Past the limit the transport header is unreachable and the
 * evasion rule applies (drop if the source's rule blocks). Each step costs verifier
 * states, so keep it small. */
#ifndef PC_MAX_EXT_HDRS
#define PC_MAX_EXT_HDRS 8
#endif

/* Rules (named ranges, exemptions, quarantines, plus rule 0 = default) that get their
 * own counters. The policy compiler refuses a policy with more. */
#ifndef PC_MAX_RULES
#define PC_MAX_RULES 16384
#endif

/* The offender record (record_offender) is per CPU and never inserts: a count-min
 * sketch of attempts by source, PC_SKETCH_DEPTH rows of 2^PC_SKETCH_WIDTH_LOG u32
 * counters, plus a table of the sources each CPU holds by name (PC_OFFENDER_BUCKETS
 * buckets of two). An estimate exceeds the true count by at most e * N / width
 * (N: attempts recorded) with probability at least 1 - e^-depth: 4096 wide and 4 deep,
 * 0.066% of N with probability 98%. A row is one per-CPU array value (16 KiB; the
 * kernel allows 32 KiB, so at most 13). The loader takes the sizes from the maps and the
 * generated types. */
#ifndef PC_SKETCH_WIDTH_LOG
#define PC_SKETCH_WIDTH_LOG 12
#endif
#define PC_SKETCH_WIDTH (1 << PC_SKETCH_WIDTH_LOG)

/* Rows of the sketch: each has its own hash (pc_sketch_col); at most 4 constants. */
#ifndef PC_SKETCH_DEPTH
#define PC_SKETCH_DEPTH 4
#endif

/* Buckets of the per-CPU table of named sources (two sources each, 128 bytes): 2048
 * sources per CPU and period, 128 KiB. A power of two. */
#ifndef PC_OFFENDER_BUCKETS_LOG
#define PC_OFFENDER_BUCKETS_LOG 10
#endif
#define PC_OFFENDER_BUCKETS (1 << PC_OFFENDER_BUCKETS_LOG)
#define PC_OFFENDER_WAYS 2

/* Periods of the offender record kept at once: the current one, where attempts go, and
 * the one before. The daemon clears the older and makes it the current one at each turn
 * (offender_period), so counts cover the last one to two periods and the error bound
 * the attempts of those, not of the uptime. */
#define PC_OFFENDER_PERIODS 2

/* Entries of a slot's prefixes trie (every table but the IPv4 ranges, runtime entries
 * too; NO_PREALLOC: a cap, not an allocation). The loader refuses a policy with more. */
#ifndef PC_MAX_PREFIXES
#define PC_MAX_PREFIXES (1 << 24)
#endif

/* IPv6 ranges in a hash (ranges_v6): the distinct prefix lengths a policy's IPv6 ranges
 * may have for it (more go to the trie), and the probes a search of that many takes
 * (binary search: ceil(log2(PC_V6_MAX_LENS + 1))). */
#define PC_V6_MAX_LENS 32
#define PC_V6_PROBES 6
_Static_assert((1 << PC_V6_PROBES) > PC_V6_MAX_LENS && (1 << (PC_V6_PROBES - 1)) <= PC_V6_MAX_LENS,
	       "PC_V6_PROBES probes search PC_V6_MAX_LENS lengths");

/* VLAN tags (802.1Q, 802.1ad, in any order) walked before the IP or PPPoE header.
 * Linux strips any number of priority tags (VLAN id 0) and routes what is behind them
 * (__netif_receive_skb_core), so a frame still tagged after these many is dropped:
 * no access network stacks that many, and a subscriber must not get round the policy
 * with one tag more than the parse reads. */
#define PC_MAX_VLAN_TAGS 8

/* Longest L2 prefix we parse: Ethernet 14 + PC_MAX_VLAN_TAGS tags 32 + PPPoE 6 +
 * PPP 2 = 54 (a compressed 1-byte PPP protocol makes it 53). */
#define PC_MAX_L2 (14 + 4 * PC_MAX_VLAN_TAGS + 6 + 2)

/* Ports one relay may list (a relay without a list relays every governed port). */
#define PC_RELAY_PORTS 8

/* Interfaces the scopes of one policy may name (entries of the scopes table per slot). */
#define PC_MAX_SCOPED_IFACES 1024

/* Top bit of a scoped table key's group: the entry is a quarantine. */
#define PC_GROUP_QUARANTINE 0x80000000u

/* dir_v4: /24 entries per array value, and values per slot (2^24 /24s). */
#define PC_DIR_CHUNK 16
#define PC_DIR_CHUNKS ((1 << 24) / PC_DIR_CHUNK)

/* dir8_v4: groups of 256 entries per slot, one group per /24 that holds IPv4 ranges
 * longer than /24 (a customer's /29, a static /32). 1 KiB each: 32768 groups are 32 MiB
 * a slot, enough for long ranges in 32768 distinct /24s (8M addresses); the loader
 * refuses a policy that needs more (`portcullis check` does not know the limit). */
#ifndef PC_DIR8_GROUPS
#define PC_DIR8_GROUPS 32768
#endif
#define PC_DIR8_CHUNKS (PC_DIR8_GROUPS * 256 / PC_DIR_CHUNK)

/* Policy slots: the live policy is in one, the next is built in the other. */
#define PC_SLOTS 2

/* Governed-port bitmap: one bit per TCP port. */
#define PC_PORT_WORDS (65536 / 64)

/* Bytes of a rule label ("kind/name") in the rule_names map. */
#define PC_LABEL_LEN 128

/* Metadata word (XDP data_meta, 4 bytes) that marks a control-plane probe: the packet
 * is judged and answered as usual but leaves no trace (no counters, no offender entry,
 * no RST token spent). Only an XDP program or BPF_PROG_TEST_RUN can set metadata, so no
 * packet off the wire can carry it. "PCPR". */
#define PC_PROBE_MAGIC 0x52504350

/* Hop limit / TTL of the RSTs we originate. */
#define PC_RST_TTL 64

#endif
