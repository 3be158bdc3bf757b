/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Types shared with Go. bpf2go emits a Go struct for each (-type flags in gen.go) that
 * mirrors it field for field; loader/ uses only those. Addresses and ports are kept in
 * network byte order, as they are on the wire. */
#ifndef PC_TYPES_H
#define PC_TYPES_H

#include "limits.h"

/* What a rule says about a TCP packet to a governed port. */
enum pc_verdict {
	PC_PASS = 0,
	PC_DROP = 1,
	PC_RESET = 2,   /* SYN -> RST+ACK via XDP_TX; other segments dropped */
	PC_MONITOR = 3, /* pass, counted as "would block" */
	PC_VERDICT_MAX,
};

/* What actually happened to a judged packet (the counter dimension). A reset rule
 * yields PC_OUT_RST for a SYN within the RST budget and PC_OUT_DROP otherwise. */
enum pc_outcome {
	PC_OUT_PASS = 0,
	PC_OUT_DROP = 1,
	PC_OUT_RST = 2,
	PC_OUT_MONITOR = 3,
	PC_OUT_MAX,
};

enum pc_family {
	PC_FAM_V4 = 0,
	PC_FAM_V6 = 1,
	PC_FAM_MAX,
};

/* Reason counters. Every packet counts in exactly one of the path reasons (first
 * block); judged packets may also count in the flag reasons (second block). */
enum pc_reason {
	PC_R_NO_POLICY = 0,   /* no policy loaded: passed */
	PC_R_NOT_TCP = 1,     /* not TCP over IPv4/IPv6 (or an encapsulation we do not parse) */
	PC_R_MALFORMED = 2,   /* truncated or invalid header: passed untouched */
	PC_R_FRAGMENT = 3,    /* non-first fragment: no ports, passed */
	PC_R_NOT_GOVERNED = 4,/* TCP to a port that is not governed: passed, no lookup */
	PC_R_JUDGED = 5,      /* went through the address lookup */
	PC_R_EVASION = 6,     /* TCP out of reach (IPv6 chain too long, or a first fragment
			       * that ends before the ports); source looked up */
	PC_R_TOO_MANY_TAGS = 7, /* still VLAN-tagged after PC_MAX_VLAN_TAGS tags: dropped */
	PC_R_QUARANTINE = 8,  /* flag: decided by a quarantine entry */
	PC_R_RST_SENT = 9,    /* flag: RST+ACK sent */
	PC_R_RATE_LIMITED = 10,/* flag: RST wanted but over budget: dropped */
	PC_R_UNPARSEABLE_BLOCKED = 11, /* flag: evasion packet from a blocking source: dropped */
	PC_R_MAX,
};

/* Entries of the reasons map: room for reasons to come, so that adding one does not
 * make the pinned map another version's. */
#define PC_R_SLOTS 32
_Static_assert(PC_R_MAX <= PC_R_SLOTS, "the reasons map holds every reason");

/* pc_config.flags: the tables a policy uses beyond its ranges and IPv4 quarantines. A
 * policy without relays, scopes or IPv6 quarantines pays nothing for them: the program
 * looks at none of those tables. */
enum pc_config_flag {
	PC_CFG_RELAYS = 1, /* the relay tables hold destinations to pass */
	PC_CFG_SCOPED = 2, /* scopes and the scoped tables hold entries for some interfaces */
	PC_CFG_QUARANTINE_V6 = 4, /* the IPv6 quarantine table holds entries (else an IPv6
				   * source costs one lookup, its ranges'; IPv4 has the
				   * DIR-24-8 entry's mark instead) */
	PC_CFG_HASH_V6 = 8,     /* the IPv6 ranges are in ranges_v6 (binary search on the
				 * slot's prefix lengths, lens_v6), not in the trie's
				 * PC_T_RANGE_V6: a policy with many of them */
	PC_CFG_RUNTIME_V6 = 16, /* with PC_CFG_HASH_V6: the trie's PC_T_RANGE_V6 holds
				 * runtime ranges (unblocks) too; the longer match wins */
};

/* pc_relay.flags */
enum pc_relay_flag {
	PC_RELAY_BLOCK_QUARANTINED = 1, /* quarantined sources get their quarantine here too */
};

/* dir_v4 entries: one u32 per IPv4 /24 of a slot (a DIR-24-8 table). Without
 * PC_DIR_GROUP it decides every address of the /24; with it, its low 16 bits name a
 * group of 256 entries in dir8_v4, one per address of the /24, that decide (the /24's
 * ranges longer than /24 live there, painted over its shorter ones). An entry:
 *   bits 0-13   rule id of the longest range covering the address(es)
 *   bits 14-15  its verdict (enum pc_verdict)
 *   bits 16-21  the length of that range (the control plane repaints by it)
 *   PC_DIR_HIT  some range covers the address(es) (else: the default decides)
 *   PC_DIR_QUARANTINE  (dir_v4 only) a quarantine entry overlaps the /24: the
 *               quarantine trie is looked at only then */
enum pc_dir_bits {
	PC_DIR_RULE = 0x3fff,
	PC_DIR_VERDICT_SHIFT = 14,
	PC_DIR_LEN_SHIFT = 16,
	PC_DIR_GROUP_MASK = 0xffff,
	PC_DIR_HIT = 1 << 28,
	PC_DIR_QUARANTINE = 1 << 29,
	PC_DIR_GROUP = 1 << 30,
};

/* dir_v4 and dir8_v4 value: PC_DIR_CHUNK consecutive entries (an array value of one
 * u32 would take 8 bytes). */
struct pc_dir_chunk {
	__u32 e[PC_DIR_CHUNK];
};

/* The tables of the prefixes trie (the low byte of pc_key.tag). */
enum pc_table {
	PC_T_QUARANTINE_V4 = 1, /* IPv4 quarantines (with expiry), looked at when the source's
				 * DIR-24-8 entry says one overlaps its /24 */
	PC_T_QUARANTINE_V6 = 2, /* IPv6 quarantines (with expiry) */
	PC_T_RANGE_V6 = 3,      /* IPv6 ranges and exemptions (IPv4's are in dir_v4) */
	PC_T_RELAY_V4 = 4,      /* IPv4 relay destinations (pc_entry's relay fields) */
	PC_T_RELAY_V6 = 5,      /* IPv6 relay destinations */
	PC_T_SCOPED_V4 = 6,     /* IPv4 entries of scope groups (pc_key.group) */
	PC_T_SCOPED_V6 = 7,     /* IPv6 entries of scope groups */
	PC_T_RUNTIME_V4 = 8,    /* IPv4 runtime ranges (unblocks) as entered: never looked up
				 * here (dir_v4 holds them painted); the control plane reads
				 * them back after a restart */
};

/* prefixes key: a prefix of one table of a slot's trie. prefixlen counts the 64 bits
 * of table and group, which always count whole, plus the bits of addr that count. */
struct pc_key {
	__u32 prefixlen;
	__u32 table;   /* enum pc_table */
	__u32 group;   /* scoped tables: the scope group (PC_GROUP_QUARANTINE set for a
			* quarantine); 0 in the others */
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
};

/* scopes key: one interface of one policy slot. */
struct pc_scope_key {
	__u32 slot;
	__u32 ifindex;
};

/* prefixes value: a rule (quarantines, ranges, scoped entries), or a relay: a
 * destination towards which the governed ports (or the listed ones) pass, whoever the
 * source is. */
struct pc_entry {
	__u32 rule;    /* rule id: index into the counters, names live in Go */
	__u8 verdict;  /* rules: enum pc_verdict */
	__u8 flags;    /* relays: enum pc_relay_flag */
	__u8 nports;   /* relays: 0: every governed port; else ports[0..nports) */
	__u8 plen;     /* PC_T_RANGE_V6: the prefix length (weighed against ranges_v6's
			* match under PC_CFG_RUNTIME_V6); 0 elsewhere */
	__u64 expires; /* rules: CLOCK_BOOTTIME ns after which the entry is ignored; 0 = never */
	__u16 ports[PC_RELAY_PORTS]; /* relays, host order */
};

/* ranges_v6 key: a prefix length of the slot's IPv6 ranges and an address masked to
 * it: a real prefix (one of the ranges) or a marker (binary search on prefix lengths,
 * Waldvogel et al. 1997: what leads the search from a shorter length to the longer
 * ones where a range lies). */
struct pc_v6_key {
	__u32 len;
	__u8 addr[16];
};

/* ranges_v6 value: the best matching range of the key's prefix (the longest range that
 * holds it, its own for a real prefix), worked out by the control plane. */
struct pc_v6_val {
	__u32 rule;
	__u8 verdict; /* enum pc_verdict */
	__u8 len;     /* that range's length */
	__u8 hit;     /* 0: no range holds the key's prefix (a marker above every range) */
	__u8 pad;
};

/* lens_v6 value: the distinct prefix lengths of a slot's IPv6 ranges, shortest first,
 * with the mask of each (network order words), that the search walks. */
struct pc_v6_lens {
	__u32 mask[PC_V6_MAX_LENS][4];
	__u8 len[PC_V6_MAX_LENS];
	__u32 n; /* lengths in use: at most PC_V6_MAX_LENS */
};

/* The policy-wide knobs. One per policy slot, swapped with the tables. */
struct pc_config {
	__u32 slot;            /* which slot of the prefix tables belongs to this policy */
	__u8 default_verdict;  /* enum pc_verdict for sources in no range (rule 0) */
	__u8 flags;            /* enum pc_config_flag */
	__u8 pad[2];
	__u32 rst_rate;        /* RSTs per second per CPU; 0 = unlimited */
	__u32 rst_burst;       /* RSTs a CPU may send back to back (min 1) */
	__u64 governed[PC_PORT_WORDS]; /* bit (port % 64) of word (port / 64), host order port */
};

struct pc_counter {
	__u64 packets;
	__u64 bytes;
};

/* Per-CPU RST token bucket: credit in nanoseconds of refill time. */
struct pc_bucket {
	__u64 credit;
	__u64 last;
};

/* A source address, as the offender record keeps it. */
struct pc_src {
	__u8 family; /* enum pc_family */
	__u8 pad[3];
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
};

/* One row of the offender sketch (count-min, per CPU): blocked (or monitored) attempts
 * by column pc_sketch_col(source hash, row). Counters saturate at 2^32-1. */
struct pc_sketch_row {
	__u32 count[PC_SKETCH_WIDTH];
};

/* A source one CPU holds in its offender table, with what the abuse desk needs to find
 * the subscriber behind the address (as its last attempt on this CPU arrived). Its
 * count is not here: the sketch has it. One cache line. */
struct pc_offender {
	struct pc_src src;
	__u32 est;        /* this CPU's sketch estimate at the last attempt; 0 = empty */
	__u64 first_seen; /* CLOCK_MONOTONIC_COARSE ns: first attempt since it took this entry */
	__u64 last_seen;  /* CLOCK_MONOTONIC_COARSE ns */
	__u32 rule;       /* rule that judged the last attempt */
	__be16 port;      /* destination port of the last attempt (0 if unknown) */
	__u8 outcome;     /* enum pc_outcome of the last attempt */
	__u8 pad;
	__u8 mac[6];      /* source MAC (zero on a raw-IP interface) */
	__u16 vlan[2];    /* VLAN ids, outer first (host order; 0 = no tag) */
	__u16 pppoe_sid;  /* PPPoE session id (host order; 0 = not PPPoE) */
	__u8 pad2[4];
};

/* offender_slots value: the sources one CPU holds at one hash, two ways. */
struct pc_offender_bucket {
	struct pc_offender way[PC_OFFENDER_WAYS];
};

/* offender_period value: which period of the offender record is current. Written by
 * the control plane at each turn; the program reads only current. */
struct pc_offender_period {
	__u32 current;     /* 0 or 1: the half of the offender maps attempts go to */
	__u32 pad;
	__u64 started;     /* unix ns when the current period began; 0 = not yet set */
	__u64 prev_started; /* unix ns when the other one began; 0 = there was none */
};

/* rule_names value: which named entry a (stable) rule id counts for, "kind/name"
 * NUL-padded; empty = id free. Written by the control plane, never read by the program. */
struct pc_label {
	__u8 label[PC_LABEL_LEN];
};

/* rule_ages value: the history of a stable rule id, so that ids are reclaimed oldest
 * first and an offender recorded under an id is never named after a later owner.
 * Written by the control plane, never read by the program. */
struct pc_label_age {
	__u64 born;    /* CLOCK_BOOTTIME ns when the id got its current label */
	__u64 retired; /* unix ns when the label last left the live policy; 0 while live */
};

/* meta value: control-plane state kept in bpffs beside the maps, so that status works
 * while the daemon is down and survives its restarts. Never read by the program. */
struct pc_meta {
	__u8 hash[32];          /* live policy's canonical hash, NUL-padded */
	__u8 policy_file[256];  /* where the live policy came from */
	__u64 loaded_at;        /* unix ns when it went live */
	__u64 proof_at;         /* unix ns of the last proof */
	__u32 proof_ok;         /* 1 if the last proof passed */
	__u32 proof_probes;     /* probes in the last proof */
	__u64 load_failures;    /* policies rejected (invalid, failed to build) */
	__u64 proof_failures;   /* proofs that failed (and rolled back) */
};

#endif
