package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

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
// addFlags) and checks it got between minArgs and maxArgs arguments. Flags may come
// before, between or after the arguments (`explain FILE ADDR --json`); "--" ends the
// flags, everything after it is an argument. done is true when -h was shown: the
// caller returns nil.
func parseVerb(fs *flag.FlagSet, synopsis string, args []string, minArgs, maxArgs int) (done bool, err error) {
	// flag calls Usage on every parse error too; the usage goes to stdout only when it
	// was asked for (-h), so that stdout stays clean (valid JSON with --json) on errors.
	usage := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.Usage = usage }()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage()
				return true, nil
			}
			return false, fmt.Errorf("%w: %v (see portcullis %s -h)", errUsage, err, fs.Name())
		}
		rest := fs.Args()
		// Parse stops at the first argument, or after a "--" (which it drops).
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	// Leave the arguments where fs.Arg and fs.NArg find them.
	if err := fs.Parse(append([]string{"--"}, pos...)); err != nil {
		return false, err
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

// suggest returns the candidate closest to s by edit distance, if it is close enough
// to be a typo (at most two edits, and fewer than half of s), else "".
func suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD && 2*d < max(len(s), len(c)) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Damerau-Levenshtein distance (optimal string alignment): a
// swap of two neighbouring letters, the commonest typo, counts as one edit.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
