package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"go.yaml.in/yaml/v3"
)

var severities = map[string]bool{"critical": true, "warning": true, "info": true}

// runRules checks Prometheus rule files, and PrometheusRule manifests (their spec), as
// `promtool check rules` does (Prometheus's own rulefmt: strict YAML, valid groups, names,
// expressions, label names and annotation templates), then each expression against the
// catalogue, and that every alert has a severity label.
func runRules(cataloguePath string, files []string) {
	var p problems
	c := mustCatalogue(cataloguePath, "rules", &p)
	for _, file := range files {
		content, err := os.ReadFile(file)
		if err != nil {
			p.add("%v", err)
			continue
		}
		what := "rule file"
		var top map[string]any
		if err := yaml.Unmarshal(content, &top); err != nil {
			p.add("%s: %v", file, err)
			continue
		}
		if top["kind"] == "PrometheusRule" {
			what = "PrometheusRule spec"
			spec, ok := top["spec"]
			if !ok {
				p.add("%s: PrometheusRule without spec", file)
				continue
			}
			if content, err = yaml.Marshal(spec); err != nil {
				p.add("%s: %v", file, err)
				continue
			}
		}
		logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
		groups, errs := rulefmt.Parse(content, false, model.UTF8Validation, promqlParser, logger)
		for _, e := range errs {
			p.add("%s: %v", file, e)
		}
		if groups == nil {
			continue
		}
		n := 0
		for _, g := range groups.Groups {
			names := map[string]bool{}
			for _, r := range g.Rules {
				n++
				name := r.Alert
				if name == "" {
					name = r.Record
				}
				where := fmt.Sprintf("%s: group %q, rule %q", file, g.Name, name)
				if r.Alert != "" {
					if names[r.Alert] {
						p.add("%s: alert name used twice in the group", where)
					}
					names[r.Alert] = true
					if !severities[r.Labels["severity"]] {
						p.add("%s: labels.severity must be critical, warning or info (got %q)", where, r.Labels["severity"])
					}
					if r.Annotations["summary"] == "" {
						p.add("%s: no summary annotation", where)
					}
				}
				rep, errs := checkExpr(c, r.Expr)
				for _, e := range errs {
					p.add("%s: %s", where, e)
				}
				if len(errs) == 0 {
					fmt.Printf("    %-28s %v\n", name, rep.metrics)
				}
			}
		}
		if len(errs) == 0 {
			fmt.Printf("  %s: %s, %d group(s), %d rule(s) parsed and checked\n", file, what, len(groups.Groups), n)
		}
	}
	p.exit("rules")
}
