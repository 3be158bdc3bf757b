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
		fmt.Fprintf(e.stdout, "usage: portcullis %s %s\n\n%s\n", name, args, strings.TrimSpace(text))
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

// parseFlags parses args; -h is a clean exit (errHelp), anything else wrong is usage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
			return errHelp
		}
		return fmt.Errorf("%w: %v (see portcullis %s -h)", errUsage, err, fs.Name())
	}
	return nil
}

var errHelp = errors.New("help shown")

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
