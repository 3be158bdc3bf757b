package daemon

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Bad configurations, each with every error it gets, exactly: file:line:column for
// what comes from the file, the known keys of the section the typo is in, a
// did-you-mean, and in the configuration's words, not Go's.
func TestParseConfigErrors(t *testing.T) {
	const base = "interfaces: [eth1]\npolicy: p\n"
	for _, tc := range []struct{ name, src, want string }{
		{"typo at the top", "interfaces: [eth1]\nmdoe: native\npolicy: p\n",
			`bad.yaml:2:1: unknown key "mdoe"; did you mean "mode"? (known keys: interfaces, mode, policy, listen, control_socket, bpffs, log_format, audit_log, wait_for_interfaces, switch_mode, store, api, policy_source, etcd, offender_period)`},
		{"typo in api", base + "api:\n  lisen: 127.0.0.1:9726\n",
			`bad.yaml:4:3: unknown key "lisen" in api; did you mean "listen"? (known keys: listen, clients, tls_cert, tls_key, client_ca)`},
		{"typo in etcd", base + "etcd:\n  endpont: [https://192.0.2.11:2379]\n",
			`bad.yaml:4:3: unknown key "endpont" in etcd; did you mean "endpoints"? (known keys: endpoints, ca, cert, key, user, password_file, prefix, dial_timeout, group, router, lease_ttl)`},
		{"unknown, no suggestion", base + "colour: blue\n",
			`bad.yaml:3:1: unknown key "colour" (known keys: interfaces, mode, policy, listen, control_socket, bpffs, log_format, audit_log, wait_for_interfaces, switch_mode, store, api, policy_source, etcd, offender_period)`},
		{"interfaces not a list", "interfaces: rvu2\npolicy: p\n",
			`bad.yaml:1:13: interfaces must be a list of interface names, e.g. [eth1, eth2], not "rvu2"`},
		{"interface not a name", "interfaces: [eth1, {a: b}]\npolicy: p\n",
			`bad.yaml:1:20: interfaces must be a list of interface names, e.g. [eth1, eth2]; this entry is a mapping`},
		{"mode", "interfaces: [eth1]\nmode: fast\npolicy: p\n",
			`bad.yaml:2:7: mode "fast" is not one of native, generic, auto`},
		{"mode, near", "interfaces: [eth1]\nmode: nativ\npolicy: p\n",
			`bad.yaml:2:7: mode "nativ" is not one of native, generic, auto; did you mean "native"?`},
		{"log_format", base + "log_format: jsno\n",
			`bad.yaml:3:13: log_format "jsno" is not one of text, json; did you mean "json"?`},
		{"policy_source", "interfaces: [eth1]\npolicy_source: etc\n",
			`bad.yaml:2:16: policy_source "etc" is not one of file, etcd; did you mean "etcd"?` + "\n" +
				`bad.yaml: policy is missing: the policy file to enforce, e.g. policy: /etc/portcullis/policy.yaml (or policy_source: etcd)`},
		{"interface twice", "interfaces:\n  - eth1\n  - eth2\n  - eth1\npolicy: p\n",
			`bad.yaml:4:5: interface "eth1" is listed twice`},
		{"bool", base + "wait_for_interfaces: sometimes\n",
			`bad.yaml:3:22: wait_for_interfaces must be true or false, not "sometimes"`},
		{"quoted bool", base + "wait_for_interfaces: \"true\"\n",
			`bad.yaml:3:22: wait_for_interfaces must be true or false, not the quoted text "true" (write it without quotes)`},
		{"text", base + "listen: [a, b]\n",
			`bad.yaml:3:9: listen must be text, not a list`},
		{"section not a mapping", base + "api: on\n",
			`bad.yaml:3:6: api must be a mapping of keys (listen, clients, tls_cert, tls_key, client_ca), not "on"`},
		{"top not a mapping", "- eth1\n",
			`bad.yaml:1:1: the configuration must be a mapping of keys (interfaces, mode, policy, listen, control_socket, bpffs, log_format, audit_log, wait_for_interfaces, switch_mode, store, api, policy_source, etcd, offender_period), not a list`},
		{"repeated key", base + "mode: native\nmode: generic\n",
			`bad.yaml:4:1: key "mode" repeated in the configuration (first at line 3); keep one`},
		{"empty values", base + "bpffs: \"\"\nstore:\n",
			"bad.yaml:3:8: bpffs is empty: a directory on bpffs, e.g. /sys/fs/bpf/portcullis\n" +
				"bad.yaml:4:7: store is empty: the file that keeps runtime entries, e.g. /var/lib/portcullis/runtime.db"},
		{"api without clients", base + "api:\n  listen: 127.0.0.1:9726\n",
			`bad.yaml:3:1: api.listen is set but api.clients is not: the API needs the clients file (docs/api.md)`},
		{"etcd values", "interfaces: [eth1]\npolicy_source: etcd\netcd:\n  endpoints: [192.0.2.11:2379]\n  group: DSL/North\n  lease_ttl: 1s\n",
			`bad.yaml:4:14: etcd.endpoints: "192.0.2.11:2379" has no scheme: write https://HOST:2379 (or http:// in a lab)` + "\n" +
				`bad.yaml:5:10: etcd.group: invalid name: the group name "DSL/North" has 'D' at position 1: use a-z, 0-9, '.', '_', '-', starting with a letter or digit (the router group whose policy this router enforces, e.g. group: dsl-north)` + "\n" +
				`bad.yaml:6:14: etcd.lease_ttl 1s is too short: at least 2s (default 10s)`},
		{"etcd section missing", "interfaces: [eth1]\npolicy_source: etcd\n",
			"bad.yaml: etcd.endpoints is empty: list the etcd members, e.g. endpoints: [https://192.0.2.11:2379]\n" +
				`bad.yaml: etcd.group: invalid name: the group name is empty (the router group whose policy this router enforces, e.g. group: dsl-north)`},
		{"missing", "mode: native\n",
			"bad.yaml: interfaces is empty: list the subscriber-facing interfaces, e.g. interfaces: [eth1]\n" +
				"bad.yaml: policy is missing: the policy file to enforce, e.g. policy: /etc/portcullis/policy.yaml (or policy_source: etcd)"},
		{"every error at once", "interfaces: eth1\nmdoe: native\npolicy: p\nlog_format: xml\napi:\n  clinets: c\n",
			`bad.yaml:1:13: interfaces must be a list of interface names, e.g. [eth1, eth2], not "eth1"` + "\n" +
				`bad.yaml:2:1: unknown key "mdoe"; did you mean "mode"? (known keys: interfaces, mode, policy, listen, control_socket, bpffs, log_format, audit_log, wait_for_interfaces, switch_mode, store, api, policy_source, etcd, offender_period)` + "\n" +
				`bad.yaml:4:13: log_format "xml" is not one of text, json` + "\n" +
				`bad.yaml:6:3: unknown key "clinets" in api; did you mean "clients"? (known keys: listen, clients, tls_cert, tls_key, client_ca)`},
		{"syntax", "interfaces: [eth1\npolicy: p\n",
			`bad.yaml:1: YAML syntax: did not find expected ',' or ']' (check indentation and quoting)`},
		{"second document", base + "---\nmode: native\n",
			`bad.yaml:4:1: a second YAML document starts here (the first starts at line 1); a configuration file holds one document`},
		{"duration, not one", base + "offender_period: a day\n",
			`bad.yaml:3:18: offender_period must be a duration like 24h, 90m or 30d, not "a day"`},
		{"duration, no unit", base + "offender_period: 3600\n",
			`bad.yaml:3:18: offender_period must be a duration like 24h, 90m or 30d, not 3600 (a number needs a unit)`},
		{"duration, too long", "interfaces: [eth1]\npolicy_source: etcd\netcd: {endpoints: [https://e:2379], group: g, lease_ttl: 200000d}\n",
			`bad.yaml:3:58: etcd.lease_ttl 200000d is too long: at most 106751d`},
		{"duration, empty", base + "offender_period:\n",
			`bad.yaml:3:17: offender_period must be a duration like 24h, 90m or 30d, not empty`},
		{"etcd duration, negative", "interfaces: [eth1]\npolicy_source: etcd\netcd: {endpoints: [https://e:2379], group: g, dial_timeout: -1s}\n",
			`bad.yaml:3:61: etcd.dial_timeout -1s is negative: give a timeout such as 5s (0: 5s)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("bad.yaml", []byte(tc.src))
			if err == nil {
				t.Fatalf("%q: no error, want\n%s", tc.src, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("%q:\n got %s\nwant %s", tc.src, err, tc.want)
			}
		})
	}
}

// offender_period takes the policy's durations, whole days included, and refuses a
// period out of its range (0 is the documented single period).
func TestParseConfigOffenderPeriod(t *testing.T) {
	const base = "interfaces: [eth1]\npolicy: p\n"
	for _, tc := range []struct {
		val  string
		want time.Duration
	}{
		{"1d", 24 * time.Hour},
		{"30d", 30 * 24 * time.Hour},
		{"1h", time.Hour},
		{"1h30m", 90 * time.Minute},
		{"1m", time.Minute},
		{"53375d", MaxOffenderPeriod},
		{"0", 0},
		{"0s", 0},
		{"0d", 0},
	} {
		c, err := ParseConfig("c.yaml", []byte(base+"offender_period: "+tc.val+"\n"))
		if err != nil || c.OffenderPeriod != tc.want {
			t.Errorf("offender_period: %s: %v, %v; want %v", tc.val, c.OffenderPeriod, err, tc.want)
		}
	}
	if c, err := ParseConfig("c.yaml", []byte(base)); err != nil || c.OffenderPeriod != DefaultOffenderPeriod {
		t.Errorf("no offender_period: %v, %v; want the default %v", c.OffenderPeriod, err, DefaultOffenderPeriod)
	}
	const rng = "is out of range: between 1m and 53375d (or 0: one period since the maps were created)"
	for _, val := range []string{"-1h", "-1d", "-1s", "59s", "53376d", "1000000d"} {
		_, err := ParseConfig("c.yaml", []byte(base+"offender_period: "+val+"\n"))
		if want := "c.yaml:3:18: offender_period " + val + " " + rng; err == nil || err.Error() != want {
			t.Errorf("offender_period: %s: %v, want %s", val, err, want)
		}
	}
	if MaxOffenderPeriod > 1<<63/2 || MaxOffenderPeriod%(24*time.Hour) != 0 || 2*MaxOffenderPeriod < 0 {
		t.Errorf("MaxOffenderPeriod %v: two periods must fit in a time.Duration", MaxOffenderPeriod)
	}
}

// The reader knows every key of the configuration from the structs' yaml tags: each
// field has one, a file giving every key is read, and docs/daemon.md's table names
// every key.
func TestConfigKeys(t *testing.T) {
	doc, err := os.ReadFile("../docs/daemon.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "## Configuration")
	table, _, _ = strings.Cut(table, "\n\n## ")
	var yaml strings.Builder
	var walk func(tp reflect.Type, indent, path string)
	walk = func(tp reflect.Type, indent, path string) {
		for i := range tp.NumField() {
			f := tp.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if opts == "inline" {
				walk(f.Type, indent, path)
				continue
			}
			if name == "" {
				t.Errorf("%s%s has no yaml tag", path, f.Name)
				continue
			}
			if !regexp.MustCompile("`(" + regexp.QuoteMeta(path) + ")?" + regexp.QuoteMeta(name) + "[`.]").MatchString(table) {
				t.Errorf("docs/daemon.md's configuration table does not name %s%s", path, name)
			}
			switch {
			case f.Type == durationType:
				yaml.WriteString(indent + name + ": 10s\n")
			case f.Type.Kind() == reflect.Struct:
				yaml.WriteString(indent + name + ":\n")
				walk(f.Type, indent+"  ", name+".")
			case f.Type.Kind() == reflect.Bool:
				yaml.WriteString(indent + name + ": true\n")
			case f.Type.Kind() == reflect.Slice:
				yaml.WriteString(indent + name + ": [http://a]\n")
			default:
				yaml.WriteString(indent + name + ": x\n")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", "")
	// Every key read (none unknown, none of a kind the reader does not take); the
	// values are nonsense, so only their checks may complain.
	_, err = ParseConfig("all.yaml", []byte(yaml.String()))
	if err == nil {
		t.Fatalf("nonsense values accepted:\n%s", yaml.String())
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.Contains(line, "unknown key") || strings.Contains(line, " must be ") {
			t.Errorf("%s\n(reading:\n%s)", line, yaml.String())
		}
	}
}

// Relative paths in the configuration file are relative to its directory, as a
// policy's cidrs_file is to the policy's: not to the directory the daemon runs in
// (under systemd, /).
func TestLoadConfigRelativePaths(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "portcullis.yaml")
	if err := os.WriteFile(cfg, []byte("interfaces: [eth1]\npolicy: policy.yaml\nstore: state/runtime.db\naudit_log: /var/log/a.jsonl\napi:\n  listen: 127.0.0.1:9726\n  clients: clients.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir("/")
	c, err := LoadConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		c.Policy: filepath.Join(dir, "policy.yaml"), c.Store: filepath.Join(dir, "state/runtime.db"),
		c.AuditLog: "/var/log/a.jsonl", c.API.Clients: filepath.Join(dir, "clients.yaml"), c.ControlSocket: DefaultControlSocket,
	} {
		if got != want {
			t.Errorf("%s, want %s", got, want)
		}
	}
}
