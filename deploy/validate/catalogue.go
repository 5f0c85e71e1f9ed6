package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// metric is one row of docs/metrics.md's table.
type metric struct {
	name   string
	kind   string // counter, gauge, histogram
	labels map[string]bool
}

// catalogue is docs/metrics.md's table, plus Prometheus's own per-target `up`.
type catalogue struct {
	metrics map[string]*metric
}

// Labels every scraped series carries (the scrape target's), whatever the metric.
var targetLabels = []string{"job", "instance"}

var (
	// | `switchyard_x_total` | counter | `kind` (…) | meaning |
	rowRe      = regexp.MustCompile("^\\|\\s*`(switchyard_[a-z0-9_]+)`\\s*\\|\\s*(counter|gauge|histogram)\\s*\\|([^|]*)\\|")
	parenRe    = regexp.MustCompile(`\([^)]*\)`)
	backtickRe = regexp.MustCompile("`([a-zA-Z_][a-zA-Z0-9_]*)`")
)

// loadCatalogue reads the metric table of docs/metrics.md. A label is a backquoted name in the
// labels column outside parentheses ("`campaign` (at most 32 ids, then `other`), `state` = …"
// gives campaign and state).
// mustCatalogue loads the catalogue, or reports why not and ends the check named `check`.
func mustCatalogue(path, check string, p *problems) *catalogue {
	c, err := loadCatalogue(path)
	if err != nil {
		p.add("%v", err)
		p.exit(check)
	}
	return c
}

func loadCatalogue(path string) (*catalogue, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c := &catalogue{metrics: map[string]*metric{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| `switchyard_") {
			continue
		}
		m := rowRe.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%s: a metric row not in the form | `name` | counter/gauge/histogram | labels | meaning |: %s", path, line)
		}
		if _, dup := c.metrics[m[1]]; dup {
			return nil, fmt.Errorf("%s: metric %s listed twice", path, m[1])
		}
		mt := &metric{name: m[1], kind: m[2], labels: map[string]bool{}}
		for _, l := range backtickRe.FindAllStringSubmatch(parenRe.ReplaceAllString(m[3], ""), -1) {
			mt.labels[l[1]] = true
		}
		c.metrics[mt.name] = mt
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(c.metrics) == 0 {
		return nil, fmt.Errorf("%s: no metric rows found", path)
	}
	c.metrics["up"] = &metric{name: "up", kind: "gauge", labels: map[string]bool{}}
	return c, nil
}

// series is what a selector's metric name resolves to.
type series struct {
	metric *metric
	suffix string // "", or _bucket / _sum / _count of a histogram
}

// resolve maps a series name to its catalogue entry: a counter or gauge by its own name, a
// histogram only by name_bucket, name_sum or name_count (a classic histogram has no series of
// its bare name).
func (c *catalogue) resolve(name string) (series, error) {
	if m, ok := c.metrics[name]; ok {
		if m.kind == "histogram" {
			return series{}, fmt.Errorf("%s is a histogram: query %s_bucket, %s_sum or %s_count", name, name, name, name)
		}
		return series{metric: m}, nil
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if m, ok := c.metrics[base]; ok && m.kind == "histogram" {
				return series{metric: m, suffix: suf}, nil
			}
		}
	}
	if strings.HasPrefix(name, "switchyard_") {
		return series{}, fmt.Errorf("%s is not a metric listed in docs/metrics.md", name)
	}
	return series{}, fmt.Errorf("%s is neither a switchyard metric of docs/metrics.md nor `up`", name)
}

// labels says whether a series has the label l.
func (s series) hasLabel(l string) bool {
	for _, t := range targetLabels {
		if l == t {
			return true
		}
	}
	if l == "le" {
		return s.suffix == "_bucket"
	}
	if l == "__name__" {
		return true
	}
	return s.metric.labels[l]
}

func (s series) labelList() string {
	var out []string
	out = append(out, targetLabels...)
	for l := range s.metric.labels {
		out = append(out, l)
	}
	if s.suffix == "_bucket" {
		out = append(out, "le")
	}
	return strings.Join(out, ", ")
}
