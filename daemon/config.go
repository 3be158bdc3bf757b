// Package daemon is `portcullis run`: it keeps the XDP program attached to the
// subscriber-facing interfaces (the interface watch, on its own lock), survives its own
// crashes through pinned links and maps, wires the controller (package controller:
// every policy change and runtime entry, applied, proved and published) to its
// sources, and serves metrics, the HTTP API and the local control socket from the
// controller's published snapshot.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/loader"
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
	// last one to two periods. 0: one period since the maps were created.
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

// LoadConfig reads and checks a configuration file. Errors name file:line and the fix.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading configuration: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses configuration data read from file.
func ParseConfig(file string, data []byte) (Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		// yaml.v3 errors read "yaml: line N: ..."; name the file.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.ReplaceAll(msg, "\n  line ", "\n"+file+":")
		if after, ok := strings.CutPrefix(msg, "unmarshal errors:\n"); ok {
			msg = after
		} else if after, ok := strings.CutPrefix(msg, "line "); ok {
			msg = file + ":" + after
		}
		return Config{}, fmt.Errorf("%s (keys: interfaces, mode, policy, listen, control_socket, bpffs, log_format, audit_log, wait_for_interfaces, switch_mode, store, api, policy_source, etcd)", msg)
	}
	var errs []string
	if len(c.Interfaces) == 0 {
		errs = append(errs, file+": interfaces is empty: list the subscriber-facing interfaces, e.g. interfaces: [eth1]")
	}
	seen := map[string]bool{}
	for _, i := range c.Interfaces {
		if seen[i] {
			errs = append(errs, fmt.Sprintf("%s: interface %q is listed twice", file, i))
		}
		seen[i] = true
	}
	switch c.Mode {
	case loader.ModeNative, loader.ModeGeneric, loader.ModeAuto:
	default:
		errs = append(errs, fmt.Sprintf("%s: mode %q is not one of native, generic, auto", file, c.Mode))
	}
	if c.Policy == "" && c.PolicySource != PolicyFromEtcd {
		errs = append(errs, file+": policy is missing: the policy file to enforce, e.g. policy: /etc/portcullis/policy.yaml (or policy_source: etcd)")
	}
	errs = append(errs, checkEtcd(file, &c)...)
	if c.BPFFS == "" {
		errs = append(errs, file+": bpffs is empty: a directory on bpffs, e.g. "+loader.DefaultPinDir)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Sprintf("%s: log_format %q is not one of text, json", file, c.LogFormat))
	}
	if c.Store == "" {
		errs = append(errs, file+": store is empty: the file that keeps runtime entries, e.g. "+DefaultStore)
	}
	if c.API.Listen != "" && c.API.Clients == "" {
		errs = append(errs, file+": api.listen is set but api.clients is not: the API needs the clients file (docs/api.md)")
	}
	if len(errs) > 0 {
		return Config{}, errors.New(strings.Join(errs, "\n"))
	}
	return c, nil
}
