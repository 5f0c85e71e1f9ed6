package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

var promqlParser = parser.NewParser(parser.Options{})

// exprReport is what one expression queries.
type exprReport struct {
	metrics []string
}

// checkExpr parses expr and checks what it queries against the catalogue: every selector names
// a listed metric (histograms by their _bucket/_sum/_count series), matches only labels that
// metric has, rate()/increase()/irate()/resets() apply to counters or histogram series only,
// histogram_quantile() reads _bucket series and keeps `le` through any aggregation, and every
// `by (...)` label exists on some metric aggregated.
func checkExpr(c *catalogue, expr string) (exprReport, []string) {
	var rep exprReport
	var errs []string
	ast, err := promqlParser.ParseExpr(expr)
	if err != nil {
		return rep, []string{fmt.Sprintf("does not parse: %v", err)}
	}
	seen := map[string]bool{}
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			name := selectorName(n)
			if name == "" {
				errs = append(errs, fmt.Sprintf("selector %s has no fixed metric name", n.String()))
				return nil
			}
			s, err := c.resolve(name)
			if err != nil {
				errs = append(errs, err.Error())
				return nil
			}
			if !seen[name] {
				seen[name] = true
				rep.metrics = append(rep.metrics, name)
			}
			for _, m := range n.LabelMatchers {
				if !s.hasLabel(m.Name) {
					errs = append(errs, fmt.Sprintf("%s has no label %q (it has: %s)", name, m.Name, s.labelList()))
				}
			}
		case *parser.Call:
			switch n.Func.Name {
			case "rate", "irate", "increase", "resets":
				for _, s := range selectorsIn(c, n) {
					if s.metric.kind == "gauge" {
						errs = append(errs, fmt.Sprintf("%s() over %s, a gauge", n.Func.Name, s.metric.name))
					}
				}
			case "histogram_quantile":
				if len(n.Args) == 2 {
					errs = append(errs, checkQuantile(c, n.Args[1])...)
				}
			}
		case *parser.AggregateExpr:
			if !n.Without {
				have := selectorsIn(c, n.Expr)
				for _, l := range n.Grouping {
					found := false
					for _, s := range have {
						if s.hasLabel(l) {
							found = true
						}
					}
					if !found && len(have) > 0 {
						errs = append(errs, fmt.Sprintf("%s by (%s): no metric aggregated there has the label %q", n.Op, strings.Join(n.Grouping, ", "), l))
					}
				}
			}
		}
		return nil
	})
	sort.Strings(rep.metrics)
	return rep, errs
}

// checkQuantile: histogram_quantile's vector must be made of _bucket series, and an
// aggregation on the way must keep `le`.
func checkQuantile(c *catalogue, e parser.Expr) []string {
	var errs []string
	for _, s := range selectorsIn(c, e) {
		if s.suffix != "_bucket" {
			errs = append(errs, fmt.Sprintf("histogram_quantile() over %s, not a _bucket series", s.metric.name))
		}
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if a, ok := node.(*parser.AggregateExpr); ok {
			keeps := a.Without
			for _, l := range a.Grouping {
				if l == "le" {
					keeps = !a.Without
				}
			}
			if !keeps {
				errs = append(errs, fmt.Sprintf("histogram_quantile() over %s, which drops `le`", a.String()))
			}
		}
		return nil
	})
	return errs
}

// selectorName is a selector's metric name (`name{...}` or `{__name__="name"}`).
func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// selectorsIn resolves every selector under e that names a catalogue metric.
func selectorsIn(c *catalogue, e parser.Node) []series {
	var out []series
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			if s, err := c.resolve(selectorName(vs)); err == nil {
				out = append(out, s)
			}
		}
		return nil
	})
	return out
}
