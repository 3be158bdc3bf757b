package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
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
