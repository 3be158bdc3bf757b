/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Map definitions.
 *
 * Atomic policy swap: a policy is its config and its tables in one of two slots. The
 * config lives in an inner array reached through `policy` (ARRAY_OF_MAPS, one entry);
 * it names the slot of the tables (dir_v4, dir8_v4, the slot's `prefixes` trie, the
 * slot's `scopes` keys) that belongs to it. The program reads the config
 * once per packet and uses only that slot, so a packet is judged by one policy. Go
 * writes a new policy into the idle slot in place, then replaces the config map: the
 * one map-in-map update of a swap, after which the kernel has waited for every
 * running program, so no packet still reads the slot the next swap writes. */
#ifndef PC_MAPS_H
#define PC_MAPS_H

#include "types.h"

/* clang emits only forward declarations for types reached solely through an inner
 * map template, which leaves the inner keys and values unsized. These never-used
 * pointers make it emit the full types (the cilium/ebpf examples' trick). */
const struct pc_config *pc_btf_config __attribute__((unused));
const struct pc_key *pc_btf_key __attribute__((unused));
const struct pc_entry *pc_btf_entry __attribute__((unused));
const struct pc_v6_key *pc_btf_v6_key __attribute__((unused));
const struct pc_v6_val *pc_btf_v6_val __attribute__((unused));
/* Likewise for the enums, so bpf2go emits them as Go constants. */
const enum pc_verdict *pc_btf_verdict __attribute__((unused));
const enum pc_outcome *pc_btf_outcome __attribute__((unused));
const enum pc_family *pc_btf_family __attribute__((unused));
const enum pc_reason *pc_btf_reason __attribute__((unused));
const enum pc_config_flag *pc_btf_config_flag __attribute__((unused));
const enum pc_relay_flag *pc_btf_relay_flag __attribute__((unused));
const enum pc_dir_bits *pc_btf_dir_bits __attribute__((unused));
const enum pc_table *pc_btf_table __attribute__((unused));

/* Inner map templates, spelled out anonymously at each use: clang 14 emits a named
 * template used twice with a forward-declared key, which libbpf and cilium/ebpf reject. */
#define PC_CONFIG_INNER                                                        \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_ARRAY);                              \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__type(value, struct pc_config);                               \
	}

/* key 0 -> the live policy's config map */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, PC_CONFIG_INNER);
} policy SEC(".maps");

/* (slot * PC_DIR_CHUNKS + /24 index / PC_DIR_CHUNK) -> the entries of 16 /24s: the
 * IPv4 ranges and exemptions that apply on every interface, as a DIR-24-8 table (see
 * enum pc_dir_bits). A plain array, not a map-in-map: the control plane writes the idle
 * slot in place through mmap (no packet reads it: the last switch waited for them) and
 * a runtime entry into the live slot word by word, each write an aligned u32. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_SLOTS * PC_DIR_CHUNKS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct pc_dir_chunk);
} dir_v4 SEC(".maps");

/* (slot * PC_DIR8_CHUNKS + group * 16 + last byte / 16) -> the entries of 16 addresses:
 * the groups dir_v4 names for the /24s with ranges longer than /24. Written like
 * dir_v4; a runtime entry's new group is written whole before its /24 names it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_SLOTS * PC_DIR8_CHUNKS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct pc_dir_chunk);
} dir8_v4 SEC(".maps");

#define PC_PREFIXES_INNER                                                      \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                           \
		__uint(max_entries, PC_MAX_PREFIXES);                          \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, struct pc_key);                                    \
		__type(value, struct pc_entry);                                \
	}

/* slot -> (table, group, prefix) -> entry: every prefix table of a slot but the IPv4
 * ranges (enum pc_table), in one LPM trie. The control plane fills the idle slot's
 * trie in place when it is the empty one Release left there (no map-in-map update, so
 * the config switch is the swap's one RCU wait), and Release replaces the replaced
 * policy's trie with an empty one once the new policy is proven: the kernel then frees
 * the old trie whole. A runtime entry is one update of the live slot's trie. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_PREFIXES_INNER);
} prefixes SEC(".maps");

#define PC_RANGES_V6_INNER                                                     \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_HASH);                               \
		__uint(max_entries, 1);                                        \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, struct pc_v6_key);                                 \
		__type(value, struct pc_v6_val);                               \
	}

/* slot -> (length, masked address) -> best matching range: a policy's IPv6 ranges when
 * they are many (PC_CFG_HASH_V6), as real prefixes and markers for a binary search on
 * the lengths in lens_v6: a lookup costs at most PC_V6_PROBES hash probes however many
 * ranges there are. The inner maps are sized by the control plane (a hash's max_entries
 * may differ from the template's): filled in place when Release left an empty one big
 * enough in the slot, freed whole by Release. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_RANGES_V6_INNER);
} ranges_v6 SEC(".maps");

/* slot -> the prefix lengths ranges_v6 holds for it, written before the switch. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__type(value, struct pc_v6_lens);
} lens_v6 SEC(".maps");

/* (slot, ingress ifindex) -> scope group of that interface under that slot's policy;
 * an interface without an entry is group 0 (no scoped entry applies). Not a map-in-map:
 * the control plane writes the idle slot's keys before the switch, so no extra wait. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_SLOTS * PC_MAX_SCOPED_IFACES);
	__type(key, struct pc_scope_key);
	__type(value, __u32);
} scopes SEC(".maps");

/* (rule * PC_OUT_MAX + outcome) * PC_FAM_MAX + family -> packets, bytes (per CPU) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_MAX_RULES * PC_OUT_MAX * PC_FAM_MAX);
	__type(key, __u32);
	__type(value, struct pc_counter);
} stats SEC(".maps");

/* enum pc_reason -> packets, bytes (per CPU). Named reason_counts since it has room for
 * PC_R_SLOTS reasons; the 11-entry map of earlier versions, "reasons", is retired
 * (loader/pin.go), so that pins of those versions are adopted without a detach. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_R_SLOTS);
	__type(key, __u32);
	__type(value, struct pc_counter);
} reason_counts SEC(".maps");

/* key 0 -> this CPU's RST token bucket */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_bucket);
} rst_bucket SEC(".maps");

/* The offender record: per CPU, so no atomics and no inserts on the packet path
 * (record_offender). Userspace sums the CPUs. */

/* key 0 -> which period is current (the first half of each map below, or the second) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_offender_period);
} offender_period SEC(".maps");

/* period * PC_SKETCH_DEPTH + row -> counters of blocked (or monitored) attempts by
 * source hash (count-min sketch) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_OFFENDER_PERIODS * PC_SKETCH_DEPTH);
	__type(key, __u32);
	__type(value, struct pc_sketch_row);
} offender_sketch SEC(".maps");

/* period -> attempts recorded in its sketch (the N of the error bound) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_OFFENDER_PERIODS);
	__type(key, __u32);
	__type(value, __u64);
} offender_attempts SEC(".maps");

/* period * PC_OFFENDER_BUCKETS + source hash bucket -> the two sources this CPU holds
 * there (MAC, VLANs, PPPoE, ...) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_OFFENDER_PERIODS * PC_OFFENDER_BUCKETS);
	__type(key, __u32);
	__type(value, struct pc_offender_bucket);
} offender_slots SEC(".maps");

/* Control-plane state, pinned with the rest so it survives the daemon. */

/* stable rule id -> label. Counters are indexed by these ids; a name keeps its id
 * across policy swaps and daemon restarts, so its counters never go backwards. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct pc_label);
} rule_names SEC(".maps");

/* stable rule id -> when it got its label, when the label last left the live policy */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct pc_label_age);
} rule_ages SEC(".maps");

/* key 0 -> live policy hash, load time, last proof */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_meta);
} meta SEC(".maps");

#endif
