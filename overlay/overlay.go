// Package overlay holds runtime entries: quarantines the abuse desk adds and unblocks a
// customer portal grants, on top of the NOC's policy and never written into its file.
// It is pure Go: what an entry is, how repeated quarantines escalate, and the state
// the controller keeps (and the store persists). The controller merges the live
// entries into the policy's tables; the loader writes each one into the live data
// plane with single map updates.
package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/portcullis/portcullis/policy"
)

// Kind is what a runtime entry does.
type Kind string

const (
	// Quarantine blocks a source on the governed ports until it expires, checked
	// before the policy's ranges, like a policy quarantine.
	Quarantine Kind = "quarantine"
	// Unblock lets a source through on the governed ports (a subscriber's opt-out of
	// the port-25 block), like a policy exemption; a quarantine still wins over it.
	Unblock Kind = "unblock"
)

// Valid reports whether k is a kind this package knows.
func (k Kind) Valid() bool { return k == Quarantine || k == Unblock }

// Entry is one runtime entry. A prefix holds at most one entry of each kind.
type Entry struct {
	Kind    Kind         `json:"kind"`
	Prefix  netip.Prefix `json:"prefix"`
	Reset   bool         `json:"reset,omitempty"` // a quarantine that answers SYNs with an RST (else drop)
	Added   time.Time    `json:"added"`
	Expires time.Time    `json:"expires"`
	Reason  string       `json:"reason"`
	Ticket  string       `json:"ticket,omitempty"`
	Who     string       `json:"who"`   // the client that added it ("uid:0", "api:abuse-desk")
	Level   int          `json:"level"` // quarantines: 0 for the first, 1 for the next... (escalation)
}

// Live reports whether e is in force at now.
func (e Entry) Live(now time.Time) bool { return now.Before(e.Expires) }

// Key is the identity of an entry: its kind and prefix.
type Key struct {
	Kind   Kind
	Prefix netip.Prefix
}

func (e Entry) Key() Key { return Key{e.Kind, e.Prefix} }

func (k Key) String() string { return string(k.Kind) + " " + k.Prefix.String() }

// Action is what happened to an entry, in its history.
type Action string

const (
	Added     Action = "added"
	Released  Action = "released"
	Expired   Action = "expired"
	Escalated Action = "escalated" // added again within the escalation memory: a longer term
	// Extended: added again while in force (a retried request, a second report while
	// quarantined): a later expiry if the term asked for reaches further, never an
	// escalation, and not counted as a repeat.
	Extended Action = "extended"
	// Suspended: taken out at a start because the data plane had no room for it (the
	// IPv4 groups of ranges longer than /24 ran out); it must be added again.
	Suspended Action = "suspended"
)

// Actions is every Action, in the order the metrics, the OpenAPI enum and the docs
// list them (TestActionsListedAlike holds those to it).
var Actions = []Action{Added, Escalated, Extended, Released, Expired, Suspended}

// Event is one line of the history: who did what to which entry, when and why.
type Event struct {
	Time   time.Time `json:"time"`
	Action Action    `json:"action"`
	Entry  Entry     `json:"entry"`
	Who    string    `json:"who"`
	Reason string    `json:"reason,omitempty"`
}

// State is everything the overlay keeps: the entries (live or past their expiry but
// not yet removed) and the history, oldest first.
type State struct {
	Entries []Entry `json:"entries"`
	History []Event `json:"history"`
}

// Sentinel errors, all of the package's.
var (
	ErrKind      = errors.New("unknown kind of runtime entry")
	ErrForbidden = errors.New("the policy forbids this runtime entry")
	ErrDuration  = errors.New("duration out of bounds")
	ErrNotFound  = errors.New("no such runtime entry")
	ErrInvalid   = errors.New("invalid runtime entry")
	// ErrUnavailable means runtime entries cannot be changed now (the store failed,
	// no policy in force yet); the request may succeed later.
	ErrUnavailable = errors.New("runtime entries cannot be changed now")
	// ErrFull means a new entry would take its kind past the daemon's limit
	// (MaxEntries): an entry must be released, or expire, first.
	ErrFull = errors.New("too many runtime entries")
)

// MaxEntries is how many live runtime entries of each kind the daemon holds, unless
// configured otherwise: every change copies and merges them under the controller's one
// lock, so the cost of a change, the memory and the size of a listing grow with them
// (about 110 ms a change with 100000 entries, 7 ms with 10000). Each kind has its own
// limit, so that unblocks from a customer portal can never leave the abuse desk
// without room for a quarantine; both kinds full are 100000 entries, what the store's
// history keeps in events.
const MaxEntries = 50000

// Request is what a client asks for.
type Request struct {
	Kind   Kind
	Prefix netip.Prefix
	For    time.Duration // 0: the kind's default (quarantines: the escalation step)
	Reason string
	Ticket string
	Who    string
}

// Rules bound runtime entries; they come from the policy (policy.Runtime).
type Rules struct {
	// Escalation is the quarantine terms for a first, second, ... quarantine of the
	// same prefix within Memory of the last one; the last term repeats.
	Escalation []time.Duration
	// Memory is how long a released or expired quarantine counts for escalation.
	Memory time.Duration
	// Reset: runtime quarantines answer SYNs with an RST (else they drop).
	Reset bool
	// MaxQuarantine is the longest quarantine term that may be asked for (0: no
	// bound); MaxUnblock is the longest unblock allowed; DefaultUnblock the term when
	// none is asked for.
	MaxQuarantine, MaxUnblock, DefaultUnblock time.Duration
	// WidestUnblock4 and WidestUnblock6 are the shortest prefix lengths of an unblock
	// (0: the floor of every entry, /8 and /32).
	WidestUnblock4, WidestUnblock6 int
	// Forbid says, for a prefix, whether a kind may not be added there and why ("" if
	// it may).
	Forbid func(k Kind, p netip.Prefix) string
}

// Defaults for Rules a policy leaves out (the policy package's, where diff reads them).
var (
	DefaultEscalation = policy.DefaultQuarantineTerms
	DefaultMemory     = policy.DefaultQuarantineMemory
	DefaultMaxUnblock = policy.DefaultUnblockMax
)

// Validate checks a request against the rules: kind, prefix (a host or a network, not
// the whole space), reason, duration and the policy's forbidden ranges.
func (r Rules) Validate(req Request) error {
	if !req.Kind.Valid() {
		return fmt.Errorf("%w %q: quarantine or unblock", ErrKind, req.Kind)
	}
	if !req.Prefix.IsValid() {
		return fmt.Errorf("%w: no address or prefix", ErrInvalid)
	}
	if req.Prefix.Masked() != req.Prefix {
		return fmt.Errorf("%w: %s has host bits set; did you mean %s?", ErrInvalid, req.Prefix, req.Prefix.Masked())
	}
	floor := 8
	if req.Prefix.Addr().Is6() {
		floor = 32
	}
	if req.Prefix.Bits() < floor {
		return fmt.Errorf("%w: %s is wider than /%d; a runtime entry is for a subscriber or a small block, change the policy for more", ErrInvalid, req.Prefix, floor)
	}
	widest, key := r.WidestUnblock4, "widest_ipv4"
	if req.Prefix.Addr().Is6() {
		widest, key = r.WidestUnblock6, "widest_ipv6"
	}
	if req.Kind == Unblock && req.Prefix.Bits() < widest {
		return fmt.Errorf("%w: an unblock is at most a /%d under this policy (runtime.unblock.%s), not %s: it is for a customer, not a pool (an exemption in the policy opens more)", ErrInvalid, widest, key, req.Prefix)
	}
	if err := CheckText("reason", req.Reason, true); err != nil {
		return err
	}
	if err := CheckText("ticket", req.Ticket, false); err != nil {
		return err
	}
	if req.For < 0 {
		return fmt.Errorf("%w: a negative duration", ErrDuration)
	}
	if req.For > 0 && req.For < MinTerm {
		return fmt.Errorf("%w: %s is shorter than a runtime entry may last (%s): it would end before the daemon saw it", ErrDuration, req.For, MinTerm)
	}
	if req.Kind == Unblock && r.MaxUnblock > 0 && req.For > r.MaxUnblock {
		return fmt.Errorf("%w: an unblock lasts at most %s under this policy (runtime.unblock.max), not %s", ErrDuration, policy.FormatDuration(r.MaxUnblock), policy.FormatDuration(req.For))
	}
	if req.Kind == Quarantine && r.MaxQuarantine > 0 && req.For > r.MaxQuarantine {
		return fmt.Errorf("%w: a quarantine lasts at most %s under this policy (runtime.quarantine.max), not %s", ErrDuration, policy.FormatDuration(r.MaxQuarantine), policy.FormatDuration(req.For))
	}
	if r.Forbid != nil {
		if why := r.Forbid(req.Kind, req.Prefix); why != "" {
			return fmt.Errorf("%w: %s", ErrForbidden, why)
		}
	}
	return nil
}

// MinTerm is the shortest term a runtime entry may be asked for: the daemon ends
// unblocks on a check every second, so a term of a few nanoseconds was stored,
// written into the data plane and in force until that check.
const MinTerm = 10 * time.Second

// MaxText bounds a reason or a ticket, in bytes.
const MaxText = 1024

// CheckText checks a reason or ticket (what) as people and terminals read it: one line
// of printable text, at most MaxText bytes, not only spaces (and not empty when
// required). A control character (a newline, an escape sequence) would let a client
// forge lines in the history an abuse desk reads.
func CheckText(what, s string, required bool) error {
	switch {
	case strings.TrimSpace(s) == "" && required:
		return fmt.Errorf("%w: a %s is required (say why, for the next person on shift)", ErrInvalid, what)
	case strings.TrimSpace(s) == "" && s != "":
		return fmt.Errorf("%w: the %s is only spaces: give one, or leave it out", ErrInvalid, what)
	case len(s) > MaxText:
		return fmt.Errorf("%w: the %s is %d bytes; at most %d", ErrInvalid, what, len(s), MaxText)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: the %s is not UTF-8 text", ErrInvalid, what)
	}
	if i := strings.IndexFunc(s, unprintable); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Errorf("%w: the %s holds a control character (%q at byte %d): write it on one line, without escapes", ErrInvalid, what, r, i)
	}
	return nil
}

// unprintable: a control character, a format character (bidirectional overrides and
// isolates reorder what a terminal shows) or a line or paragraph separator.
func unprintable(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// Printable is s as it may go to a terminal: quoted, its escapes written out, if it
// holds a character CheckText refuses (text stored before reasons were checked, or
// written into etcd by another client, may).
func Printable(s string) string {
	if strings.ContainsFunc(s, unprintable) {
		return strconv.Quote(s)
	}
	return s
}

// Add applies req to s at now (after Validate): a new entry, or a longer term for an
// existing one. A quarantine's term is req.For if given, else the escalation step for
// how many quarantines of the prefix the history holds within Memory. An entry added
// again while it is in force is extended (action Extended), not escalated: a client
// that retries a request, or two reports of one spam run, must not lengthen the term
// step by step. It returns the entry in force and the event to record.
func (r Rules) Add(s *State, req Request, now time.Time) (Entry, Event) {
	e := Entry{Kind: req.Kind, Prefix: req.Prefix, Added: now, Reason: req.Reason, Ticket: req.Ticket, Who: req.Who}
	action := Added
	term := req.For
	i := slices.IndexFunc(s.Entries, func(x Entry) bool { return x.Key() == e.Key() })
	live := i >= 0 && s.Entries[i].Live(now)
	if live {
		action = Extended
	}
	switch req.Kind {
	case Quarantine:
		e.Reset = r.Reset
		if live {
			e.Level = s.Entries[i].Level
		} else if e.Level = r.priorQuarantines(s, req.Prefix, now); e.Level > 0 {
			action = Escalated
		}
		if term == 0 {
			steps := r.Escalation
			if len(steps) == 0 {
				steps = DefaultEscalation
			}
			term = steps[min(e.Level, len(steps)-1)]
		}
	case Unblock:
		if term == 0 {
			term = r.DefaultUnblock
			if term == 0 {
				term = policy.DefaultUnblockTerm
			}
		}
	}
	e.Expires = now.Add(term)
	if i >= 0 {
		// Already there: the later expiry wins, the history says who extended it.
		if s.Entries[i].Expires.After(e.Expires) {
			e.Expires = s.Entries[i].Expires
		}
		s.Entries[i] = e
	} else {
		// In order, so that Live need not sort entries that were kept sorted.
		at, _ := slices.BinarySearchFunc(s.Entries, e, compareEntries)
		s.Entries = slices.Insert(s.Entries, at, e)
	}
	ev := Event{Time: now, Action: action, Entry: e, Who: req.Who, Reason: req.Reason}
	s.History = append(s.History, ev)
	return e, ev
}

// priorQuarantines counts the quarantines of p in the history that started within
// Memory before now. Only the events the history still holds count (Trim).
func (r Rules) priorQuarantines(s *State, p netip.Prefix, now time.Time) int {
	memory := r.Memory
	if memory == 0 {
		memory = DefaultMemory
	}
	n := 0
	for _, ev := range s.History {
		if ev.Entry.Kind == Quarantine && ev.Entry.Prefix == p && (ev.Action == Added || ev.Action == Escalated) && now.Sub(ev.Time) < memory {
			n++
		}
	}
	return n
}

// Remove takes the entry key out of s (a release by who, or its expiry) and returns
// the event to record.
func Remove(s *State, k Key, action Action, who, reason string, now time.Time) (Event, error) {
	i := slices.IndexFunc(s.Entries, func(x Entry) bool { return x.Key() == k })
	if i < 0 {
		return Event{}, fmt.Errorf("%w: %s", ErrNotFound, k)
	}
	e := s.Entries[i]
	s.Entries = slices.Delete(s.Entries, i, i+1)
	ev := Event{Time: now, Action: action, Entry: e, Who: who, Reason: reason}
	s.History = append(s.History, ev)
	return ev, nil
}

// Expire removes every entry past its expiry at now and returns the events.
func Expire(s *State, now time.Time) []Event {
	var evs []Event
	for _, e := range slices.Clone(s.Entries) {
		if !e.Live(now) {
			ev, _ := Remove(s, e.Key(), Expired, "expiry", "", now)
			evs = append(evs, ev)
		}
	}
	return evs
}

// Live returns the entries in force at now, sorted by kind then prefix.
func (s *State) Live(now time.Time) []Entry {
	var out []Entry
	n := 0
	for _, e := range s.Entries {
		if e.Live(now) {
			n++
		}
	}
	if n > 0 {
		out = make([]Entry, 0, n)
	}
	for _, e := range s.Entries {
		if e.Live(now) {
			out = append(out, e)
		}
	}
	if !slices.IsSortedFunc(out, compareEntries) {
		slices.SortFunc(out, compareEntries)
	}
	return out
}

// compareEntries orders entries by kind, then prefix (address, then length).
func compareEntries(a, b Entry) int {
	if a.Kind != b.Kind {
		if a.Kind < b.Kind {
			return -1
		}
		return 1
	}
	return ComparePrefix(a.Prefix, b.Prefix)
}

// ComparePrefix orders prefixes by address, then length, as Live sorts them.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Count returns how many entries of kind k are in force at now.
func (s *State) Count(k Kind, now time.Time) int {
	n := 0
	for _, e := range s.Entries {
		if e.Kind == k && e.Live(now) {
			n++
		}
	}
	return n
}

// Room says whether an entry with key k may be added at now when each kind holds at
// most limit live entries: nil if k is already an entry (adding it again extends it)
// or its kind has room, else an error wrapping ErrFull.
func (s *State) Room(k Key, limit int, now time.Time) error {
	if slices.ContainsFunc(s.Entries, func(e Entry) bool { return e.Key() == k && e.Live(now) }) {
		return nil
	}
	if n := s.Count(k.Kind, now); n >= limit {
		return fmt.Errorf("%w: %d runtime %ss are in force, the most this daemon holds; release some that are no longer needed (or let them expire) before adding %s", ErrFull, n, k.Kind, k.Prefix)
	}
	return nil
}

// Trim drops the oldest events past the newest limit and returns how many it dropped.
// The events kept are not changed or moved (a copy of s made before still reads
// them), and a repeat quarantine escalates by what the history still holds.
func (s *State) Trim(limit int) int {
	n := len(s.History) - limit
	if limit < 0 || n <= 0 {
		return 0
	}
	s.History = s.History[n:]
	return n
}

// ParseTarget parses one host ("100.64.1.10", a /32 or /128) or a network
// ("100.64.1.0/28"). An IPv4-mapped IPv6 address is taken as the IPv4 one it maps.
func ParseTarget(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network; write one like 100.64.1.0/28 or 2001:db8:1::/48", policy.Clip(s))
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%s has host bits set; did you mean %s?", p, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address; write one host like 100.64.1.10 or 2001:db8::1", policy.Clip(s))
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q has an IPv6 zone; give the address without %%%s", policy.Clip(s), policy.Clip(a.Zone()))
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Concerns reports whether an entry (or event) of prefix e bears on the addresses of
// p: e holds p, or lies within it. A listing narrowed to p is of these: asked about
// one subscriber, it answers the subscriber's own entries and those of the networks
// that hold it (an unblock of 100.64.1.0/28 unblocks 100.64.1.10 too).
func Concerns(e, p netip.Prefix) bool { return e.Overlaps(p) }

// Sort puts the entries in Live's order (kind, then prefix), which Add keeps.
func (s *State) Sort() { slices.SortFunc(s.Entries, compareEntries) }

// EntriesPage returns up to limit of the entries in force at now, in Live's order:
// only those that concern prefix p (Concerns) if p is valid, only those after the
// entry after if after.Prefix is valid; and whether more follow. It copies only what
// it returns.
func (s *State) EntriesPage(now time.Time, p netip.Prefix, after Key, limit int) ([]Entry, bool) {
	entries := s.Entries
	if !slices.IsSortedFunc(entries, compareEntries) {
		entries = s.Live(now)
	}
	i := 0
	if after.Prefix.IsValid() {
		i, _ = slices.BinarySearchFunc(entries, Entry{Kind: after.Kind, Prefix: after.Prefix}, compareEntries)
		if i < len(entries) && entries[i].Key() == after {
			i++
		}
	}
	var out []Entry
	for _, e := range entries[i:] {
		if !e.Live(now) || (p.IsValid() && !Concerns(e.Prefix, p)) {
			continue
		}
		if len(out) == limit {
			return out, true
		}
		out = append(out, e)
	}
	return out, false
}

// HistoryPage returns up to limit of the newest events of the history, oldest first:
// only those of entries that concern prefix p (Concerns) if p is valid, only those
// numbered below before if before is not 0. s.History[i] is numbered first+i. It returns the number of the first event
// returned and whether older ones match too. It copies only what it returns.
func (s *State) HistoryPage(first uint64, p netip.Prefix, before uint64, limit int) ([]Event, uint64, bool) {
	end := len(s.History)
	if before != 0 {
		switch {
		case before <= first:
			end = 0
		case before-first < uint64(end):
			end = int(before - first)
		}
	}
	var idx []int // newest first
	for i := end - 1; i >= 0; i-- {
		if p.IsValid() && !Concerns(s.History[i].Entry.Prefix, p) {
			continue
		}
		if len(idx) == limit {
			return collect(s.History, idx), first + uint64(idx[len(idx)-1]), true
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return nil, 0, false
	}
	return collect(s.History, idx), first + uint64(idx[len(idx)-1]), false
}

// collect returns h's events at the indices idx (newest first), oldest first.
func collect(h []Event, idx []int) []Event {
	out := make([]Event, len(idx))
	for j, i := range idx {
		out[len(idx)-1-j] = h[i]
	}
	return out
}
