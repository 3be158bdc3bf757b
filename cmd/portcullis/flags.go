package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// newFlags returns a flag set whose -h prints usage and text to stdout.
func newFlags(e *env, name, args, text string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "%s\n\n%s\n", strings.TrimSpace("usage: portcullis "+name+" "+args), strings.TrimSpace(text))
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		if b.Len() > 0 {
			fmt.Fprintf(e.stdout, "\noptions:\n%s", b.String())
		}
	}
	return fs
}

// parseVerb parses a verb's flags (newFlags plus any the caller added through
// addFlags) and checks it got between minArgs and maxArgs arguments. done is true when
// -h was shown: the caller returns nil.
func parseVerb(fs *flag.FlagSet, synopsis string, args []string, minArgs, maxArgs int) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) { // Parse has already shown fs.Usage
			return true, nil
		}
		return false, fmt.Errorf("%w: %v (see portcullis %s -h)", errUsage, err, fs.Name())
	}
	if fs.NArg() < minArgs || fs.NArg() > maxArgs {
		return false, fmt.Errorf("%w: %s takes %s (see portcullis %s -h)", errUsage, fs.Name(), synopsis, fs.Name())
	}
	return false, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// loadPolicy parses and compiles a policy file. Policy errors come back as
// policy.Errors with every problem in the file.
func loadPolicy(e *env, path string) (*policy.Compiled, error) {
	now := e.now()
	pol, err := policy.ParseFile(path, now)
	if err != nil {
		return nil, err
	}
	return policy.Compile(pol, now)
}

// rejectPolicy prints every error of the policy at path to stderr and returns the
// verb's error with exit code code. A file that could not be read is just that error.
func rejectPolicy(e *env, path string, err error, code int) error {
	var fe *policy.FileError
	if errors.As(err, &fe) { // not read at all: "no such file", not "not a valid policy"
		return &exitError{code, fe}
	}
	for _, l := range errorList(err) {
		fmt.Fprintln(e.stderr, l)
	}
	return &exitError{code, fmt.Errorf("%s is not a valid policy", path)}
}

func errorList(err error) []string {
	var pe policy.Errors
	if errors.As(err, &pe) {
		out := make([]string, len(pe))
		for i, x := range pe {
			out[i] = x.Error()
		}
		return out
	}
	return []string{err.Error()}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}
