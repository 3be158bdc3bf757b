package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/model"
)

var testNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

const goodPolicy = `version: 1
ranges:
  - name: dyn
    verdict: reset
    cidrs: [100.64.0.0/10, 2001:db8:1::/48]
  - name: biz
    verdict: pass
    cidrs: [198.51.100.0/24]
exemptions:
  - cidr: 100.64.1.25
    reason: mail server
    ticket: T-1
quarantines:
  - cidr: 198.51.100.66/32
    verdict: drop
    reason: spam
    owner: abuse
    expires: 2027-01-01
`

func TestParseGood(t *testing.T) {
	p, err := Parse("p.yaml", []byte(goodPolicy), testNow)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Compile(p, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Tables.Ranges) != 4 || len(c.Tables.Quarantines) != 1 || c.Tables.Governed[0] != 25 {
		t.Fatalf("tables %+v", c.Tables)
	}
	for addr, want := range map[string]model.Verdict{"100.64.9.9": model.Reset, "100.64.1.25": model.Pass, "198.51.100.66": model.Drop, "198.51.100.1": model.Pass, "2001:db8:1::9": model.Reset, "192.0.2.1": model.Pass} {
		if got := c.Tables.LookupSource(addr_(addr), testNow).Verdict; got != want {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
}

// Order in the file never matters, nor does spelling: the hash is canonical.
func TestHashCanonical(t *testing.T) {
	reordered := `# comment
quarantines:
  - {cidr: 198.51.100.66/32, verdict: drop, reason: spam, owner: abuse, expires: "2027-01-01T00:00:00Z"}
exemptions:
  - {cidr: 100.64.1.25/32, reason: mail server, ticket: T-1}
ranges:
  - {name: biz, verdict: pass, cidrs: ["::ffff:198.51.100.0/120"]}
  - {name: dyn, verdict: reset, cidrs: ["2001:db8:1::/48", 100.64.0.0/10]}
version: 1
`
	h := func(src string) string {
		p, err := Parse("p.yaml", []byte(src), testNow)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Compile(p, testNow)
		if err != nil {
			t.Fatal(err)
		}
		return c.Hash
	}
	if a, b := h(goodPolicy), h(reordered); a != b {
		t.Fatalf("hash %s != %s", a, b)
	}
	if h(goodPolicy) == h(strings.Replace(goodPolicy, "verdict: reset", "verdict: drop", 1)) {
		t.Fatal("different policies hash the same")
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // "line:col: substring"
	}{
		{"unknown key", "version: 1\nrangse: []\n", []string{`2:1: unknown key "rangse" in the policy; did you mean "ranges"?`}},
		{"missing version", "ranges: []\n", []string{`1:1: missing "version: 1"`}},
		{"bad version", "version: 2\n", []string{"1:10: version 2 is not supported"}},
		{"wrong type", "version: 1\ngoverned_ports: 25\n", []string{`2:17: governed_ports must be a list, not "25" (write it in brackets: [25])`}},
		{"cidrs not a list", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: 192.0.2.0/25, 192.0.2.128/25\n", []string{`5:12: cidrs must be a list, not "192.0.2.0/25, 192.0.2.128/25" (write it in brackets: [192.0.2.0/25, 192.0.2.128/25])`}},
		{"name of a range with errors", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/33]}\n  - {name: a, verdict: drop, cidrs: [198.51.100.0/24]}\nruntime:\n  unblock:\n    forbidden_in: [a, b]\n",
			[]string{`3:38: "192.0.2.0/33" is not a CIDR prefix`, `4:5: range name "a" is already used at p.yaml:3:5`, `7:23: runtime: forbidden_in names range "b", which the policy does not have`}},
		{"verdict typo", "version: 1\ndefault: Pass\nranges:\n  - {name: a, verdict: rest, cidrs: [192.0.2.0/24]}\n", []string{`2:10: verdict "Pass" is not one of pass, drop, reset, monitor; did you mean "pass"?`, `4:24: verdict "rest" is not one of pass, drop, reset, monitor; did you mean "reset"?`}},
		{"mapped too wide", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [\"::ffff:100.64.0.0/90\"]}\n", []string{`3:38: ::ffff:100.64.0.0/90 is wider than the IPv4-mapped space ::ffff:0:0/96; write the IPv4 prefix instead`}},
		{"space inside", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [100.64.0.0 /12, \"100.80.0.0/ 16\"]}\n", []string{`3:38: "100.64.0.0 /12" has a space inside; write 100.64.0.0/12`, `3:54: "100.80.0.0/ 16" has a space inside; write 100.80.0.0/16`}},
		{"exemption cidr list", "version: 1\nexemptions:\n  - {cidr: [192.0.2.1, 192.0.2.2], reason: x, owner: y}\n", []string{`3:12: cidr is one address or prefix, not a list: write one exemption for each (a range takes cidrs:)`}},
		{"ranges without dashes", "version: 1\nranges:\n  name: a\n  verdict: drop\n", []string{`3:3: ranges must be a list, not a mapping (start each entry of ranges with "- ")`}},
		{"bad port", "version: 1\ngoverned_ports: [25, 70000]\n", []string{"2:22: a port in governed_ports must be a port number 1-65535, not \"70000\""}},
		{"port 0", "version: 1\nprotected_ports: [0]\n", []string{"2:19: a port in protected_ports must be a port number 1-65535, not \"0\""}},
		{"port not a number", "version: 1\ngoverned_ports: [smtp]\n", []string{`2:18: a port in governed_ports must be a port number 1-65535, not "smtp"`}},
		{"quoted port", "version: 1\ngoverned_ports: [\"25\"]\n", []string{`2:18: a port in governed_ports must be a port number 1-65535, not the quoted text "25" (write the number without quotes)`}},
		{"no value", "version: 1\nranges:\n", []string{`2:8: ranges must be a list, not nothing (the key has no value)`}},
		{"bad verdict", "version: 1\nranges:\n  - name: a\n    verdict: block\n    cidrs: [192.0.2.0/24]\n", []string{`4:14: verdict "block" is not one of pass, drop, reset, monitor`}},
		{"verdict typo", "version: 1\nranges:\n  - name: a\n    verdict: rest\n    cidrs: [192.0.2.0/24]\n", []string{`4:14: verdict "rest" is not one of pass, drop, reset, monitor; did you mean "reset"?`}},
		{"bad cidr", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: [192.0.2.0/33]\n", []string{`5:13: "192.0.2.0/33" is not a CIDR prefix: prefix length 33 is over 32 for IPv4`}},
		{"host bits", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: [100.64.0.1/10]\n", []string{"5:13: 100.64.0.1/10 has host bits set; did you mean 100.64.0.0/10?"}},
		{"duplicate prefix", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: [192.0.2.0/24]\n  - name: b\n    verdict: pass\n    cidrs: [192.0.2.0/24]\n", []string{`8:13: 192.0.2.0/24 appears twice: here in range "b" and at p.yaml:5:13 in range "a"`}},
		{"duplicate via mapped", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: [192.0.2.0/24, \"::ffff:192.0.2.0/120\"]\n", []string{"5:27: 192.0.2.0/24 appears twice"}},
		{"governed protected", "version: 1\ngoverned_ports: [25, 587]\n", []string{"2:22: port 587 is both governed and protected"}},
		{"governed protected block", "version: 1\ngoverned_ports:\n  - 25\n  - 587\n", []string{"4:5: port 587 is both governed and protected"}},
		{"protected governed block", "version: 1\nprotected_ports:\n  - 465\n  - 25\n", []string{"4:5: port 25 is both governed and protected"}},
		{"bad port block", "version: 1\ngoverned_ports:\n  - 25\n  - 70000\n", []string{"4:5: a port in governed_ports must be a port number 1-65535, not \"70000\""}},
		{"bad cidr block", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs:\n      - 192.0.2.0/24\n      - 192.0.2.0/33\n", []string{"7:9: "}},
		{"bad date", "version: 1\nquarantines:\n  - cidr: 192.0.2.1\n    verdict: drop\n    reason: x\n    owner: y\n    expires: tomorrow\n", []string{`7:14: expires "tomorrow" is not a date`}},
		{"quarantine no expiry", "version: 1\nquarantines:\n  - cidr: 192.0.2.1\n    verdict: drop\n    reason: x\n    owner: y\n", []string{"3:5: quarantine is missing expires"}},
		{"quarantine pass", "version: 1\nquarantines:\n  - cidr: 192.0.2.1\n    verdict: pass\n    reason: x\n    owner: y\n    expires: 2027-01-01\n", []string{`4:14: verdict "pass" is not one of drop, reset`}},
		{"exemption no reason", "version: 1\nexemptions:\n  - cidr: 192.0.2.1\n", []string{"3:5: exemption is missing reason", "3:5: exemption needs a ticket or an owner"}},
		{"range missing keys", "version: 1\nranges:\n  - name: a\n", []string{"3:5: range is missing verdict", "3:5: range is missing cidrs"}},
		{"duplicate name", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/25]}\n  - {name: a, verdict: drop, cidrs: [192.0.2.128/25]}\n", []string{`4:5: range name "a" is already used at p.yaml:3:5`}},
		{"nested quarantine", "version: 1\nquarantines:\n  - {cidr: 192.0.2.0/24, verdict: drop, reason: x, owner: y, expires: 2027-01-01}\n  - {cidr: 192.0.2.1, verdict: drop, reason: x, owner: y, expires: 2027-01-01}\n", []string{"4:12: quarantine 192.0.2.1/32 lies inside quarantine 192.0.2.0/24"}},
		{"long name", "version: 1\nranges:\n  - {name: " + strings.Repeat("n", 101) + ", verdict: drop, cidrs: [192.0.2.0/24]}\n", []string{"3:12: name is 101 bytes long; keep it to 100"}},
		{"yaml syntax", "version: 1\nranges: [\n", []string{"YAML syntax"}},
		{"repeated key", "version: 1\nversion: 1\n", []string{`2:1: key "version" repeated`}},
		{"all at once", "version: 1\ndefault: maybe\nreset: {rate: -1}\n", []string{`2:10: verdict "maybe"`, "3:15: reset.rate must be between 0 and 4294967295, not -1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(c.src), testNow)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("err %v, want Errors", err)
			}
			if len(es) != len(c.want) {
				t.Errorf("%d errors, want %d:\n%v", len(es), len(c.want), err)
			}
			for i, w := range c.want {
				if i >= len(es) {
					break
				}
				if !strings.Contains(es[i].Error(), w) || !strings.HasPrefix(es[i].Error(), "p.yaml:") {
					t.Errorf("error %d: %q, want it to contain %q", i, es[i].Error(), w)
				}
			}
		})
	}
}

func TestExpiredAreWarnings(t *testing.T) {
	src := "version: 1\nexemptions:\n  - {cidr: 192.0.2.1, reason: x, owner: y, expires: 2026-01-01}\nquarantines:\n  - {cidr: 192.0.2.2, verdict: drop, reason: x, owner: y, expires: 2026-01-01}\n"
	p, err := Parse("p.yaml", []byte(src), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 2 || !strings.Contains(p.Warnings[0].Error(), "p.yaml:3:5: exemption 192.0.2.1/32 expired") {
		t.Fatalf("warnings %v", p.Warnings)
	}
	c, _ := Compile(p, testNow)
	if len(c.Tables.Ranges) != 0 || len(c.Tables.Quarantines) != 0 {
		t.Fatalf("expired entries compiled: %+v", c.Tables)
	}
}

// FuzzParse: no input panics the parser, and every rejection carries a position.
func FuzzParse(f *testing.F) {
	f.Add([]byte(goodPolicy))
	f.Add([]byte("version: 1\nranges: [{name: a, verdict: drop, cidrs: [1.2.3.4/33]}]\n"))
	f.Add([]byte("{"))
	f.Add([]byte("version: 1\n---\n---\nranges: [{name: a, verdict: drop, cidrs: [::/0, 0.0.0.0/0]}]\n...\n"))
	f.Add([]byte("version: 1\nranges:\n  - name: a\n\tverdict: drop\n    cidrs:\n      -\n     - 192.0.2.0/24\n"))
	f.Add([]byte("%YAML 1.2\n---\nexemptions:\n  - &e {cidr: 192.0.2.0/24, reason: x, owner: y}\n  - *e\n"))
	f.Add([]byte("version: 1\nexemptions:\n  - {cidr: \"\", reason: x, owner: y}\nquarantines:\n  - {cidr: '', verdict: drop, reason: x, owner: y, expires: \"\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("f.yaml", data, testNow)
		if err == nil {
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("rejection without positions: %v", err)
		}
		for _, e := range es {
			if e.Pos.File != "f.yaml" || e.Pos.Line < 1 || e.Pos.Col < 1 {
				t.Fatalf("error without a position: %q", e.Error())
			}
		}
	})
}

// YAML syntax errors point at the offending line and column, not at the start of the
// enclosing block.
func TestParseSyntaxPositions(t *testing.T) {
	cases := []struct {
		name, src string
		want      string // "line:col: substring"
	}{
		{"tab indentation", "version: 1\nranges:\n  - name: a\n\tverdict: drop\n", "4:1: YAML syntax: a tab"},
		{"tab in reset", "version: 1\nreset:\n  rate: 1\n\tburst: 2\n", "4:1: YAML syntax: a tab"},
		{"unclosed [", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: [192.0.2.0/24\n", "5:12: YAML syntax:"},
		{"unclosed [ then more", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: [192.0.2.0/24\n  - name: b\n", "6:3: YAML syntax:"},
		{"mis-indented item", "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs:\n      - 192.0.2.0/24\n     - 198.51.100.0/24\n", "7:6: YAML syntax:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(c.src), testNow)
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 {
				t.Fatalf("err %v, want one error", err)
			}
			if !strings.HasPrefix(es[0].Error(), "p.yaml:"+c.want) {
				t.Fatalf("error %q, want it to start with %q", es[0].Error(), "p.yaml:"+c.want)
			}
		})
	}
}

// A plain scalar may start with "::" inside a flow list: [0.0.0.0/0, ::/0] is valid YAML.
func TestParseIPv6InFlowList(t *testing.T) {
	src := "version: 1\nranges:\n  - name: all\n    verdict: drop\n    cidrs: [0.0.0.0/0, ::/0, ::1]\n"
	p, err := Parse("p.yaml", []byte(src), testNow)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range p.Ranges[0].CIDRs {
		got = append(got, c.Prefix.String()+"@"+c.Pos.String())
	}
	want := []string{"0.0.0.0/0@p.yaml:5:13", "::/0@p.yaml:5:24", "::1/128@p.yaml:5:30"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("cidrs %v, want %v", got, want)
	}
}

// IPv6 prefixes in a flow list inside a flow mapping (the compact style of the tests and
// of many operators) are read as prefixes: goccy alone reads them as mappings. Where
// neither library can read a "::" prefix there (unquoted inside { }), the error says to
// quote it.
func TestParseIPv6InFlowMapping(t *testing.T) {
	src := "version: 1\nranges:\n  - {name: pool, verdict: drop, cidrs: [100.64.0.0/12, 2001:db8:1000::/36, \"::/0\"]}\n" +
		"quarantines:\n  - {cidr: 2001:db8:1000:1::10/128, name: q6, verdict: reset, reason: r, ticket: T, expires: 2027-01-01T00:00:00Z}\n"
	p, err := Parse("p.yaml", []byte(src), testNow)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range p.Ranges[0].CIDRs {
		got = append(got, c.Prefix.String()+"@"+c.Pos.String())
	}
	want := []string{"100.64.0.0/12@p.yaml:3:41", "2001:db8:1000::/36@p.yaml:3:56", "::/0@p.yaml:3:76"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("cidrs %v, want %v", got, want)
	}
	if len(p.Quarantines) != 1 || p.Quarantines[0].CIDR.Prefix.String() != "2001:db8:1000:1::10/128" {
		t.Fatalf("quarantines %+v", p.Quarantines)
	}
	_, err = Parse("p.yaml", []byte("version: 1\nranges:\n  - {name: pool, verdict: drop, cidrs: [0.0.0.0/0, ::/0]}\n"), testNow)
	if err == nil || !strings.Contains(err.Error(), `p.yaml:3:52: YAML syntax:`) || !strings.Contains(err.Error(), `must be quoted: "::/0"`) {
		t.Fatalf("unquoted ::/0 inside { }: %v", err)
	}
}

// A policy file holds one YAML document: a second one with content is rejected at its
// start, not silently ignored. A leading "---" and an empty trailing document are fine.
func TestParseDocuments(t *testing.T) {
	for _, src := range []string{
		"---\nversion: 1\n",
		"version: 1\n...\n",
		"version: 1\n---\n",
		"---\nversion: 1\n---\n# nothing here\n",
		"---\n---\nversion: 1\n",
		"%YAML 1.2\n---\nversion: 1\n",
	} {
		if _, err := Parse("p.yaml", []byte(src), testNow); err != nil {
			t.Errorf("%q: %v", src, err)
		}
	}
	for _, c := range []struct{ src, want string }{
		{"version: 1\n---\nversion: 1\nranges: []\n", "p.yaml:2:1: a second YAML document starts here"},
		{"---\nversion: 1\n# end\n---\nexemptions: []\n", "p.yaml:4:1: a second YAML document starts here"},
		{"version: 1\n---\n---\nversion: 1\n", "p.yaml:3:1: a second YAML document starts here"},
		{"version: 1\n...\nversion: 1\n", "p.yaml:3:1: a second YAML document starts here"},
	} {
		_, err := Parse("p.yaml", []byte(c.src), testNow)
		var es Errors
		if !errors.As(err, &es) || len(es) != 1 || !strings.HasPrefix(es[0].Error(), c.want) {
			t.Errorf("%q: err %v, want %q", c.src, err, c.want)
		}
	}
}

// Deep nesting is refused quickly (goccy's parser is quadratic in the depth).
func TestParseDeepNesting(t *testing.T) {
	for _, src := range []string{strings.Repeat("[", 100_000), "a: " + strings.Repeat("- ", 100_000) + "x\n"} {
		start := time.Now()
		_, err := Parse("p.yaml", []byte(src), testNow)
		if err == nil || !strings.Contains(err.Error(), "nested more than 64 levels deep") {
			t.Fatalf("err %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v", d)
		}
	}
}

// An exemption every address of which is decided by more specific entries never
// decides anything: it is accepted with a warning naming the entries that shadow it.
func TestShadowedExemption(t *testing.T) {
	const head = "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs:\n"
	cases := []struct {
		name, src string
		want      []string // warnings, in order
	}{
		{"shadowed", head + "      - 192.0.2.0/25\n      - 192.0.2.0/26\nexemptions:\n" +
			"  - {cidr: 192.0.2.0/24, reason: x, owner: y}\n  - {cidr: 192.0.2.128/25, name: upper, reason: x, owner: y}\n",
			[]string{`p.yaml:9:5: exemption 192.0.2.0/24 never decides anything: every address in it is decided by more specific entries: range "a" 192.0.2.0/25 (p.yaml:6:9), exemption "upper" 192.0.2.128/25 (p.yaml:10:12); remove it, or remove what shadows it`}},
		{"partly shadowed", head + "      - 192.0.2.0/25\n      - 192.0.2.128/26\nexemptions:\n  - {cidr: 192.0.2.0/24, reason: x, owner: y}\n", nil},
		{"gap at the start", head + "      - 192.0.2.128/25\n      - 192.0.2.64/26\nexemptions:\n  - {cidr: 192.0.2.0/24, reason: x, owner: y}\n", nil},
		{"not shadowed", head + "      - 192.0.2.0/24\nexemptions:\n  - {cidr: 192.0.2.25, reason: x, owner: y}\n", nil},
		{"end of the space", head + "      - 255.255.255.0/25\n      - 255.255.255.128/25\n      - ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/121\nexemptions:\n" +
			"  - {cidr: 255.255.255.0/24, reason: x, owner: y}\n  - {cidr: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120', reason: x, owner: y}\n",
			[]string{`p.yaml:10:5: exemption 255.255.255.0/24 never decides anything: every address in it is decided by more specific entries: range "a" 255.255.255.0/25 (p.yaml:6:9), range "a" 255.255.255.128/25 (p.yaml:7:9); remove it`}},
		{"an expired exemption shadows nothing", head + "      - 192.0.2.0/25\nexemptions:\n" +
			"  - {cidr: 192.0.2.0/24, reason: x, owner: y}\n  - {cidr: 192.0.2.128/25, reason: x, owner: y, expires: 2026-01-01}\n",
			[]string{"p.yaml:9:5: exemption 192.0.2.128/25 expired"}},
		{"a quarantine shadows nothing (it lifts)", head + "      - 192.0.2.0/25\nexemptions:\n  - {cidr: 192.0.2.0/24, reason: x, owner: y}\n" +
			"quarantines:\n  - {cidr: 192.0.2.128/25, verdict: drop, reason: x, owner: y, expires: 2027-01-01}\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A blocking default: with a passing one, an exemption in no range changes
			// nothing and is warned of as such (TestNeedlessExemptionWarns).
			p, err := Parse("p.yaml", []byte(c.src+"default: drop\n"), testNow)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Warnings) != len(c.want) {
				t.Fatalf("warnings %v, want %d", p.Warnings, len(c.want))
			}
			for i, w := range c.want {
				if !strings.HasPrefix(p.Warnings[i].Error(), w) {
					t.Errorf("warning %q, want it to start with %q", p.Warnings[i].Error(), w)
				}
			}
		})
	}
}

// The shadow check is near-linear: a /14 tiled with 65,536 /30s under nested
// exemptions (each shadowed) is checked at once, and the warning lists a few
// shadowing entries, not all of them.
func TestShadowedExemptionLarge(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\nranges:\n  - name: tiles\n    verdict: drop\n    cidrs:\n")
	for i := 0; i < 1<<16; i++ {
		fmt.Fprintf(&b, "      - 100.%d.%d.%d/30\n", 64+i>>14, i>>6&0xff, i<<2&0xff)
	}
	b.WriteString("exemptions:\n")
	for bits := 14; bits <= 29; bits++ {
		fmt.Fprintf(&b, "  - {cidr: 100.64.0.0/%d, reason: x, owner: y}\n", bits)
	}
	start := time.Now()
	p, err := Parse("p.yaml", []byte(b.String()), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 16 {
		t.Fatalf("%d warnings, want 16: %v", len(p.Warnings), p.Warnings)
	}
	if w := p.Warnings[0].Error(); !strings.Contains(w, `exemption 100.64.0.0/14 never decides`) ||
		!strings.Contains(w, `exemption 100.64.0.0/15 (p.yaml:65544:12), range "tiles" 100.66.0.0/30 (p.yaml:32774:9), range "tiles" 100.66.0.4/30 (p.yaml:32775:9) and 32766 more;`) {
		t.Errorf("first warning %s", w)
	}
	if w := p.Warnings[15].Error(); !strings.Contains(w, `exemption 100.64.0.0/29 never decides`) ||
		!strings.Contains(w, `range "tiles" 100.64.0.0/30 (p.yaml:6:9), range "tiles" 100.64.0.4/30 (p.yaml:7:9);`) {
		t.Errorf("last warning %s", w)
	}
	t.Logf("parse and shadow check of %d prefixes: %v", 1<<16, time.Since(start))
}

// An invalid CIDR or address says which part is wrong.
func TestCIDRProblems(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"300.1.2.0/24", `"300.1.2.0/24" is not a CIDR prefix: octet 300 is over 255`},
		{"192.0.2.256", `"192.0.2.256" is not an address or CIDR prefix: octet 256 is over 255`},
		{"192.0.2/24", `"192.0.2/24" is not a CIDR prefix: an IPv4 address has 4 octets, this has 3`},
		{"192.0.2.x/24", `"192.0.2.x/24" is not a CIDR prefix: octet "x" is not a number`},
		{"192.0.02.0/24", `"192.0.02.0/24" is not a CIDR prefix: octet "02" has a leading zero`},
		{"192.0.2.0/33", `"192.0.2.0/33" is not a CIDR prefix: prefix length 33 is over 32 for IPv4`},
		{"2001:db8::/129", `"2001:db8::/129" is not a CIDR prefix: prefix length 129 is over 128 for IPv6`},
		{"2001:db8::/x", `"2001:db8::/x" is not a CIDR prefix: prefix length "x" is not a number`},
		{"2001:db8::/", `"2001:db8::/" is not a CIDR prefix: nothing after the "/"; give a prefix length`},
		{"/24", `"/24" is not a CIDR prefix: nothing before the "/"; give an address`},
		{"192.0.2.0/-1", `"192.0.2.0/-1" is not a CIDR prefix: prefix length "-1" is not a number`},
		{"2001:db8:::1/64", `"2001:db8:::1/64" is not a CIDR prefix: the IPv6 address 2001:db8:::1 is malformed`},
		{"2001:db8::g/64", `"2001:db8::g/64" is not a CIDR prefix: the IPv6 address 2001:db8::g is malformed`},
		{"mail.example.com", `"mail.example.com" is not an address or CIDR prefix: write an IP address, not a name`},
	} {
		src := "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: ['" + c.in + "']\n"
		_, err := Parse("p.yaml", []byte(src), testNow)
		if err == nil || !strings.HasPrefix(err.Error(), "p.yaml:5:13: "+c.want) {
			t.Errorf("%s: %v\nwant %s", c.in, err, c.want)
		}
	}
}

// The default: key's position is recorded for explain; without the key there is none.
func TestDefaultPos(t *testing.T) {
	p, err := Parse("p.yaml", []byte("version: 1\n\ndefault: drop\n"), testNow)
	if err != nil {
		t.Fatal(err)
	}
	c := mustCompile(t, p)
	if got := c.Explain(Query{Src: addr_("192.0.2.1"), Port: 25}, testNow).Decider.Pos.String(); got != "p.yaml:3:1" {
		t.Errorf("default at %s, want p.yaml:3:1", got)
	}
	p, _ = Parse("p.yaml", []byte("version: 1\n"), testNow)
	if got := mustCompile(t, p).Explain(Query{Src: addr_("192.0.2.1"), Port: 25}, testNow).Decider.Pos; got.Line != 0 {
		t.Errorf("built-in default at %s, want no position", got)
	}
}

func TestParseFileMissing(t *testing.T) {
	_, err := ParseFile("/nonexistent/p.yaml", testNow)
	if err == nil || err.Error() != "/nonexistent/p.yaml: no such file" {
		t.Fatalf("err %v", err)
	}
}

// An IPv4-mapped prefix is read as the IPv4 prefix it maps, and check says so: silently,
// ::ffff:0:0/96 would become 0.0.0.0/0.
func TestMappedPrefixWarns(t *testing.T) {
	src := "version: 1\nranges:\n  - name: a\n    verdict: drop\n    cidrs: [::ffff:0:0/96]\n"
	p, err := Parse("p.yaml", []byte(src), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if p.Ranges[0].CIDRs[0].Prefix.String() != "0.0.0.0/0" {
		t.Fatalf("prefix %v", p.Ranges[0].CIDRs[0].Prefix)
	}
	if len(p.Warnings) != 1 || !strings.HasPrefix(p.Warnings[0].Error(), "p.yaml:5:13: ::ffff:0:0/96 is IPv4-mapped: it is read as the IPv4 prefix 0.0.0.0/0") {
		t.Fatalf("warnings %v", p.Warnings)
	}
}

// A policy or list file that is not a regular file (a device, a named pipe, a
// directory) is refused by name, not read without end: cidrs_file: /dev/zero once
// made check hang and grow to gigabytes.
func TestFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"/dev/zero", "cannot read /dev/zero: a device, not a file"},
		{fifo, "cannot read " + fifo + ": a named pipe, not a file"},
		{dir, "cannot read " + dir + ": a directory, not a file"},
	} {
		if _, err := ParseFile(c.path, testNow); err == nil || err.Error() != c.want {
			t.Errorf("ParseFile(%s): %v, want %q", c.path, err, c.want)
		}
		pol := filepath.Join(dir, "p.yaml")
		src := "version: 1\nranges:\n  - name: dsl\n    verdict: drop\n    cidrs_file: " + c.path + "\n"
		if err := os.WriteFile(pol, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseFile(pol, testNow); err == nil || err.Error() != pol+":5:17: "+c.want {
			t.Errorf("cidrs_file %s: %v, want %q", c.path, err, pol+":5:17: "+c.want)
		}
	}
}

// Governing 465 or 587 is refused while they are protected (the default); with
// protected_ports emptied on purpose it is allowed, and check warns at the port.
func TestSubmissionPortsWarn(t *testing.T) {
	src := "version: 1\ngoverned_ports: [25, 587]\nprotected_ports: []\nranges:\n  - {name: dsl, verdict: drop, cidrs: [100.64.0.0/10]}\n"
	p, err := Parse("p.yaml", []byte(src), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 1 || !strings.HasPrefix(p.Warnings[0].Error(), "p.yaml:2:22: port 587 is mail submission") {
		t.Fatalf("warnings %v", p.Warnings)
	}
	if _, err := Parse("p.yaml", []byte(strings.Replace(src, "protected_ports: []\n", "", 1)), testNow); err == nil || !strings.Contains(err.Error(), "port 587 is both governed and protected") {
		t.Fatalf("587 governed while protected: %v", err)
	}
}

// A list file's errors point at the text on the line (an indented line's column), and
// two prefixes on one line say so.
func TestListFileColumns(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	list := filepath.Join(dir, "l.txt")
	if err := os.WriteFile(pol, []byte("version: 1\nranges:\n  - {name: dsl, verdict: drop, cidrs_file: l.txt}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(list, []byte("100.64.0.0/16\n  bogus\n\t100.65.0.0/16 100.66.0.0/16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(pol, testNow)
	for _, want := range []string{list + `:2:3: "bogus" is not an address`, list + `:3:2: "100.65.0.0/16 100.66.0.0/16": one address or CIDR per line`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v\nwant %q", err, want)
		}
	}
}

// A list file exported with a UTF-8 byte-order mark and CRLF line ends (spreadsheets,
// Windows IPAM exports) reads as the same list without them.
func TestListFileBOM(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte("version: 1\nranges:\n  - {name: dsl, verdict: drop, cidrs_file: l.txt}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "l.txt"), []byte("\ufeff100.64.0.0/16\r\n100.65.0.0/16\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := ParseFile(pol, testNow)
	if err != nil {
		t.Fatalf("a list with a byte-order mark: %v", err)
	}
	if got := len(p.Ranges[0].CIDRs); got != 2 {
		t.Fatalf("%d prefixes, want 2", got)
	}
}

// runtime.quarantine.max bounds the term a desk may ask for, and the escalation terms
// must fit under it.
func TestRuntimeQuarantineMax(t *testing.T) {
	base := "version: 1\nranges:\n  - {name: dsl, verdict: drop, cidrs: [100.64.0.0/10]}\nruntime:\n  quarantine: {terms: [1h, 30d], max: %s}\n"
	p, err := Parse("p.yaml", []byte(fmt.Sprintf(base, "60d")), testNow)
	if err != nil || p.Runtime.QuarantineMax != 60*24*time.Hour {
		t.Fatalf("max 60d: %v %v", err, p)
	}
	if _, err := Parse("p.yaml", []byte(fmt.Sprintf(base, "7d")), testNow); err == nil || !strings.Contains(err.Error(), "runtime.quarantine.terms reach 30d, longer than runtime.quarantine.max (7d)") {
		t.Fatalf("terms over max: %v", err)
	}
}

// runtime.unblock.widest_ipv4/6 set the widest unblock, never wider than a runtime
// entry may be.
func TestRuntimeUnblockWidest(t *testing.T) {
	src := "version: 1\nranges:\n  - {name: dsl, verdict: drop, cidrs: [100.64.0.0/10]}\nruntime:\n  unblock: {widest_ipv4: %d, widest_ipv6: 64}\n"
	p, err := Parse("p.yaml", []byte(fmt.Sprintf(src, 28)), testNow)
	if err != nil || p.Runtime.UnblockWidest4 != 28 || p.Runtime.UnblockWidest6 != 64 {
		t.Fatalf("%v %+v", err, p.Runtime)
	}
	if _, err := Parse("p.yaml", []byte(fmt.Sprintf(src, 4)), testNow); err == nil || !strings.Contains(err.Error(), "5:26: runtime.unblock.widest_ipv4 4 is wider than any runtime entry may be (/8)") {
		t.Fatalf("widest_ipv4 4: %v", err)
	}
}

// An empty string ("", or quoted blank), where a value is required, is an error at the value:
// it must not drop the entry silently (a quarantine with expires: "" vanished), widen
// it (interfaces: [""] read as every interface) or leave a prefix-less entry behind
// (cidr: "" in an exemption panicked the shadow check).
func TestEmptyStrings(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"range cidr", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [\"\"]}\n", `3:38: a CIDR is empty`},
		{"exemption cidr", "version: 1\nexemptions:\n  - {cidr: \"\", reason: x, ticket: T}\n", `3:12: a CIDR is empty`},
		{"quarantine cidr", "version: 1\nquarantines:\n  - {cidr: '', verdict: drop, reason: x, ticket: T, expires: 2027-01-01}\n", `3:12: a CIDR is empty`},
		{"relay cidr", "version: 1\nrelays:\n  - {name: r, cidrs: [\"\"], reason: x, owner: o}\n", `3:23: a CIDR is empty`},
		{"cidrs_file", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs_file: \"\"}\n", `3:42: cidrs_file is empty`},
		{"range name", "version: 1\nranges:\n  - {name: \"\", verdict: drop, cidrs: [192.0.2.0/24]}\n", `3:12: name is empty`},
		{"blank name", "version: 1\nranges:\n  - {name: \"  \", verdict: drop, cidrs: [192.0.2.0/24]}\n", `3:12: name is empty`},
		{"expires", "version: 1\nquarantines:\n  - {cidr: 192.0.2.1, verdict: drop, reason: x, ticket: T, expires: \"\"}\n", `3:69: expires is empty`},
		{"interface", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/24], interfaces: [\"\"]}\n", `3:66: an interface name is empty`},
		{"duration", "version: 1\nruntime:\n  quarantine:\n    memory: \"\"\n", `4:13: runtime.quarantine.memory is empty`},
		{"range name in runtime", "version: 1\nruntime:\n  unblock:\n    forbidden_in: [\"\"]\n", `4:20: a range name is empty`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(c.src), testNow)
			if err == nil || !strings.Contains(err.Error(), "p.yaml:"+c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
}

// A list file exported on Windows (an IPAM's CSV export, Excel, Notepad) starts with
// a UTF-8 byte-order mark and ends its lines with CRLF: it reads as the same list.
// Several prefixes on one line, separated by commas or semicolons, are told apart
// from a malformed prefix.
func TestListFileBOMAndSeparators(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	list := filepath.Join(dir, "l.txt")
	if err := os.WriteFile(pol, []byte("version: 1\nranges:\n  - {name: dsl, verdict: drop, cidrs_file: l.txt}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(list, []byte("\ufeff100.64.0.0/16\r\n100.65.0.0/16 \r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := ParseFile(pol, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Ranges[0].CIDRs; len(got) != 2 || got[0].Pos.Col != 1 || got[0].Prefix.String() != "100.64.0.0/16" {
		t.Errorf("read %+v", got)
	}
	// UTF-16 with its byte-order mark ("Unicode text" from Excel or Notepad), either
	// byte order, reads as the same list; a file with NUL bytes and no mark is not text.
	for _, enc := range [][]byte{
		{0xff, 0xfe, '1', 0, '0', 0, '0', 0, '.', 0, '6', 0, '4', 0, '.', 0, '0', 0, '.', 0, '0', 0, '/', 0, '1', 0, '6', 0, '\r', 0, '\n', 0},
		{0xfe, 0xff, 0, '1', 0, '0', 0, '0', 0, '.', 0, '6', 0, '4', 0, '.', 0, '0', 0, '.', 0, '0', 0, '/', 0, '1', 0, '6', 0, '\n'},
	} {
		if err := os.WriteFile(list, enc, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := ParseFile(pol, testNow)
		if err != nil || len(p.Ranges[0].CIDRs) != 1 || p.Ranges[0].CIDRs[0].Prefix.String() != "100.64.0.0/16" {
			t.Errorf("UTF-16 % x: %v", enc[:2], err)
		}
	}
	if err := os.WriteFile(list, []byte("100.64.0.0/16\n\x7fELF\x00\x01\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(pol, testNow); err == nil || !strings.Contains(err.Error(), "l.txt is not a text file (a NUL byte on line 2)") {
		t.Errorf("binary list: %v", err)
	}
	if err := os.WriteFile(list, []byte("100.64.0.0/16,100.65.0.0/16\n100.66.0.0/16; 100.67.0.0/16\n100.68.0.0/16;\n100.69.0.0 /16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ParseFile(pol, testNow)
	for _, want := range []string{
		list + `:1:1: "100.64.0.0/16,100.65.0.0/16": one address or CIDR per line`,
		list + `:2:1: "100.66.0.0/16; 100.67.0.0/16": one address or CIDR per line`,
		list + `:3:1: "100.68.0.0/16;": one address or CIDR per line`,
		list + `:4:1: "100.69.0.0 /16" has a space inside; write 100.69.0.0/16`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v\nwant %q", err, want)
		}
	}
}

// An exemption whose addresses pass without it (no blocking range covers it, and the
// default passes; or the range around it passes) changes nothing: most often its
// address is mistyped, and the customer's server stays blocked. A warning says so.
func TestNeedlessExemptionWarns(t *testing.T) {
	const base = `version: 1
default: %s
ranges:
  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/12]}
  - {name: biz, verdict: pass, cidrs: [198.51.100.0/24]}
  - {name: partner, verdict: pass, cidrs: [100.80.0.0/16], interfaces: [eth3]}
  - {name: static, verdict: pass, cidrs: [100.64.5.0/24]}
exemptions:
  - {cidr: 100.64.12.25, name: ok-mail, reason: r, ticket: T}
  - {cidr: 100.46.12.25, name: typo-mail, reason: r, ticket: T}
  - {cidr: 198.51.100.25, reason: r, ticket: T}
  - {cidr: 100.80.1.25, name: partner-side, reason: r, ticket: T}
  - {cidr: 100.64.5.25, name: static-mail, reason: r, ticket: T}
`
	p, err := Parse("p.yaml", []byte(fmt.Sprintf(base, "pass")), testNow)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range p.Warnings {
		got = append(got, w.Error())
	}
	want := []string{
		`p.yaml:10:5: exemption "typo-mail" (100.46.12.25/32) changes nothing: without it its addresses pass anyway (the default); is the address right?`,
		`p.yaml:11:5: exemption 198.51.100.25/32 changes nothing: without it its addresses pass anyway (range "biz" 198.51.100.0/24, p.yaml:5:40); is the address right?`,
		`p.yaml:12:5: exemption "partner-side" (100.80.1.25/32) changes nothing: without it its addresses pass anyway (the default, and range "partner" 100.80.0.0/16 on eth3, p.yaml:6:44); is the address right?`,
		`p.yaml:13:5: exemption "static-mail" (100.64.5.25/32) changes nothing: without it its addresses pass anyway (range "static" 100.64.5.0/24, p.yaml:7:43); is the address right?`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// With a blocking default, an exemption outside every range is what lets it through.
	p, err = Parse("p.yaml", []byte(fmt.Sprintf(base, "drop")), testNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range p.Warnings {
		if strings.Contains(w.Error(), "typo-mail") || strings.Contains(w.Error(), "partner-side") {
			t.Errorf("default drop: %v", w)
		}
	}
}

// The needless-exemption warning is sound: on the random policies of the equivalence
// test, removing an exemption it names changes no verdict on any interface.
func TestNeedlessExemptionSound(t *testing.T) {
	warned := 0
	for _, c := range equivCases() {
		if !strings.HasPrefix(c.name, "random") || len(c.lists) > 0 {
			continue
		}
		p, err := Parse("policy.yaml", []byte(c.yaml), testNow)
		if err != nil {
			continue
		}
		full := mustCompile(t, p)
		for _, w := range p.Warnings {
			if !strings.Contains(w.Msg, "changes nothing") {
				continue
			}
			i := slices.IndexFunc(p.Exemptions, func(e Exemption) bool { return e.Pos == w.Pos })
			if i < 0 {
				t.Fatalf("%s: no exemption at %s", c.name, w.Pos)
			}
			warned++
			q := *p
			q.Exemptions = slices.Delete(slices.Clone(p.Exemptions), i, i+1)
			if d := Diff(full, mustCompile(t, &q), testNow); len(d.Changes) > 0 {
				t.Errorf("%s: %v, but removing it changes %v", c.name, w, d.Changes[0])
			}
		}
	}
	if warned == 0 {
		t.Fatal("no needless exemption among the random policies")
	}
	t.Logf("%d needless exemptions removed", warned)
}

// A value quoted back in a message is cut short: a 50 MB file of one word (a binary
// or a log written over the policy by mistake) gave a 50 MB error line, on the
// terminal and in the daemon's log; a list file's megabyte line did the same.
func TestLongValuesClipped(t *testing.T) {
	long := strings.Repeat("a", 1<<20)
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	for _, c := range []struct{ policy, list string }{
		{policy: long},
		{policy: "version: 1\ndefault: " + long + "\n"},
		{policy: "version: 1\n" + long + ": 1\n"},
		{policy: "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [" + long + "]}\n"},
		{policy: "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/" + long + "]}\n"},
		{policy: "version: 1\nquarantines:\n  - {cidr: 192.0.2.1, verdict: drop, reason: r, owner: o, expires: " + long + "}\n"},
		{policy: "version: 1\nruntime: {quarantine: {memory: " + long + "}}\n"},
		{policy: "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/24], interfaces: [" + long + "]}\n"},
		{policy: "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs_file: l.txt}\n", list: long + "\n192.0.2.0/24 " + long + "\n"},
	} {
		if err := os.WriteFile(pol, []byte(c.policy), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "l.txt"), []byte(c.list), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ParseFile(pol, testNow)
		var es Errors
		if !errors.As(err, &es) {
			t.Fatalf("%.40q: %v", c.policy, err)
		}
		for _, e := range es {
			if len(e.Error()) > 600 {
				t.Errorf("%.40q: a %d-byte message: %.200s", c.policy, len(e.Error()), e.Error())
			}
		}
	}
}
