/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* Map definitions.
 *
 * Atomic policy swap: a policy is the config plus four prefix tables. The config lives
 * in an inner array reached through `policy` (ARRAY_OF_MAPS, one entry); it names the
 * slot of the prefix tables (each an ARRAY_OF_MAPS of two LPM tries) that belongs to it.
 * The program reads the config once per packet and uses only that slot, so a packet is
 * judged by one policy. Go builds a new policy in fresh maps in the other slot, then
 * replaces the config map; the kernel waits for running programs on every map-in-map
 * update, so by the time the next swap reuses a slot no packet still reads it. */
#ifndef PC_MAPS_H
#define PC_MAPS_H

#include "types.h"

/* clang emits only forward declarations for types reached solely through an inner
 * map template, which leaves the inner keys and values unsized. These never-used
 * pointers make it emit the full types (the cilium/ebpf examples' trick). */
const struct pc_config *pc_btf_config __attribute__((unused));
const struct pc_lpm_v4 *pc_btf_lpm_v4 __attribute__((unused));
const struct pc_lpm_v6 *pc_btf_lpm_v6 __attribute__((unused));
const struct pc_rule *pc_btf_rule __attribute__((unused));
const struct pc_relay *pc_btf_relay __attribute__((unused));
const struct pc_scoped_v4 *pc_btf_scoped_v4 __attribute__((unused));
const struct pc_scoped_v6 *pc_btf_scoped_v6 __attribute__((unused));
/* Likewise for the enums, so bpf2go emits them as Go constants. */
const enum pc_verdict *pc_btf_verdict __attribute__((unused));
const enum pc_outcome *pc_btf_outcome __attribute__((unused));
const enum pc_family *pc_btf_family __attribute__((unused));
const enum pc_reason *pc_btf_reason __attribute__((unused));
const enum pc_config_flag *pc_btf_config_flag __attribute__((unused));
const enum pc_relay_flag *pc_btf_relay_flag __attribute__((unused));

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

#define PC_LPM_INNER(KEY)                                                      \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                           \
		__uint(max_entries, PC_MAX_PREFIXES);                          \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, KEY);                                              \
		__type(value, struct pc_rule);                                 \
	}

/* slot -> IPv4 source prefix -> rule (ranges and exemptions) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_LPM_INNER(struct pc_lpm_v4));
} ranges_v4 SEC(".maps");

/* slot -> IPv6 source prefix -> rule (ranges and exemptions) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_LPM_INNER(struct pc_lpm_v6));
} ranges_v6 SEC(".maps");

/* slot -> IPv4 source prefix -> quarantine rule (with expiry), checked before ranges */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_LPM_INNER(struct pc_lpm_v4));
} quarantine_v4 SEC(".maps");

/* slot -> IPv6 source prefix -> quarantine rule (with expiry), checked before ranges */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_LPM_INNER(struct pc_lpm_v6));
} quarantine_v6 SEC(".maps");

#define PC_LPM_INNER_VAL(KEY, VAL)                                             \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                           \
		__uint(max_entries, PC_MAX_PREFIXES);                          \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, KEY);                                              \
		__type(value, VAL);                                            \
	}

/* slot -> IPv4 destination prefix -> relay, checked before any source lookup (only when
 * the policy has relays: PC_CFG_RELAYS) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_LPM_INNER_VAL(struct pc_lpm_v4, struct pc_relay));
} relays_v4 SEC(".maps");

/* slot -> IPv6 destination prefix -> relay */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_LPM_INNER_VAL(struct pc_lpm_v6, struct pc_relay));
} relays_v6 SEC(".maps");

/* (slot, ingress ifindex) -> scope group of that interface under that slot's policy;
 * an interface without an entry is group 0 (no scoped entry applies). Not a map-in-map:
 * the control plane writes the idle slot's keys before the switch, so no extra wait. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_SLOTS * PC_MAX_SCOPED_IFACES);
	__type(key, struct pc_scope_key);
	__type(value, __u32);
} scopes SEC(".maps");

/* slot -> (group, IPv4 source prefix) -> rule: the scoped entries of each group (see
 * model.ScopePlan), only looked at when the policy has scopes (PC_CFG_SCOPED) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_LPM_INNER_VAL(struct pc_scoped_v4, struct pc_rule));
} scoped_v4 SEC(".maps");

/* slot -> (group, IPv6 source prefix) -> rule */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_SLOTS);
	__type(key, __u32);
	__array(values, PC_LPM_INNER_VAL(struct pc_scoped_v6, struct pc_rule));
} scoped_v6 SEC(".maps");

/* (rule * PC_OUT_MAX + outcome) * PC_FAM_MAX + family -> packets, bytes (per CPU) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_MAX_RULES * PC_OUT_MAX * PC_FAM_MAX);
	__type(key, __u32);
	__type(value, struct pc_counter);
} stats SEC(".maps");

/* enum pc_reason -> packets, bytes (per CPU) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_R_MAX);
	__type(key, __u32);
	__type(value, struct pc_counter);
} reasons SEC(".maps");

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
