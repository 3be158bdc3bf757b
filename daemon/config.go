// Package daemon is `portcullis run`: it keeps the XDP program attached to the
// subscriber-facing interfaces (the interface watch, on its own lock), survives its own
// crashes through pinned links and maps, wires the controller (package controller:
// every policy change and runtime entry, applied, proved and published) to its
// sources, and serves metrics, the HTTP API and the local control socket from the
// controller's published snapshot.
package daemon

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/fleet"
	"github.com/portcullis/portcullis/internal/suggest"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/policy"
)

// Config is the daemon's configuration file (docs/daemon.md, deploy/portcullis.yaml).
type Config struct {
	Interfaces        []string    `yaml:"interfaces"`          // subscriber-facing interfaces
	Mode              loader.Mode `yaml:"mode"`                // native, generic or auto
	Policy            string      `yaml:"policy"`              // policy file
	Listen            string      `yaml:"listen"`              // metrics HTTP address; "" = off
	ControlSocket     string      `yaml:"control_socket"`      // local control socket
	BPFFS             string      `yaml:"bpffs"`               // directory for pins
	LogFormat         string      `yaml:"log_format"`          // text or json
	AuditLog          string      `yaml:"audit_log"`           // JSON lines; "" = off
	WaitForInterfaces bool        `yaml:"wait_for_interfaces"` // missing interface: warn, attach when it appears
	SwitchMode        bool        `yaml:"switch_mode"`         // re-attach a pinned link left in the other mode (a short gap)
	Store             string      `yaml:"store"`               // runtime entries (quarantines, unblocks): a bbolt file
	API               api.Config  `yaml:"api"`                 // the HTTP API for the abuse desk and the portal; off by default
	PolicySource      string      `yaml:"policy_source"`       // file (policy:) or etcd (etcd:, a fleet)
	Etcd              EtcdConfig  `yaml:"etcd"`                // with policy_source: etcd
	// OffenderPeriod is how long a period of the offender record lasts: `top` counts the
	// last one to two periods. 0: one period since the maps were created. Otherwise
	// between MinOffenderPeriod and MaxOffenderPeriod.
	OffenderPeriod time.Duration `yaml:"offender_period"`
}

// Defaults for what a configuration leaves out.
const (
	DefaultListen        = "127.0.0.1:9725"
	DefaultControlSocket = "/run/portcullis/control.sock"
	DefaultAuditLog      = "/var/log/portcullis/audit.jsonl"
	DefaultStore         = "/var/lib/portcullis/runtime.db"
	// DefaultOffenderPeriod: `top` counts the last one to two days.
	DefaultOffenderPeriod = 24 * time.Hour
	// MinOffenderPeriod: the daemon looks once a minute whether the period is over, so
	// a shorter one would last a minute all the same.
	MinOffenderPeriod = time.Minute
	// MaxOffenderPeriod is the longest period whose two periods (what `top` counts, and
	// the time since the older one began) a time.Duration holds: 53375 days.
	MaxOffenderPeriod = math.MaxInt64 / 2 / (24 * time.Hour) * (24 * time.Hour)
)

// DefaultConfig is a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Mode:           loader.ModeAuto,
		Listen:         DefaultListen,
		ControlSocket:  DefaultControlSocket,
		BPFFS:          loader.DefaultPinDir,
		LogFormat:      "text",
		AuditLog:       DefaultAuditLog,
		Store:          DefaultStore,
		PolicySource:   PolicyFromFile,
		OffenderPeriod: DefaultOffenderPeriod,
	}
}

// LoadConfig reads and checks a configuration file. Errors name file:line:column and
// the fix.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading configuration: %w", err)
	}
	c, err := ParseConfig(path, data)
	if err != nil {
		return Config{}, err
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return Config{}, fmt.Errorf("reading configuration: %w", err)
	}
	c.resolvePaths(dir)
	return c, nil
}

// resolvePaths makes the relative paths of c relative to dir, the configuration file's
// directory (as a policy's cidrs_file is relative to the policy's): `policy:
// policy.yaml` in /etc/portcullis/portcullis.yaml is /etc/portcullis/policy.yaml,
// whatever the directory the daemon (or the CLI reading the configuration) runs in.
func (c *Config) resolvePaths(dir string) {
	for _, p := range []*string{&c.Policy, &c.ControlSocket, &c.BPFFS, &c.AuditLog, &c.Store,
		&c.API.Clients, &c.API.TLSCert, &c.API.TLSKey, &c.API.ClientCA,
		&c.Etcd.CA, &c.Etcd.Cert, &c.Etcd.Key, &c.Etcd.PasswordFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// ParseConfig parses configuration data read from file. It reports every problem
// at once, one a line, in file order: file:line:column for each that comes from a
// value or key in the file, file alone for what the file leaves out.
func ParseConfig(file string, data []byte) (Config, error) {
	c := DefaultConfig()
	r := &configReader{file: file, at: map[string]*yaml.Node{}, keyAt: map[string]*yaml.Node{}, bad: map[string]bool{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, r.syntaxError(err)
	}
	if root := docRoot(&doc); root != nil {
		var second yaml.Node
		if err := dec.Decode(&second); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, r.syntaxError(err)
		} else if n := docRoot(&second); n != nil {
			r.errorf(n, "a second YAML document starts here (the first starts at line %d); a configuration file holds one document", root.Line)
		}
		if !r.section(root, reflect.ValueOf(&c).Elem(), "") {
			return Config{}, r.errs
		}
	}
	r.check(&c)
	if len(r.errs) > 0 {
		return Config{}, r.errs.sorted()
	}
	return c, nil
}

// check checks the values read, each at its place in the file (a value that could not
// be read has had its error already).
func (r *configReader) check(c *Config) {
	if len(c.Interfaces) == 0 && !r.bad["interfaces"] {
		r.errorAt("interfaces", "interfaces is empty: list the subscriber-facing interfaces, e.g. interfaces: [eth1]")
	}
	seen := map[string]bool{}
	for i, name := range c.Interfaces {
		if seen[name] {
			r.errorf(r.at["interfaces"].Content[i], "interface %q is listed twice", policy.Clip(name))
		}
		seen[name] = true
	}
	r.oneOf("mode", string(c.Mode), string(loader.ModeNative), string(loader.ModeGeneric), string(loader.ModeAuto))
	if c.Policy == "" && c.PolicySource != PolicyFromEtcd && !r.bad["policy"] {
		r.errorAt("policy", "policy is missing: the policy file to enforce, e.g. policy: /etc/portcullis/policy.yaml (or policy_source: etcd)")
	}
	if r.oneOf("policy_source", c.PolicySource, PolicyFromFile, PolicyFromEtcd) && c.PolicySource == PolicyFromEtcd {
		r.checkEtcd(&c.Etcd)
	}
	if c.BPFFS == "" && !r.bad["bpffs"] {
		r.errorAt("bpffs", "bpffs is empty: a directory on bpffs, e.g. "+loader.DefaultPinDir)
	}
	r.oneOf("log_format", c.LogFormat, "text", "json")
	if c.Store == "" && !r.bad["store"] {
		r.errorAt("store", "store is empty: the file that keeps runtime entries, e.g. "+DefaultStore)
	}
	if c.API.Listen != "" && c.API.Clients == "" && !r.bad["api.clients"] {
		r.errorAt("api.clients", "api.listen is set but api.clients is not: the API needs the clients file (docs/api.md)")
	}
}

// checkEtcd checks the etcd section (with policy_source: etcd) and fills in the
// router's default name, the host's.
func (r *configReader) checkEtcd(e *EtcdConfig) {
	for _, p := range e.Problems() {
		r.errorAt("etcd."+p.Key, "etcd%s", p.Msg)
	}
	if err := fleet.CheckName("group", e.Group); err != nil {
		r.errorAt("etcd.group", "etcd.group: %v (the router group whose policy this router enforces, e.g. group: dsl-north)", err)
	}
	if e.Router == "" {
		host, _ := os.Hostname()
		e.Router, _, _ = strings.Cut(strings.ToLower(host), ".")
	}
	if err := fleet.CheckName("router", e.Router); err != nil {
		r.errorAt("etcd.router", "etcd.router: %v (the name this router reports under; the default is the host name)", err)
	}
	if e.LeaseTTL != 0 && e.LeaseTTL < 2*time.Second {
		r.errorAt("etcd.lease_ttl", "etcd.lease_ttl %s is too short: at least 2s (default %s)", e.LeaseTTL, fleet.DefaultTTL)
	}
}

// oneOf reports the value of key unless it is one of allowed, with a did-you-mean.
func (r *configReader) oneOf(key, value string, allowed ...string) bool {
	if slices.Contains(allowed, value) {
		return true
	}
	if r.bad[key] {
		return false
	}
	hint := ""
	if s := suggest.Closest(value, allowed); s != "" {
		hint = fmt.Sprintf("; did you mean %q?", s)
	}
	r.errorAt(key, "%s %q is not one of %s%s", key, policy.Clip(value), strings.Join(allowed, ", "), hint)
	return false
}

// configError is one problem in a configuration file; Line 0: the file as a whole
// (something it leaves out).
type configError struct {
	file      string
	line, col int
	msg       string
}

func (e configError) String() string {
	if e.line == 0 {
		return e.file + ": " + e.msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.file, e.line, e.col, e.msg)
}

// configErrors is every problem found in a configuration file.
type configErrors []configError

func (es configErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.String()
	}
	return strings.Join(lines, "\n")
}

// sorted is es in file order, what the file leaves out last.
func (es configErrors) sorted() configErrors {
	slices.SortStableFunc(es, func(a, b configError) int {
		return cmp.Or(cmp.Compare(b2i(a.line == 0), b2i(b.line == 0)), cmp.Compare(a.line, b.line), cmp.Compare(a.col, b.col))
	})
	return es
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// configReader reads a configuration's YAML nodes into a Config: the keys of each
// section are the yaml tags of its struct (so the known keys of an error are always
// those of the section it is in), and every value is checked for what its field
// takes, in words of the configuration, not of Go.
type configReader struct {
	file  string
	errs  configErrors
	at    map[string]*yaml.Node // the value of each key the file gives, by dotted path ("api.listen")
	keyAt map[string]*yaml.Node // the key itself
	bad   map[string]bool       // keys whose value could not be read (reported already)
}

func (r *configReader) errorf(n *yaml.Node, format string, args ...any) {
	r.errs = append(r.errs, configError{r.file, max(n.Line, 1), max(n.Column, 1), fmt.Sprintf(format, args...)})
}

// errorAt reports a problem with the value of key (a dotted path): at the value if the
// file gives it, else at the section it would be in, else at the file.
func (r *configReader) errorAt(key, format string, args ...any) {
	if n := r.at[key]; n != nil {
		r.errorf(n, format, args...)
		return
	}
	for k := key; strings.Contains(k, "."); {
		k = k[:strings.LastIndex(k, ".")]
		if n := r.keyAt[k]; n != nil {
			r.errorf(n, format, args...)
			return
		}
	}
	r.errs = append(r.errs, configError{file: r.file, msg: fmt.Sprintf(format, args...)})
}

// text is the value of key as the file writes it.
func (r *configReader) text(key string) string {
	if n := r.at[key]; n != nil {
		return n.Value
	}
	return ""
}

// syntaxError names the file in yaml.v3's "yaml: line N: ..." (it gives no column).
func (r *configReader) syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if after, ok := strings.CutPrefix(msg, "line "); ok {
		if line, rest, ok := strings.Cut(after, ": "); ok {
			return fmt.Errorf("%s:%s: YAML syntax: %s (check indentation and quoting)", r.file, line, rest)
		}
	}
	return fmt.Errorf("%s: YAML syntax: %s", r.file, msg)
}

// docRoot is the content of a YAML document; nil for none (an empty file, only
// comments).
func docRoot(doc *yaml.Node) *yaml.Node {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	n := doc.Content[0]
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && n.Value == "" {
		return nil
	}
	return n
}

// configKey is one key of a configuration section: its name (the field's yaml tag)
// and where its field is.
type configKey struct {
	name  string
	index []int
}

// configKeys lists the keys of the section read into a struct of type t, in the
// order of its fields; an inline struct's keys in its place.
func configKeys(t reflect.Type) []configKey {
	var keys []configKey
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if opts == "inline" {
			for _, k := range configKeys(f.Type) {
				keys = append(keys, configKey{k.name, append([]int{i}, k.index...)})
			}
			continue
		}
		keys = append(keys, configKey{cmp.Or(name, strings.ToLower(f.Name)), []int{i}})
	}
	return keys
}

// what names the section at path in a message.
func what(path string) string {
	if path == "" {
		return "the configuration"
	}
	return path
}

// section reads mapping n into the struct v, the section at path ("" for the top);
// false if n is no mapping.
func (r *configReader) section(n *yaml.Node, v reflect.Value, path string) bool {
	keys := configKeys(v.Type())
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	if n.Kind != yaml.MappingNode {
		r.errorf(n, "%s must be a mapping of keys (%s), not %s", what(path), strings.Join(names, ", "), kindName(n))
		return false
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], resolve(n.Content[i+1])
		j := slices.Index(names, k.Value)
		if j < 0 || k.Kind != yaml.ScalarNode {
			in := ""
			if path != "" {
				in = " in " + path
			}
			hint := ""
			if s := suggest.Closest(k.Value, names); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			r.errorf(k, "unknown key %q%s%s (known keys: %s)", policy.Clip(k.Value), in, hint, strings.Join(names, ", "))
			continue
		}
		if prev := seen[k.Value]; prev != nil {
			r.errorf(k, "key %q repeated in %s (first at line %d); keep one", policy.Clip(k.Value), what(path), prev.Line)
			continue
		}
		seen[k.Value] = k
		key := k.Value
		if path != "" {
			key = path + "." + key
		}
		r.at[key], r.keyAt[key] = val, k
		if !r.value(val, v.FieldByIndex(keys[j].index), key) {
			r.bad[key] = true
		}
	}
	return true
}

// Examples for the messages about a value of the wrong kind; a key without one gets
// its kind's.
var configExamples = map[string]string{
	"interfaces":     "a list of interface names, e.g. [eth1, eth2]",
	"etcd.endpoints": "a list of etcd members, e.g. [https://192.0.2.11:2379]",
}

var durationType = reflect.TypeFor[time.Duration]()

// value reads n into v, the field of key; false (with the error reported) if n is not
// what the field takes.
func (r *configReader) value(n *yaml.Node, v reflect.Value, key string) bool {
	null := n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
	switch {
	case v.Type() == durationType:
		d, ok := r.duration(n, key)
		v.SetInt(int64(d))
		return ok
	case v.Kind() == reflect.Struct:
		if null {
			return true // an empty section: the defaults
		}
		return r.section(n, v, key) // its keys carry their own errors
	case v.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			r.errorf(n, "%s must be %s, not %s", key, cmp.Or(configExamples[key], "text"), kindName(n))
			return false
		}
		if null {
			v.SetString("")
		} else {
			v.SetString(n.Value)
		}
		return true
	case v.Kind() == reflect.Bool:
		var b bool // yaml.v3's reading: true, false, and YAML 1.1's yes, no, on, off
		if n.Kind != yaml.ScalarNode || null || n.Decode(&b) != nil {
			if n.Kind == yaml.ScalarNode && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
				r.errorf(n, "%s must be true or false, not the quoted text %q (write it without quotes)", key, policy.Clip(n.Value))
			} else {
				r.errorf(n, "%s must be true or false, not %s", key, kindName(n))
			}
			return false
		}
		v.SetBool(b)
		return true
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		if null {
			v.SetZero()
			return true
		}
		if n.Kind != yaml.SequenceNode {
			r.errorf(n, "%s must be %s, not %s", key, cmp.Or(configExamples[key], "a list, e.g. [a, b]"), kindName(n))
			return false
		}
		list := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		ok := true
		for i, e := range n.Content {
			e = resolve(e)
			if e.Kind != yaml.ScalarNode || e.ShortTag() == "!!null" {
				r.errorf(e, "%s must be %s; this entry is %s", key, cmp.Or(configExamples[key], "a list of names"), kindName(e))
				ok = false
				continue
			}
			list.Index(i).SetString(e.Value)
		}
		v.Set(list)
		return ok
	}
	// A field of a kind this reader does not know: TestConfigKeys reads every key.
	panic(fmt.Sprintf("daemon: configuration key %s is a %s, which the reader does not take", key, v.Type()))
}

// durationRanges are the bounds of the duration keys that have them: a value outside,
// other than 0, is an error that gives the range and what 0 means.
var durationRanges = map[string]struct {
	min, max time.Duration
	zero     string
}{
	"offender_period": {MinOffenderPeriod, MaxOffenderPeriod, "one period since the maps were created"},
}

// maxDuration is the longest duration in whole days.
const maxDuration = math.MaxInt64 / (24 * time.Hour) * (24 * time.Hour)

// duration reads a duration as the policy writes one: Go's (90m, 24h, 1h30m) or whole
// days (30d), or 0; within the key's range if it has one (durationRanges). Other keys
// take negative ones, for their own checks to refuse.
func (r *configReader) duration(n *yaml.Node, key string) (time.Duration, bool) {
	const like = "a duration like 24h, 90m or 30d"
	switch {
	case n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null":
		r.errorf(n, "%s must be %s, not %s", key, like, kindName(n))
		return 0, false
	case n.ShortTag() == "!!int" && n.Value == "0":
		return 0, true
	case n.ShortTag() == "!!int" || n.ShortTag() == "!!float":
		r.errorf(n, "%s must be %s, not %s (a number needs a unit)", key, like, n.Value)
		return 0, false
	}
	s := n.Value
	abs, neg := strings.CutPrefix(s, "-")
	var d time.Duration
	if z, err := time.ParseDuration(s); err == nil && z <= 0 {
		d = z // 0s, -1h
	} else if days, ok := strings.CutSuffix(abs, "d"); ok && days != "" && strings.Trim(days, "0123456789") == "" {
		if d, err = policy.ParseDuration(abs); err != nil && strings.Trim(days, "0") != "" {
			d = maxDuration + 1 // too long for a time.Duration
		}
		if neg {
			d = -d
		}
	} else if d, err = policy.ParseDuration(s); err != nil {
		r.errorf(n, "%s must be %s, not %q", key, like, policy.Clip(s))
		return 0, false
	}
	rng, has := durationRanges[key]
	switch {
	case has && d != 0 && (d < rng.min || d > rng.max):
		r.errorf(n, "%s %s is out of range: between %s and %s (or 0: %s)", key, s, shortDuration(rng.min), shortDuration(rng.max), rng.zero)
		return 0, false
	case d > maxDuration || d < -maxDuration:
		r.errorf(n, "%s %s is too long: at most %s", key, s, policy.FormatDuration(maxDuration))
		return 0, false
	}
	return d, true
}

// shortDuration writes d as the configuration would: 1m, 24h, 30d (not 1m0s).
func shortDuration(d time.Duration) string {
	s := policy.FormatDuration(d)
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// kindName says what n is, for a message.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", policy.Clip(n.Value))
	}
	return "nothing"
}
