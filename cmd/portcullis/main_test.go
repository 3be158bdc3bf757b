package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/buildinfo"
)

func runCmd(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	err := run(&env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, now: time.Now}, args)
	if err != nil {
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), exitCode(err)
}

func TestEverySubcommandHelp(t *testing.T) {
	for _, c := range commands {
		out, errs, code := runCmd(c.name, "-h")
		if code != 0 || !strings.Contains(out, "usage: portcullis "+c.name) || strings.Count(out, "usage:") != 1 {
			t.Errorf("%s -h: code %d, out %q, err %q", c.name, code, out, errs)
		}
	}
}

func TestExitCodes(t *testing.T) {
	if _, _, code := runCmd(); code != 2 {
		t.Errorf("no args: exit %d, want 2", code)
	}
	if _, errs, code := runCmd("frobnicate"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Errorf("unknown command: exit %d, %q", code, errs)
	}
	if out, _, code := runCmd("version"); code != 0 || !strings.HasPrefix(out, "portcullis ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

func TestVersion(t *testing.T) {
	obj, err := os.ReadFile("../../bpf/portcullis_bpfel.o")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(obj)
	want := "bpf object  sha256:" + hex.EncodeToString(sum[:])
	out, errs, code := runCmd("version")
	if code != 0 || !strings.HasPrefix(out, "portcullis "+version+"\n") || !strings.Contains(out, want) || !strings.Contains(out, "commit ") {
		t.Errorf("version: exit %d, %q %q; want %q", code, out, errs, want)
	}
	if out2, _, code := runCmd("--version"); code != 0 || out2 != out {
		t.Errorf("--version: exit %d, %q; want the same as version", code, out2)
	}
}

// The commit comes from the build's VCS stamp, when the binary has one.
func TestVersionCommit(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/portcullis/portcullis", Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "d6bb460c0ffee"}, {Key: "vcs.modified", Value: "true"}, {Key: "vcs.time", Value: "2026-12-01T12:00:00Z"}}}
	got := versionText(buildinfo.From(bi, true, []byte("obj"), version))
	for _, want := range []string{"portcullis " + version + "\n", "commit      d6bb460c0ffee, with uncommitted changes (2026-12-01T12:00:00Z)\n", "go          go1.26.8\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("version text lacks %q:\n%s", want, got)
		}
	}
	bi.Main.Version, bi.Settings = "v1.2.3", nil
	got = versionText(buildinfo.From(bi, true, []byte("obj"), version))
	if !strings.HasPrefix(got, "portcullis v1.2.3\n") || !strings.Contains(got, "commit      unknown (built without VCS information)") {
		t.Errorf("tagged module, no VCS stamp:\n%s", got)
	}
}

func TestHelpVerb(t *testing.T) {
	for _, c := range commands {
		want, _, _ := runCmd(c.name, "-h")
		if out, errs, code := runCmd("help", c.name); code != 0 || out != want {
			t.Errorf("help %s: exit %d, %q %q; want %q", c.name, code, out, errs, want)
		}
	}
	usage, _, _ := runCmd("help")
	if out, _, code := runCmd("help", "help"); code != 0 || out != usage || !strings.Contains(usage, "portcullis help COMMAND") {
		t.Errorf("help help: exit %d, %q", code, out)
	}
	if _, errs, code := runCmd("help", "statsu"); code != 2 || !strings.Contains(errs, `did you mean "status"?`) {
		t.Errorf("help statsu: exit %d, %q", code, errs)
	}
}

func TestVerbDidYouMean(t *testing.T) {
	for typo, want := range map[string]string{"staus": "status", "explian": "explain", "replya": "replay", "versoin": "version", "dif": "diff"} {
		if _, errs, code := runCmd(typo); code != 2 || !strings.Contains(errs, `unknown command "`+typo+`": did you mean "`+want+`"?`) {
			t.Errorf("%s: exit %d, %q; want a suggestion of %s", typo, code, errs, want)
		}
	}
	if _, errs, code := runCmd("xyzzy"); code != 2 || strings.Contains(errs, "did you mean") || !strings.Contains(errs, "see portcullis help") {
		t.Errorf("xyzzy: exit %d, %q; want no suggestion", code, errs)
	}
}

// Flags may follow the positional arguments; "--" ends the flags.
func TestFlagsAfterArgs(t *testing.T) {
	before, _, code := runAt("explain", "--json", example, "100.64.1.1", "25")
	if code != 0 {
		t.Fatalf("explain --json: exit %d", code)
	}
	for _, args := range [][]string{
		{"explain", example, "100.64.1.1", "25", "--json"},
		{"explain", example, "--json", "100.64.1.1", "25"},
		{"explain", example, "100.64.1.1", "-json", "25"},
	} {
		if out, errs, code := runAt(args...); code != 0 || out != before {
			t.Errorf("%v: exit %d %q\n%s", args, code, errs, out)
		}
	}
	if out, _, code := runAt("check", example, "--json"); code != 0 || !strings.HasPrefix(out, "{") {
		t.Errorf("check FILE --json: exit %d\n%s", code, out)
	}
	if _, errs, code := runAt("explain", example, "100.64.1.1", "25", "--nosuch"); code != 2 || !strings.Contains(errs, "flag provided but not defined: -nosuch") {
		t.Errorf("unknown flag after the arguments: exit %d %q", code, errs)
	}
	// After "--", "--json" is an argument (here: one too many).
	if _, errs, code := runAt("explain", example, "100.64.1.1", "--", "25", "--json"); code != 2 || !strings.Contains(errs, "explain takes") {
		t.Errorf("-- then --json: exit %d %q", code, errs)
	}
}
