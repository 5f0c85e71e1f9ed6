package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

// ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, $NAME (not $$NAME, an escaped $).
var interpRe = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// runCompose loads a compose file with compose-go, the library behind `docker compose config`:
// the compose specification's JSON schema (unknown keys fail), interpolation, normalisation and
// the consistency checks (services, volumes, networks referred to exist; depends_on has no
// cycle). Then it checks what `docker compose config` leaves to `up`: every bind-mounted file
// and build context exists, and every variable the file interpolates has a default.
func runCompose(file, out string) {
	var p problems
	abs, err := filepath.Abs(file)
	if err != nil {
		p.add("%v", err)
		p.exit("compose")
	}
	dir := filepath.Dir(abs)

	raw, err := os.ReadFile(abs)
	if err != nil {
		p.add("%v", err)
		p.exit("compose")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		p.add("%s: %v", file, err)
		p.exit("compose")
	}
	// Interpolation applies to keys and values, not to comments.
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode {
			for _, m := range interpRe.FindAllStringSubmatch(n.Value, -1) {
				switch {
				case m[0] == "$$":
				case m[1] != "" && (strings.HasPrefix(m[2], ":-") || strings.HasPrefix(m[2], "-")):
				default:
					p.add("%s:%d: %s has no default (${NAME:-default}): `docker compose up` would need it set", file, n.Line, m[0])
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)

	// An environment without the variables the file uses: it must load on its defaults.
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithWorkingDirectory(dir),
		cli.WithEnv([]string{}),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		p.add("%v", err)
		p.exit("compose")
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		p.add("%s: %v", file, err)
		p.exit("compose")
	}

	names := project.ServiceNames()
	sort.Strings(names)
	for _, name := range names {
		svc := project.Services[name]
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					p.add("%s: service %s mounts %s, which does not exist", file, name, v.Source)
				}
			}
		}
		if svc.Build != nil {
			if _, err := os.Stat(svc.Build.Context); err != nil {
				p.add("%s: service %s: build context %s does not exist", file, name, svc.Build.Context)
			}
			df := svc.Build.Dockerfile
			if !filepath.IsAbs(df) {
				df = filepath.Join(svc.Build.Context, df)
			}
			if _, err := os.Stat(df); err != nil {
				p.add("%s: service %s: Dockerfile %s does not exist", file, name, df)
			}
		}
		if svc.Image == "" {
			p.add("%s: service %s has no image name", file, name)
		}
	}
	// The resolved model, for the consistency checks of validate.sh (like `docker compose
	// config` prints it).
	resolved, err := project.MarshalYAML()
	if err != nil {
		p.add("%v", err)
	} else if err := os.WriteFile(out, resolved, 0o644); err != nil {
		p.add("%v", err)
	}
	fmt.Printf("  %s: project %q, %d services: %s\n", file, project.Name, len(names), strings.Join(names, " "))
	p.exit("compose")
}
