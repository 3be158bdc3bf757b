package policy

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/portcullis/portcullis/internal/suggest"
	"github.com/portcullis/portcullis/model"
)

// Version is the policy format version this package reads.
const Version = 1

// PortRange is how messages write the range of valid port numbers.
const PortRange = "1-65535"

// Defaults for keys a policy leaves out.
var (
	DefaultGoverned  = []uint16{25}
	DefaultProtected = []uint16{465, 587}
)

const (
	DefaultRSTRate  = 1000 // RSTs per second per CPU
	DefaultRSTBurst = 200
)

// CIDR is a prefix as written in the file, normalised (IPv4-mapped IPv6 to IPv4).
type CIDR struct {
	Prefix netip.Prefix
	Pos    Pos
}

// Range is a named set of prefixes sharing a verdict for the governed ports.
type Range struct {
	Name        string
	Verdict     model.Verdict
	CIDRs       []CIDR
	Description string
	Owner       string
	Scope       Scope
	Pos         Pos
}

// Scope is the interfaces an entry applies to, sorted; nil means every interface.
type Scope []string

// Overlaps reports whether some interface is in both scopes (nil is every interface).
func (s Scope) Overlaps(o Scope) bool {
	if s == nil || o == nil {
		return true
	}
	for _, a := range s {
		if slices.Contains(o, a) {
			return true
		}
	}
	return false
}

// Covers reports whether every interface of o is in s.
func (s Scope) Covers(o Scope) bool {
	if s == nil {
		return true
	}
	if o == nil {
		return false
	}
	for _, a := range o {
		if !slices.Contains(s, a) {
			return false
		}
	}
	return true
}

func (s Scope) String() string {
	if s == nil {
		return "every interface"
	}
	return strings.Join(s, ", ")
}

// Relay is a named set of destinations (the ISP's own smarthosts and MXs) towards which
// the governed ports, or the listed ones among them, always pass, whoever the source.
type Relay struct {
	Name   string
	CIDRs  []CIDR
	Ports  []uint16 // empty: every governed port
	Reason string
	Ticket string
	Owner  string
	// BlockQuarantined makes quarantined sources get their quarantine's verdict towards
	// this relay too ("quarantined: block"); by default they may use it.
	BlockQuarantined bool
	Broad            bool // prefixes shorter than MinRelayBits4/6 were asked for
	Pos              Pos
	portsAt          map[uint16]*node
}

// The narrowest a relay prefix may be without `broad: true`: a relay wider than this
// lets most of the address space take mail on port 25 from anyone.
const (
	MinRelayBits4 = 16
	MinRelayBits6 = 32
)

// Listing is what exemptions and quarantines share: one prefix, who asked for it and
// why, and when it ends.
type Listing struct {
	Name    string
	CIDR    CIDR
	Reason  string
	Ticket  string
	Owner   string
	Expires time.Time // zero: never (exemptions only; quarantines require it)
	Scope   Scope
	Pos     Pos
}

// Exemption lets one prefix (usually a customer's registered mail server) through.
type Exemption struct {
	Listing
}

// Quarantine blocks one prefix until it expires; it is checked before the ranges.
type Quarantine struct {
	Listing
	Verdict model.Verdict // drop or reset
}

// Policy is a parsed, checked policy file.
type Policy struct {
	File        string
	Governed    []uint16
	Protected   []uint16
	Default     model.Verdict
	DefaultPos  Pos // where the default: key is written; zero when it is not
	RSTRate     uint32
	RSTBurst    uint32
	Ranges      []Range
	Exemptions  []Exemption
	Quarantines []Quarantine
	Relays      []Relay
	Runtime     Runtime // bounds of the runtime entries laid over this policy
	// Warnings are problems that do not stop the policy: expired entries (ignored),
	// exemptions that never decide, IPv4-mapped prefixes read as IPv4.
	Warnings Errors
}

// ParseFile reads and checks the policy at path. now decides which exemptions and
// quarantines have expired.
func ParseFile(path string, now time.Time) (*Policy, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, now)
}

// MaxFileBytes bounds a policy or list file: ten million prefixes, one a line, take
// about 200 MB.
const MaxFileBytes = 1 << 30

// ReadFile reads a policy or list file: a regular file (a device, a FIFO or a
// directory named by mistake would be read without end, or not at all) of at most
// MaxFileBytes. Its errors are *FileError.
func ReadFile(path string) ([]byte, error) {
	// Stat before the open: opening a named pipe waits for a writer.
	st, err := os.Stat(path)
	if err != nil {
		return nil, &FileError{path, err}
	}
	switch m := st.Mode(); {
	case m.IsDir():
		return nil, &FileError{path, errors.New("a directory, not a file")}
	case m&fs.ModeNamedPipe != 0:
		return nil, &FileError{path, errors.New("a named pipe, not a file")}
	case m&fs.ModeDevice != 0:
		return nil, &FileError{path, errors.New("a device, not a file")}
	case !m.IsRegular():
		return nil, &FileError{path, errors.New("not a regular file")}
	}
	tooBig := &FileError{path, fmt.Errorf("larger than %d MiB; a policy or list file may hold at most that", MaxFileBytes>>20)}
	if st.Size() > MaxFileBytes {
		return nil, tooBig
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &FileError{path, err}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, &FileError{path, err}
	}
	if len(data) > MaxFileBytes {
		return nil, tooBig
	}
	return data, nil
}

// FileError is a policy file that could not be read (as opposed to Errors, a file
// that was read and is not a valid policy).
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string {
	if errors.Is(e.Err, fs.ErrNotExist) {
		return e.Path + ": no such file"
	}
	var pe *fs.PathError
	if errors.As(e.Err, &pe) {
		return "cannot read " + e.Path + ": " + pe.Err.Error()
	}
	return "cannot read " + e.Path + ": " + e.Err.Error()
}

func (e *FileError) Unwrap() error { return e.Err }

type parser struct {
	file   string
	errs   Errors
	warns  Errors
	now    time.Time
	inline bool         // no cidrs_file: the policy is not a file of this machine (ParseInline)
	occ    []occurrence // every prefix of the policy, sorted (checkOverlaps)
	lists  ListFiles    // list files to read from, not the file system (ParseWithLists)
	keep   ListFiles    // the list files read, kept (ParseKeeping)
	// ranges is where each range name is first written, ranges with errors included;
	// forbidden the range names runtime: forbids, where each is written.
	ranges    map[string]Pos
	forbidden []forbiddenName
}

type forbiddenName struct {
	name string
	pos  Pos
}

func (p *parser) pos(n *node) Pos { return Pos{p.file, max(n.line, 1), max(n.col, 1)} }

func (p *parser) errorf(n *node, format string, args ...any) {
	p.errs = append(p.errs, Error{p.pos(n), fmt.Sprintf(format, args...)})
}

// Parse checks a policy. On any error it returns Errors (all of them, in file order)
// and no policy.
func Parse(file string, data []byte, now time.Time) (*Policy, error) {
	return parse(&parser{file: file, now: now}, data)
}

// ParseInline is Parse for a policy that is not a file of this machine (one from
// etcd, named file in errors): it must carry its prefixes itself, and cidrs_file is
// an error, since there is no directory to read a list from.
func ParseInline(file string, data []byte, now time.Time) (*Policy, error) {
	return parse(&parser{file: file, now: now, inline: true}, data)
}

// ListFiles are list files (cidrs_file) by the path a parse read them at.
type ListFiles map[string][]byte

// ParseKeeping is Parse that also returns the list files it read, so that the same
// policy can be parsed again without them (ParseWithLists): an override kept across
// restarts carries them, and does not depend on files that may move.
func ParseKeeping(file string, data []byte, now time.Time) (*Policy, ListFiles, error) {
	p := &parser{file: file, now: now, keep: ListFiles{}}
	pol, err := parse(p, data)
	return pol, p.keep, err
}

// ParseWithLists is Parse that reads the list files in lists from there (others from
// the file system).
func ParseWithLists(file string, data []byte, now time.Time, lists ListFiles) (*Policy, error) {
	return parse(&parser{file: file, now: now, lists: lists}, data)
}

func parse(p *parser, data []byte) (*Policy, error) {
	file := p.file
	p.ranges = map[string]Pos{}
	root, err := parseYAML(file, data)
	if errors.Is(err, errEmpty) {
		return nil, Errors{{Pos{file, 1, 1}, "the policy is empty; start from examples/policy.yaml"}}
	}
	if err != nil {
		return nil, Errors{err.(Error)}
	}
	pol := p.policy(root)
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool {
			a, b := p.errs[i].Pos, p.errs[j].Pos
			return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
		})
		return nil, p.errs
	}
	p.checkShadowed(pol)
	p.checkNeedless(pol)
	p.occ = nil
	slices.SortStableFunc(p.warns, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Col, b.Pos.Col))
	})
	pol.Warnings = p.warns
	return pol, nil
}

// fields walks a mapping node, rejecting unknown and repeated keys.
func (p *parser) fields(n *node, what string, known []string, fn func(key string, k, v *node)) bool {
	if n.kind != mappingNode {
		p.errorf(n, "%s must be a mapping of keys (%s), not %s", what, strings.Join(known, ", "), kindName(n))
		return false
	}
	seen := map[string]*node{}
	for i := 0; i+1 < len(n.content); i += 2 {
		k, v := n.content[i], n.content[i+1]
		if !slices.Contains(known, k.value) {
			hint := ""
			if s := suggest.Closest(k.value, known); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			p.errorf(k, "unknown key %q in %s%s (known keys: %s)", Clip(k.value), what, hint, strings.Join(known, ", "))
			continue
		}
		if prev, ok := seen[k.value]; ok {
			p.errorf(k, "key %q repeated in %s (first at line %d); keep one", Clip(k.value), what, prev.line)
			continue
		}
		seen[k.value] = k
		fn(k.value, k, v)
	}
	return true
}

func kindName(n *node) string {
	switch n.kind {
	case sequenceNode:
		return "a list"
	case mappingNode:
		return "a mapping"
	case scalarNode:
		if n.tag == "!!null" {
			return "nothing (the key has no value)"
		}
		if n.tag == "!!str" && n.value != "" && strings.Trim(n.value, "0123456789.") == "" && strings.Count(n.value, ".") <= 1 {
			return fmt.Sprintf("the quoted text %q (write the number without quotes)", Clip(n.value))
		}
		return fmt.Sprintf("%q", Clip(n.value))
	case aliasNode:
		return "an alias"
	}
	return "nothing"
}

func (p *parser) str(n *node, what string) string {
	if n.kind != scalarNode || n.tag == "!!null" {
		p.errorf(n, "%s must be text, not %s", what, kindName(n))
		return ""
	}
	return n.value
}

// text is str for a value that must say something: an empty or blank string (quoted
// empty, or spaces) is an error at the value, telling what to write (fix), so that an empty
// value never drops, widens or empties an entry without a word.
func (p *parser) text(n *node, what, fix string) string {
	s := p.str(n, what)
	if n.kind == scalarNode && n.tag != "!!null" && strings.TrimSpace(s) == "" {
		p.errorf(n, "%s is empty; %s", what, fix)
		return ""
	}
	return s
}

// Clip cuts a value quoted back in a message to its first 64 bytes (at a character
// boundary), saying how long it was: a whole file of one word must not come back as
// one error line (on the terminal, in the daemon's log and in the audit).
func Clip(s string) string {
	const keep = 64
	if len(s) <= keep+16 {
		return s
	}
	i := keep
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return fmt.Sprintf("%s... (%d bytes in all)", s[:i], len(s))
}

// MaxNameLen bounds entry names: counters are kept in the data plane under
// "kind/name", in a fixed-size label.
const MaxNameLen = 100

func (p *parser) name(n *node) string {
	s := p.text(n, "name", "give the entry a name (counters are kept by it), or leave the key out where it is optional")
	if len(s) > MaxNameLen {
		p.errorf(n, "name is %d bytes long; keep it to %d (counters are kept under it)", len(s), MaxNameLen)
	}
	return s
}

func (p *parser) uint(n *node, what string, maxv uint64) (uint64, bool) {
	if n.kind != scalarNode || n.tag != "!!int" {
		p.errorf(n, "%s must be a whole number, not %s", what, kindName(n))
		return 0, false
	}
	v, err := strconv.ParseUint(n.value, 0, 64)
	if err != nil || v > maxv {
		p.errorf(n, "%s must be between 0 and %d, not %s", what, maxv, n.value)
		return 0, false
	}
	return v, true
}

func (p *parser) list(n *node, what string) []*node {
	if n.kind != sequenceNode {
		fix := ""
		switch {
		case n.kind == scalarNode && n.tag != "!!null" && strings.TrimSpace(n.value) != "":
			fix = fmt.Sprintf(" (write it in brackets: [%s])", n.value)
		case n.kind == mappingNode:
			fix = fmt.Sprintf(` (start each entry of %s with "- ")`, what)
		}
		p.errorf(n, "%s must be a list, not %s%s", what, kindName(n), fix)
		return nil
	}
	return n.content
}

// ports parses a list of ports, sorted, and where each is written.
func (p *parser) ports(n *node, what string) ([]uint16, map[uint16]*node) {
	var out []uint16
	at := map[uint16]*node{}
	seen := map[uint64]bool{}
	for _, e := range p.list(n, what) {
		v, err := strconv.ParseUint(e.value, 0, 16)
		if e.kind != scalarNode || e.tag != "!!int" || err != nil || v == 0 {
			p.errorf(e, "a port in %s must be a port number %s, not %s", what, PortRange, kindName(e))
			continue
		}
		if seen[v] {
			p.errorf(e, "port %d listed twice in %s", v, what)
			continue
		}
		seen[v] = true
		out = append(out, uint16(v))
		at[uint16(v)] = e
	}
	slices.Sort(out)
	return out, at
}

func (p *parser) verdict(n *node, allowed []model.Verdict) model.Verdict {
	var words []string
	for _, a := range allowed {
		words = append(words, a.String())
	}
	s := p.str(n, "verdict")
	v, ok := model.ParseVerdict(s)
	if !ok || !slices.Contains(allowed, v) {
		if s != "" || n.kind == scalarNode {
			hint := ""
			if c := suggest.Closest(strings.ToLower(s), words); c != "" {
				hint = fmt.Sprintf("; did you mean %q?", c)
			}
			p.errorf(n, "verdict %q is not one of %s%s", Clip(s), strings.Join(words, ", "), hint)
		}
		return 0
	}
	return v
}

// cidr parses a prefix or a bare address (a host prefix). Host bits set is an error
// that suggests the prefix meant; IPv4-mapped IPv6 becomes IPv4.
func (p *parser) cidr(n *node) (CIDR, bool) {
	s := p.text(n, "a CIDR", "write an address or prefix, like 192.0.2.25 or 100.64.0.0/10")
	if s == "" {
		return CIDR{}, false
	}
	return p.cidrAt(s, p.pos(n))
}

// cidrAt parses s, written at pos (in the policy, or in a list file it names).
func (p *parser) cidrAt(s string, pos Pos) (CIDR, bool) {
	fail := func(format string, args ...any) (CIDR, bool) {
		p.errs = append(p.errs, Error{pos, fmt.Sprintf(format, args...)})
		return CIDR{}, false
	}
	if strings.ContainsAny(s, " \t") { // (no allocation for the million that have none)
		if t := strings.Join(strings.Fields(s), ""); isPrefix(t) {
			return fail("%q has a space inside; write %s", Clip(s), t)
		}
	}
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		pfx, err = netip.ParsePrefix(s)
		if err != nil {
			return fail("%q is not a CIDR prefix%s (write it like 100.64.0.0/10 or 2001:db8::/32)", Clip(s), cidrProblem(s))
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return fail("%q is not an address or CIDR prefix%s (write it like 192.0.2.25 or 100.64.0.0/10)", Clip(s), cidrProblem(s))
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if pfx.Addr().Zone() != "" {
		return fail("%q has a zone; policies take global prefixes", Clip(s))
	}
	if pfx.Addr().Is4In6() && pfx.Bits() < 96 { // before host bits: their fix would leave the mapped space
		return fail("%s is wider than the IPv4-mapped space ::ffff:0:0/96; write the IPv4 prefix instead", Clip(s))
	}
	if pfx.Masked() != pfx {
		return fail("%s has host bits set; did you mean %s?", Clip(s), pfx.Masked())
	}
	if pfx.Addr().Is4In6() {
		v4 := netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		p.warns = append(p.warns, Error{pos, fmt.Sprintf("%s is IPv4-mapped: it is read as the IPv4 prefix %s (IPv6 packets from mapped sources are judged as the IPv4 address they map); write %s to say so", s, v4, v4)})
		pfx = v4
	}
	return CIDR{pfx, pos}, true
}

// cidrs parses a `cidrs:` list; empty says so with ifEmpty.
func (p *parser) cidrs(v *node, ifEmpty string) []CIDR {
	items := p.list(v, "cidrs")
	out := make([]CIDR, 0, len(items))
	for _, c := range items {
		if cidr, ok := p.cidr(c); ok {
			out = append(out, cidr)
		}
	}
	if len(v.content) == 0 && v.kind == sequenceNode {
		p.errorf(v, "%s", ifEmpty)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// MaxListErrors bounds the errors reported for one list file: a file of the wrong
// kind would otherwise give a million.
const MaxListErrors = 20

// cidrsFile reads a list file named by a range's cidrs_file: one address or CIDR per
// line, blank lines and "#" comments (whole-line or after the prefix) ignored. A
// relative path is relative to the policy file's directory. Errors name file:line.
func (p *parser) cidrsFile(n *node) []CIDR {
	rel := p.text(n, "cidrs_file", "name a list file (relative to the policy file's directory), or leave the key out")
	if rel == "" {
		return nil
	}
	if p.inline {
		p.errorf(n, "cidrs_file cannot be used in a policy that is not a file on the router (a policy from etcd): list the prefixes under cidrs")
		return nil
	}
	path := rel
	if !filepath.IsAbs(rel) {
		path = filepath.Join(filepath.Dir(p.file), rel)
	}
	data, kept := p.lists[path]
	var err error
	if !kept {
		data, err = ReadFile(path)
	}
	if err != nil {
		hint := ""
		if !filepath.IsAbs(rel) && errors.Is(err, fs.ErrNotExist) {
			hint = " (cidrs_file is read relative to the policy file's directory)"
		}
		p.errorf(n, "%s", err.Error()+hint)
		return nil
	}
	if p.keep != nil {
		p.keep[path] = data
	}
	// The file as a string without a copy (data is never written to): each line is
	// a substring of it, so reading a line allocates nothing (netip parses IPv4
	// without allocating either). Nothing keeps a substring: messages are formatted
	// copies, and netip keeps a zone only as a copy (unique.Make clones strings).
	text := unsafe.String(unsafe.SliceData(data), len(data))
	if t, isUTF16 := fromUTF16(data); isUTF16 {
		text = t // Windows' "Unicode" export: read as the same text in UTF-8
	} else if i := strings.IndexByte(text, 0); i >= 0 {
		line := 1 + strings.Count(text[:i], "\n")
		p.errorf(n, "%s is not a text file (a NUL byte on line %d): a list file is text, one address or CIDR per line (UTF-8, or UTF-16 with its byte-order mark)", path, line)
		return nil
	}
	out := make([]CIDR, strings.Count(text, "\n")+1) // a slot for each line
	errs := len(p.errs)
	got, ok := p.readLists(text, path, out)
	if !ok {
		p.errorf(n, "%s: more than %d errors; stopped reading it (is it a list of CIDRs, one per line?)", path, MaxListErrors)
		return nil
	}
	clear(out[got:])
	out = out[:got]
	if len(out) == 0 && len(p.errs) == errs {
		p.errorf(n, "%s lists no prefix; write one address or CIDR per line", path)
	}
	return out
}

// listSplit is the size from which readLists reads a list file in two halves at once,
// one a CPU: a million lines take a quarter of a second alone.
const listSplit = 1 << 20

// readLists is readList for a whole file, which it reads in two halves at once when
// it is large. Their results join as one reading's would: when the halves find
// MaxListErrors errors or more together, where the reading stops is the whole
// file's, so the file is read again as one (a file with that many errors is not
// the case to make fast).
func (p *parser) readLists(text, path string, out []CIDR) (int, bool) {
	text = strings.TrimPrefix(text, "\ufeff") // a UTF-8 byte-order mark (Windows exports)
	mid := len(text) / 2
	i := strings.IndexByte(text[mid:], '\n')
	if len(text) < listSplit || i < 0 {
		return p.readList(text, path, 1, out)
	}
	mid += i + 1
	lines := strings.Count(text[:mid], "\n") // the first half's lines, each with its newline
	var a, b parser                          // each half's errors and warnings
	var na, nb int
	var okA, okB bool
	var wg sync.WaitGroup
	wg.Go(func() { na, okA = a.readList(text[:mid], path, 1, out[:lines]) })
	nb, okB = b.readList(text[mid:], path, lines+1, out[lines:])
	wg.Wait()
	if !okA || !okB || len(a.errs)+len(b.errs) >= MaxListErrors {
		clear(out)
		return p.readList(text, path, 1, out)
	}
	copy(out[na:], out[lines:lines+nb])
	p.errs = append(append(p.errs, a.errs...), b.errs...)
	p.warns = append(append(p.warns, a.warns...), b.warns...)
	return na + nb, true
}

// readList reads the lines of text, lines firstLine on of the list file path, into
// out (a slot for each line) and returns how many prefixes it read; errors and
// warnings go to p (cidrAt's, which touch nothing else of it). It stops, returning
// false, at a line that comes after MaxListErrors errors.
func (p *parser) readList(text, path string, firstLine int, out []CIDR) (int, bool) {
	errs, n, line := len(p.errs), 0, firstLine-1
	for len(text) > 0 {
		line++
		var l string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			l, text = text[:i], text[i+1:]
		} else {
			l, text = text, ""
		}
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		trimmed := strings.TrimLeft(l, " \t")
		col := 1 + len(l) - len(trimmed)
		if l = strings.TrimSpace(trimmed); l == "" {
			continue
		}
		if len(p.errs)-errs >= MaxListErrors {
			return n, false
		}
		if pfx, ok := plainIPv4(l); ok {
			out[n] = CIDR{pfx, Pos{path, line, col}}
			n++
		} else if severalOnALine(l) {
			p.errs = append(p.errs, Error{Pos{path, line, col}, fmt.Sprintf("%q: one address or CIDR per line", Clip(l))})
		} else if c, ok := p.cidrAt(l, Pos{path, line, col}); ok {
			out[n] = c
			n++
		}
	}
	return n, true
}

// fromUTF16 returns data as UTF-8 if it is UTF-16 text that starts with its
// byte-order mark (FF FE little-endian, FE FF big-endian), and whether it is.
func fromUTF16(data []byte) (string, bool) {
	if len(data) < 2 || len(data)%2 != 0 {
		return "", false
	}
	var order binary.ByteOrder
	switch {
	case data[0] == 0xff && data[1] == 0xfe:
		order = binary.LittleEndian
	case data[0] == 0xfe && data[1] == 0xff:
		order = binary.BigEndian
	default:
		return "", false
	}
	units := make([]uint16, 0, len(data)/2-1)
	for i := 2; i < len(data); i += 2 {
		units = append(units, order.Uint16(data[i:]))
	}
	return string(utf16.Decode(units)), true
}

// severalOnALine reports whether the line l of a list file holds several prefixes
// (separated by spaces, commas or semicolons), not one with a space inside, which
// cidrAt reports with the fix. It allocates only for a line with a separator: the
// million IPv6 lines of an export have none.
func severalOnALine(l string) bool {
	if strings.IndexFunc(l, isListSeparator) < 0 {
		return false
	}
	f := strings.FieldsFunc(l, isListSeparator)
	return len(f) > 0 && isPrefix(f[0]) && !isPrefix(strings.Join(strings.Fields(l), ""))
}

// isListSeparator reports whether r separates prefixes written on one line of a list
// file (spaces, or a CSV's commas and semicolons): each must have its own line.
func isListSeparator(r rune) bool { return r == ' ' || r == '\t' || r == ',' || r == ';' }

// isPrefix reports whether s reads as an address or a CIDR prefix.
func isPrefix(s string) bool {
	if _, err := netip.ParsePrefix(s); err == nil {
		return true
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// plainIPv4 reads s when it is the common case of a list file: an IPv4 prefix with
// no host bits set ("100.64.0.0/10") or an IPv4 address (a /32), written as netip
// reads it (four decimal octets 0-255 without leading zeros, a length 0-32 without a
// leading zero). It reports false for anything else, valid or not: cidrAt reads
// those, and says what is wrong. It gives the prefix cidrAt would, at a fifth of
// the cost (TestPlainIPv4 holds it to cidrAt).
func plainIPv4(s string) (netip.Prefix, bool) {
	var a [4]byte
	i := 0
	for k := range 4 {
		if k > 0 {
			if i >= len(s) || s[i] != '.' {
				return netip.Prefix{}, false
			}
			i++
		}
		v, start := 0, i
		for i < len(s) && i-start < 3 && '0' <= s[i] && s[i] <= '9' {
			v = v*10 + int(s[i]-'0')
			i++
		}
		if i == start || v > 255 || i-start > 1 && s[start] == '0' {
			return netip.Prefix{}, false
		}
		a[k] = byte(v)
	}
	bits := 32
	if i < len(s) {
		if s[i] != '/' {
			return netip.Prefix{}, false
		}
		i++
		if n := len(s) - i; n < 1 || n > 2 || n == 2 && s[i] == '0' {
			return netip.Prefix{}, false
		}
		bits = 0
		for ; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return netip.Prefix{}, false
			}
			bits = bits*10 + int(s[i]-'0')
		}
		if bits > 32 {
			return netip.Prefix{}, false
		}
	}
	pfx := netip.PrefixFrom(netip.AddrFrom4(a), bits)
	if pfx.Masked() != pfx {
		return netip.Prefix{}, false // host bits set: cidrAt says so
	}
	return pfx, true
}

// cidrProblem says which part of s, an address or prefix netip rejected, is wrong:
// ": octet 300 is over 255", ": prefix length 129 is over 128 for IPv6"... or "" when
// it cannot tell.
func cidrProblem(s string) string {
	addr, length, hasLength := strings.Cut(s, "/")
	if addr == "" && hasLength {
		return `: nothing before the "/"; give an address`
	}
	if i := strings.IndexByte(addr, '%'); i >= 0 {
		return fmt.Sprintf(": the address has a zone (%s); policies take global addresses", addr[i:])
	}
	v6 := strings.Contains(addr, ":")
	if v6 {
		if _, err := netip.ParseAddr(addr); err != nil {
			reason := err.Error()
			if i := strings.Index(reason, "): "); i >= 0 {
				reason = reason[i+3:]
			}
			return fmt.Sprintf(": the IPv6 address %s is malformed (%s)", addr, reason)
		}
	} else if msg := ipv4Problem(addr); msg != "" {
		return ": " + msg
	}
	if !hasLength {
		return ""
	}
	maxBits, family := 32, "IPv4"
	if v6 {
		maxBits, family = 128, "IPv6"
	}
	switch bits, err := strconv.Atoi(length); {
	case length == "":
		return `: nothing after the "/"; give a prefix length`
	case err != nil || !isDigits(length):
		return fmt.Sprintf(": prefix length %q is not a number", Clip(length))
	case bits > maxBits:
		return fmt.Sprintf(": prefix length %d is over %d for %s", bits, maxBits, family)
	case len(length) > 1 && length[0] == '0':
		return fmt.Sprintf(": prefix length %q has a leading zero", Clip(length))
	}
	return ""
}

// ipv4Problem says what is wrong with a dotted IPv4 address, or "" when nothing is.
func ipv4Problem(a string) string {
	octets := strings.Split(a, ".")
	if octets[0] != "" && !isDigits(octets[0]) {
		return "write an IP address, not a name"
	}
	if len(octets) != 4 {
		return fmt.Sprintf("an IPv4 address has 4 octets, this has %d", len(octets))
	}
	for _, o := range octets {
		switch {
		case !isDigits(o):
			return fmt.Sprintf("octet %q is not a number", Clip(o))
		case len(o) > 3 || len(o) == 3 && o > "255":
			return fmt.Sprintf("octet %s is over 255", o)
		case len(o) > 1 && o[0] == '0':
			return fmt.Sprintf("octet %q has a leading zero", Clip(o))
		}
	}
	return ""
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// when parses a date (2026-12-01, midnight UTC) or an RFC 3339 time.
func (p *parser) when(n *node, what string) (time.Time, bool) {
	s := p.text(n, what, "give a date like 2026-12-31 (midnight UTC) or a time like 2026-12-31T18:00:00Z")
	if s == "" {
		return time.Time{}, false
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, true
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, true
	}
	p.errorf(n, "%s %q is not a date; write 2026-12-31 (midnight UTC) or 2026-12-31T18:00:00Z", what, Clip(s))
	return time.Time{}, false
}

var topKeys = []string{"version", "governed_ports", "protected_ports", "default", "reset", "ranges", "exemptions", "quarantines", "relays", "runtime"}

func (p *parser) policy(root *node) *Policy {
	pol := &Policy{File: p.file, Governed: DefaultGoverned, Protected: DefaultProtected,
		Default: model.Pass, RSTRate: DefaultRSTRate, RSTBurst: DefaultRSTBurst, Runtime: Runtime{QuarantineReset: true}}
	var versionSeen bool
	var governedNode, runtimeNode *node
	var governedAt, protectedAt map[uint16]*node
	p.fields(root, "the policy", topKeys, func(key string, k, v *node) {
		switch key {
		case "version":
			versionSeen = true
			if n, ok := p.uint(v, "version", math.MaxInt32); ok && n != Version {
				p.errorf(v, "version %d is not supported; this portcullis reads version %d", n, Version)
			}
		case "governed_ports":
			governedNode = v
			pol.Governed, governedAt = p.ports(v, "governed_ports")
		case "protected_ports":
			pol.Protected, protectedAt = p.ports(v, "protected_ports")
		case "default":
			pol.Default = p.verdict(v, []model.Verdict{model.Pass, model.Drop, model.Reset, model.Monitor})
			pol.DefaultPos = p.pos(k)
		case "reset":
			p.fields(v, "reset", []string{"rate", "burst"}, func(key string, _, v *node) {
				n, ok := p.uint(v, "reset."+key, math.MaxUint32)
				if !ok {
					return
				}
				if key == "rate" {
					pol.RSTRate = uint32(n)
				} else {
					pol.RSTBurst = uint32(n)
				}
			})
		case "ranges":
			for _, n := range p.list(v, "ranges") {
				r, ok := p.rangeEntry(n)
				// Names count also for a range with errors: its other errors are not
				// repeated as a spurious "forbidden_in names a range the policy does
				// not have", and a second range of its name is found at once.
				if r.Name != "" {
					if prev, dup := p.ranges[r.Name]; dup {
						p.errs = append(p.errs, Error{r.Pos, fmt.Sprintf("range name %q is already used at %s; names must be unique (counters are kept by name)", r.Name, prev)})
					} else {
						p.ranges[r.Name] = r.Pos
					}
				}
				if ok {
					pol.Ranges = append(pol.Ranges, r)
				}
			}
		case "exemptions":
			for _, n := range p.list(v, "exemptions") {
				if e, ok := p.exemption(n); ok {
					pol.Exemptions = append(pol.Exemptions, e)
				}
			}
		case "quarantines":
			for _, n := range p.list(v, "quarantines") {
				if q, ok := p.quarantine(n); ok {
					pol.Quarantines = append(pol.Quarantines, q)
				}
			}
		case "relays":
			for _, n := range p.list(v, "relays") {
				if r, ok := p.relay(n); ok {
					pol.Relays = append(pol.Relays, r)
				}
			}
		case "runtime":
			runtimeNode = v
			p.runtime(v, pol)
		}
	})
	p.checkRelays(pol)
	p.checkRuntime(pol, runtimeNode)
	if root.kind == mappingNode && !versionSeen {
		p.errorf(root, "missing \"version: %d\" at the top of the policy", Version)
	}
	if len(pol.Governed) == 0 && governedNode != nil && governedNode.kind == sequenceNode && len(governedNode.content) == 0 {
		p.errorf(governedNode, "governed_ports is empty: the policy would govern nothing; list at least one port (usually 25)")
	}
	for _, g := range pol.Governed {
		if slices.Contains(pol.Protected, g) {
			// At the port as written in governed_ports, else in protected_ports.
			at := governedAt[g]
			if at == nil {
				at = protectedAt[g]
			}
			if at == nil {
				at = root
			}
			p.errorf(at, "port %d is both governed and protected: a policy must never block, reset or monitor a protected port; remove it from governed_ports (or, if you really mean it, from protected_ports)", g)
		} else if g == 465 || g == 587 {
			// Unprotected on purpose, but still the subscribers' own mail submission.
			at := governedAt[g]
			if at == nil {
				at = root
			}
			p.warns = append(p.warns, Error{p.pos(at), fmt.Sprintf("port %d is mail submission (RFC 8314, RFC 6409): governing it blocks, resets or monitors your subscribers' own mail clients, which M3AAWG says to leave open; remove it from governed_ports unless that is what you mean", g)})
		}
	}
	p.checkOverlaps(pol)
	return pol
}

func (p *parser) rangeEntry(n *node) (Range, bool) {
	r := Range{Pos: p.pos(n)}
	var hasName, hasVerdict, hasCIDRs bool
	errs := len(p.errs)
	if !p.fields(n, "a range", []string{"name", "verdict", "cidrs", "cidrs_file", "description", "owner", "interfaces"}, func(key string, _, v *node) {
		switch key {
		case "name":
			r.Name, hasName = p.name(v), true
		case "verdict":
			r.Verdict, hasVerdict = p.verdict(v, []model.Verdict{model.Pass, model.Drop, model.Reset, model.Monitor}), true
		case "cidrs":
			hasCIDRs = true
			if l := p.cidrs(v, "range has no cidrs; list at least one prefix"); r.CIDRs == nil {
				r.CIDRs = l
			} else {
				r.CIDRs = append(r.CIDRs, l...)
			}
		case "cidrs_file":
			hasCIDRs = true
			if l := p.cidrsFile(v); r.CIDRs == nil {
				r.CIDRs = l // a million prefixes are not copied once more
			} else {
				r.CIDRs = append(r.CIDRs, l...)
			}
		case "description":
			r.Description = p.str(v, "description")
		case "owner":
			r.Owner = p.str(v, "owner")
		case "interfaces":
			r.Scope = p.scope(v)
		}
	}) {
		return r, false
	}
	for _, m := range []struct {
		ok  bool
		key string
	}{{hasName, "name"}, {hasVerdict, "verdict (drop, reset, pass or monitor)"}, {hasCIDRs, "cidrs (or cidrs_file)"}} {
		if !m.ok {
			p.errorf(n, "range is missing %s", m.key)
		}
	}
	return r, len(p.errs) == errs
}

// listing parses the keys exemptions and quarantines share; extra keys go to fn.
// hasExpires reports whether the key was present, ok whether n had no errors.
func (p *parser) listing(n *node, what string, extra []string, fn func(key string, v *node)) (l Listing, hasExpires, ok bool) {
	l.Pos = p.pos(n)
	keys := append([]string{"cidr", "name", "reason", "ticket", "owner", "expires", "interfaces"}, extra...)
	errs := len(p.errs)
	var hasCIDR bool
	if !p.fields(n, what, keys, func(key string, _, v *node) {
		switch key {
		case "cidr":
			hasCIDR = true
			if v.kind == sequenceNode {
				p.errorf(v, "cidr is one address or prefix, not a list: write one %s for each (a range takes cidrs:)", what)
				break
			}
			l.CIDR, _ = p.cidr(v)
		case "name":
			l.Name = p.name(v)
		case "reason":
			l.Reason = p.str(v, "reason")
		case "ticket":
			l.Ticket = p.str(v, "ticket")
		case "owner":
			l.Owner = p.str(v, "owner")
		case "expires":
			hasExpires = true
			l.Expires, _ = p.when(v, "expires")
		case "interfaces":
			l.Scope = p.scope(v)
		default:
			fn(key, v)
		}
	}) {
		return l, hasExpires, false
	}
	if !hasCIDR {
		p.errorf(n, "%s is missing cidr (the address or prefix it covers)", what)
	}
	if l.Reason == "" {
		p.errorf(n, "%s is missing reason (say why, for the next person on shift)", what)
	}
	if l.Ticket == "" && l.Owner == "" {
		p.errorf(n, "%s needs a ticket or an owner (who asked for it)", what)
	}
	if l.Name == "" && l.CIDR.Prefix.IsValid() {
		l.Name = what + " " + l.CIDR.Prefix.String()
	}
	return l, hasExpires, len(p.errs) == errs
}

func (p *parser) exemption(n *node) (Exemption, bool) {
	l, _, ok := p.listing(n, "exemption", nil, nil)
	e := Exemption{l}
	if ok && !e.Expires.IsZero() && !p.now.Before(e.Expires) {
		p.warns = append(p.warns, Error{e.Pos, fmt.Sprintf("exemption %s expired on %s and is ignored; remove it or extend it", e.CIDR.Prefix, e.Expires.Format(time.RFC3339))})
	}
	return e, ok
}

func (p *parser) quarantine(n *node) (Quarantine, bool) {
	var q Quarantine
	var hasVerdict bool
	l, hasExpires, ok := p.listing(n, "quarantine", []string{"verdict"}, func(key string, v *node) {
		hasVerdict = true
		q.Verdict = p.verdict(v, []model.Verdict{model.Drop, model.Reset})
	})
	q.Listing = l
	if !hasVerdict {
		p.errorf(n, "quarantine is missing verdict (drop or reset)")
		ok = false
	}
	if !hasExpires {
		p.errorf(n, "quarantine is missing expires: quarantines lift themselves; give a date like 2026-12-31")
		ok = false
	}
	if q.Expires.IsZero() {
		ok = false
	}
	if ok && !p.now.Before(q.Expires) {
		p.warns = append(p.warns, Error{q.Pos, fmt.Sprintf("quarantine %s expired on %s and is ignored; remove it", q.CIDR.Prefix, q.Expires.Format(time.RFC3339))})
	}
	return q, ok
}

// checkOverlaps rejects the same prefix twice anywhere, duplicate range names, and
// quarantines inside other quarantines (the data plane checks only the most specific
// quarantine, so nesting would make the outer one's expiry ambiguous).
//
// Every prefix of the policy is put in one slice of plain keys, sorted by prefix and
// then by where it comes in the policy (ranges, exemptions, quarantines, each in file
// order): the same prefix twice is then two neighbours, and the shadow check walks
// the same slice (p.occ). A map of every prefix cost more than the sort at a million.
func (p *parser) checkOverlaps(pol *Policy) {
	n := len(pol.Exemptions) + len(pol.Quarantines)
	for _, r := range pol.Ranges {
		n += len(r.CIDRs)
	}
	occ := make([]occurrence, 0, n)
	add := func(c CIDR, owner, i int) {
		if c.Prefix.IsValid() {
			occ = append(occ, occurrence{keyOf(c.Prefix), uint32(owner), uint32(i)})
		}
	}
	for o, r := range pol.Ranges {
		for i, c := range r.CIDRs {
			add(c, o, i)
		}
	}
	for i, e := range pol.Exemptions {
		add(e.CIDR, len(pol.Ranges)+i, 0)
	}
	for i, q := range pol.Quarantines {
		add(q.CIDR, len(pol.Ranges)+len(pol.Exemptions)+i, 0)
	}
	sortOccurrences(occ)
	p.occ = occ

	// Within a run of one prefix, in policy order, each occurrence clashes with the
	// first earlier one (not itself a clash) whose interfaces overlap its own. The
	// errors are added in policy order, as a walk over the policy would find them.
	type clash struct {
		at  occurrence
		msg string
	}
	var clashes []clash
	var kept []occurrence
	for i := 0; i < len(occ); {
		j := i + 1
		for j < len(occ) && occ[j].key == occ[i].key {
			j++
		}
		if j-i > 1 {
			kept = append(kept[:0], occ[i])
			for _, o := range occ[i+1 : j] {
				c, what, scope := p.occurrenceOf(pol, o)
				ok := true
				for _, k := range kept {
					pc, pwhat, pscope := p.occurrenceOf(pol, k)
					if !pscope.Overlaps(scope) {
						continue
					}
					var msg string
					if pscope == nil && scope == nil {
						msg = fmt.Sprintf("%s appears twice: here in %s and at %s in %s; the most specific prefix decides, so each prefix may appear only once", c.Prefix, what, pc.Pos, pwhat)
					} else {
						msg = fmt.Sprintf("%s appears twice on the same interfaces: here in %s (%s) and at %s in %s (%s); the same prefix may appear twice only with interfaces that do not overlap: give each its own interfaces", c.Prefix, what, scope, pc.Pos, pwhat, pscope)
					}
					clashes = append(clashes, clash{o, msg})
					ok = false
					break
				}
				if ok {
					kept = append(kept, o)
				}
			}
		}
		i = j
	}
	slices.SortFunc(clashes, func(a, b clash) int { return a.at.comparePlace(b.at) })
	for _, c := range clashes {
		cidr, _, _ := p.occurrenceOf(pol, c.at)
		p.errs = append(p.errs, Error{cidr.Pos, c.msg})
	}
	for i, a := range pol.Quarantines {
		for j, b := range pol.Quarantines {
			if i != j && a.CIDR.Prefix != b.CIDR.Prefix && b.CIDR.Prefix.Bits() < a.CIDR.Prefix.Bits() && b.CIDR.Prefix.Contains(a.CIDR.Prefix.Addr()) {
				p.errs = append(p.errs, Error{a.CIDR.Pos, fmt.Sprintf("quarantine %s lies inside quarantine %s (%s); quarantines may not nest: drop one or merge them", a.CIDR.Prefix, b.CIDR.Prefix, b.CIDR.Pos)})
			}
		}
	}
}

// occurrence is one prefix of the policy and where it is: owner numbers the ranges,
// then the exemptions, then the quarantines of the policy; i is the prefix's index
// in its range's CIDRs (0 for the others).
type occurrence struct {
	key      pkey
	owner, i uint32
}

// comparePlace orders occurrences as they come in the policy.
func (o occurrence) comparePlace(b occurrence) int {
	return cmp.Or(cmp.Compare(o.owner, b.owner), cmp.Compare(o.i, b.i))
}

// sortOccurrences sorts by prefix, then place: occ is built in policy order, and the
// sort is stable.
func sortOccurrences(occ []occurrence) {
	sortByKey(occ, func(o *occurrence) pkey { return o.key })
}

// occurrenceOf returns the prefix o stands for, as written, the entry it is in (as
// errors name it) and that entry's scope.
func (p *parser) occurrenceOf(pol *Policy, o occurrence) (CIDR, string, Scope) {
	ow := int(o.owner)
	if ow < len(pol.Ranges) {
		r := &pol.Ranges[ow]
		return r.CIDRs[o.i], "range " + strconv.Quote(r.Name), r.Scope
	}
	if ow -= len(pol.Ranges); ow < len(pol.Exemptions) {
		e := &pol.Exemptions[ow]
		return e.CIDR, "exemption " + strconv.Quote(e.Name), e.Scope
	}
	q := &pol.Quarantines[ow-len(pol.Exemptions)]
	return q.CIDR, "quarantine " + strconv.Quote(q.Name), q.Scope
}

// maxShadowers is how many shadowing entries a warning names.
const maxShadowers = 3

// checkShadowed warns about exemptions that can never decide: every address in it
// is covered by more specific prefixes of ranges and other exemptions (expired
// exemptions and quarantines, which lift, do not count). It walks the prefixes
// checkOverlaps sorted (by address, then length); the prefixes inside an exemption
// are then a contiguous run, and only its largest ones (its children in the prefix
// tree) need looking at: after each child the walk jumps past everything inside it.
// Each prefix is the child of one entry, so after the sort the check is linear (and
// a binary search per child).
func (p *parser) checkShadowed(pol *Policy) {
	live := func(e Exemption) bool { return e.Expires.IsZero() || p.now.Before(e.Expires) }
	// Entries shadow an exemption only on every interface it applies to: check each
	// distinct scope of exemptions against the entries whose scope covers it.
	byScope := map[string][]int{}
	var scopes []Scope
	for i, e := range pol.Exemptions {
		if !live(e) {
			continue
		}
		k := strings.Join(e.Scope, "\x00")
		if e.Scope == nil {
			k = "*"
		}
		if _, ok := byScope[k]; !ok {
			scopes = append(scopes, e.Scope)
		}
		byScope[k] = append(byScope[k], i)
	}
	for _, sc := range scopes {
		k := strings.Join(sc, "\x00")
		if sc == nil {
			k = "*"
		}
		p.checkShadowedIn(pol, sc, byScope[k])
	}
}

// checkShadowedIn is checkShadowed for the exemptions exs (indexes in
// pol.Exemptions), which all have scope sc.
func (p *parser) checkShadowedIn(pol *Policy, sc Scope, exs []int) {
	// Which owners (ranges, then exemptions) count on sc; quarantines never do.
	counts := make([]bool, len(pol.Ranges)+len(pol.Exemptions))
	for i, r := range pol.Ranges {
		counts[i] = r.Scope.Covers(sc)
	}
	for i, e := range pol.Exemptions {
		counts[len(pol.Ranges)+i] = (e.Expires.IsZero() || p.now.Before(e.Expires)) && e.Scope.Covers(sc)
	}
	// all: the sorted prefixes that count, as indexes in p.occ. On one scope no prefix
	// is there twice (that is an error, and this runs only on valid policies).
	all := make([]uint32, 0, len(p.occ))
	for k, o := range p.occ {
		if int(o.owner) < len(counts) && counts[o.owner] {
			all = append(all, uint32(k))
		}
	}
	key := func(i int) pkey { return p.occ[all[i]].key }
	// after returns the index of the first entry whose address is past a.
	after := func(a netip.Addr, from int) int {
		ak := addrKey(a)
		return from + sort.Search(len(all)-from, func(i int) bool { return key(from+i).compareAddr(ak) > 0 })
	}
	for _, ei := range exs {
		e := pol.Exemptions[ei]
		x := e.CIDR.Prefix
		xk := keyOf(x)
		i := sort.Search(len(all), func(i int) bool { return key(i).compare(xk) >= 0 })
		next, last := x.Addr(), LastAddr(x) // next: the first address not yet covered
		var shadowers []occurrence
		n := 0
		covered := false
		for i++; i < len(all) && x.Contains(key(i).addr()); {
			c := key(i)
			if c.addr() != next {
				break // a gap: next is decided by the exemption itself
			}
			if len(shadowers) < maxShadowers {
				shadowers = append(shadowers, p.occ[all[i]])
			}
			n++
			end := LastAddr(c.prefix())
			if end == last {
				covered = true
				break
			}
			next = end.Next()
			i = after(end, i)
		}
		if !covered {
			continue
		}
		names := make([]string, len(shadowers))
		for k, s := range shadowers {
			c, what, _ := p.occurrenceOf(pol, s)
			if int(s.owner) >= len(pol.Ranges) {
				se := pol.Exemptions[int(s.owner)-len(pol.Ranges)]
				what = "exemption"
				if se.Name != "exemption "+se.CIDR.Prefix.String() {
					what += " " + strconv.Quote(se.Name)
				}
			}
			names[k] = fmt.Sprintf("%s %s (%s)", what, c.Prefix, c.Pos)
		}
		more := ""
		if n > len(shadowers) {
			more = fmt.Sprintf(" and %d more", n-len(shadowers))
		}
		subject := "exemption " + x.String()
		if e.Name != subject {
			subject = fmt.Sprintf("exemption %q (%s)", e.Name, x)
		}
		p.warns = append(p.warns, Error{e.Pos, fmt.Sprintf("%s never decides anything: every address in it is decided by more specific entries: %s%s; remove it, or remove what shadows it", subject, strings.Join(names, ", "), more)})
	}
}

// checkNeedless warns of each exemption that changes nothing because its addresses
// pass without it: every range around it that may apply where it does passes, and so
// does the default where none of them applies. Such an exemption's address is most
// often mistyped (and the server it is for stays blocked). Exemptions already warned
// of as shadowed, and those inside another exemption, are left out; quarantines do
// not count (they lift).
func (p *parser) checkNeedless(pol *Policy) {
	warned := map[Pos]bool{}
	for _, w := range p.warns {
		warned[w.Pos] = true
	}
	// The prefix lengths the policy has, per family: only those are looked up.
	var lens [2][129]bool
	for _, o := range p.occ {
		lens[o.key.fb>>8][o.key.fb&0xff] = true
	}
	live := func(e Exemption) bool { return e.Expires.IsZero() || p.now.Before(e.Expires) }
	for ei, e := range pol.Exemptions {
		if !live(e) || warned[e.Pos] {
			continue
		}
		x := e.CIDR.Prefix
		var around []string
		defaultApplies, needless := true, true
		fam := keyOf(x).fb >> 8
		// Most specific first; a passing range that applies wherever the exemption does
		// decides there, so nothing wider counts (defaultApplies false ends the walk).
		for bits := x.Bits() - 1; bits >= 0 && needless && defaultApplies; bits-- {
			if !lens[fam][bits] {
				continue
			}
			k := keyOf(netip.PrefixFrom(x.Addr(), bits).Masked())
			i := sort.Search(len(p.occ), func(i int) bool { return p.occ[i].key.compare(k) >= 0 })
			for ; i < len(p.occ) && p.occ[i].key == k; i++ {
				o := p.occ[i]
				ow := int(o.owner)
				if ow >= len(pol.Ranges) {
					if x := ow - len(pol.Ranges); x < len(pol.Exemptions) && x != ei && live(pol.Exemptions[x]) && pol.Exemptions[x].Scope.Overlaps(e.Scope) {
						needless = false // nested exemptions: the shadow check's business
						break
					}
					continue // a quarantine (it lifts), an expired exemption
				}
				c, what, sc := p.occurrenceOf(pol, o)
				if !sc.Overlaps(e.Scope) {
					continue
				}
				if pol.Ranges[ow].Verdict != model.Pass {
					needless = false
					break
				}
				if sc.Covers(e.Scope) {
					defaultApplies = false
				}
				on := ""
				if sc != nil {
					on = " on " + sc.String()
				}
				if len(around) < maxShadowers {
					around = append(around, fmt.Sprintf("%s %s%s, %s", what, c.Prefix, on, c.Pos))
				}
			}
		}
		if !needless || defaultApplies && pol.Default != model.Pass {
			continue
		}
		if defaultApplies {
			around = append([]string{"the default"}, around...)
		}
		subject := "exemption " + x.String()
		if e.Name != subject {
			subject = fmt.Sprintf("exemption %q (%s)", e.Name, x)
		}
		p.warns = append(p.warns, Error{e.Pos, fmt.Sprintf("%s changes nothing: without it its addresses pass anyway (%s); is the address right?", subject, strings.Join(around, ", and "))})
	}
}
