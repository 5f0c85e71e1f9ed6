// Command deploy-validate checks switchyard's deploy kit offline. deploy/validate.sh builds it
// and runs each subcommand; each prints what it checked and exits 1 on any problem.
//
//	deploy-validate compose FILE OUT               load FILE as `docker compose config` does, into OUT
//	deploy-validate kustomize DIR OUT              build DIR as `kubectl kustomize` does, into OUT
//	deploy-validate rules CATALOGUE FILE...        rule files / PrometheusRule manifests
//	deploy-validate dashboard CATALOGUE FILE...    Grafana dashboards
//	deploy-validate versions                       the versions of the libraries used
//
// CATALOGUE is docs/metrics.md: every metric a rule or a dashboard queries must be listed there
// (a histogram as name_bucket, name_sum or name_count), with the labels it is queried by.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"
)

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  deploy-validate compose FILE OUT
  deploy-validate kustomize DIR OUT
  deploy-validate rules CATALOGUE FILE...
  deploy-validate dashboard CATALOGUE FILE...
  deploy-validate versions`)
	os.Exit(2)
}

// problems collects what failed; a subcommand reports all of them, not only the first.
type problems struct{ list []string }

func (p *problems) add(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

func (p *problems) exit(what string) {
	if len(p.list) == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "%s: %d problem(s):\n", what, len(p.list))
	for _, s := range p.list {
		fmt.Fprintf(os.Stderr, "  - %s\n", s)
	}
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "compose":
		if len(args) != 2 {
			usage()
		}
		runCompose(args[0], args[1])
	case "kustomize":
		if len(args) != 2 {
			usage()
		}
		runKustomize(args[0], args[1])
	case "rules":
		if len(args) < 2 {
			usage()
		}
		runRules(args[0], args[1:])
	case "dashboard":
		if len(args) < 2 {
			usage()
		}
		runDashboard(args[0], args[1:])
	case "versions":
		printVersions()
	default:
		usage()
	}
}

// printVersions prints the Go toolchain and the versions of the modules that do the checking.
func printVersions() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Println("no build info")
		return
	}
	fmt.Printf("go %s\n", strings.TrimPrefix(info.GoVersion, "go"))
	want := map[string]bool{
		"github.com/compose-spec/compose-go/v2": true,
		"github.com/prometheus/prometheus":      true,
		"sigs.k8s.io/kustomize/api":             true,
		"sigs.k8s.io/kustomize/kyaml":           true,
	}
	var lines []string
	for _, d := range info.Deps {
		if want[d.Path] {
			lines = append(lines, fmt.Sprintf("%s %s", d.Path, d.Version))
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
}
