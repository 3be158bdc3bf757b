package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/portcullis/portcullis/demo"
	"github.com/portcullis/portcullis/examples"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/testenv"
)

const demoHelp = `
Builds a small ISP in network namespaces (subscribers in dynamic pools, business space,
a registered mail server, a quarantined host, one subscriber over 802.1Q; a gateway with
Portcullis on its subscriber-facing interfaces; an "internet" with two real SMTP servers
on 25, 587 and 465: mx.portcullis.test, a mail server of the world, and smtp.isp.test,
the ISP's smarthost), loads the policy (default: the built-in examples/policy.yaml),
sends real mail from every host in IPv4 and IPv6 to each port of the MX, then port-25
mail from the dsl subscriber to the MX and to the smarthost (a relay in the example
policy: refused towards the MX, delivered through the smarthost), prints what happened
next to what the policy says, prints the counters, and tears everything down.

Exit status: 0 when every attempt ended as the policy says, 1 when one did not, 2 when
the demo could not run (not root, no BPF/XDP, bad policy or flags).

Needs root on Linux 5.9 or newer with BPF, XDP, tc BPF, veth and network namespaces
(what stock Debian and Ubuntu kernels have). Nothing else: no iproute2, no SMTP tools.`

// geteuid is os.Geteuid; tests replace it.
var geteuid = os.Geteuid

func runDemo(e *env, args []string) error {
	fs := newFlags(e, "demo", "[--policy FILE] [--mode native|generic] [--hold]", demoHelp)
	polPath := fs.String("policy", "", "policy file (default: the built-in "+examples.PolicyName+")")
	modeName := fs.String("mode", "native", "XDP attach mode on the gateway: native or generic")
	hold := fs.Bool("hold", false, "keep the topology up after the scenario until interrupted (Ctrl-C)")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	mode, err := testenv.ParseMode(*modeName)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	name, c, err := demoPolicy(e, *polPath)
	if err != nil {
		return rejectPolicy(e, name, err, 2)
	}
	ctx, stop := demoContext()
	defer stop()
	err = demo.Run(ctx, demo.Options{Policy: c, PolicyName: name, Mode: mode, Hold: *hold, Now: e.now, Geteuid: geteuid}, e.stdout, e.stderr)
	switch {
	case errors.Is(err, demo.ErrCannotRun):
		return &exitError{2, err}
	case errors.Is(err, demo.ErrMismatch):
		return &exitError{1, err}
	}
	return err
}

// demoContext is done when the demo is interrupted (Ctrl-C, SIGTERM): the demo then
// ends through its deferred teardown.
//
// SIGPIPE is ignored, not caught: once caught, it is delivered for a write to any
// broken connection, and the demo's own mail server writes to clients that hang up
// (the --hold hint `echo > /dev/tcp/.../25` does), which ended the demo. Ignored, a
// write to a closed stdout (`portcullis demo | head`) fails with EPIPE instead of
// killing the process and leaving its namespaces behind; demo.Run notices that. It
// stays ignored after stop: the demo is the last thing the process does.
func demoContext() (context.Context, context.CancelFunc) {
	signal.Ignore(syscall.SIGPIPE)
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// demoPolicy returns the policy to demonstrate and the name it goes by.
func demoPolicy(e *env, path string) (string, *policy.Compiled, error) {
	if path != "" {
		c, err := loadPolicy(e, path)
		return path, c, err
	}
	now := e.now()
	pol, err := policy.Parse(examples.PolicyName, examples.Policy, now)
	if err != nil {
		return examples.PolicyName, nil, err
	}
	c, err := policy.Compile(pol, now)
	return examples.PolicyName + " (built in)", c, err
}
