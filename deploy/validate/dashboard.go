package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Grafana's built-in interval variables, replaced by durations before parsing.
var builtinDurations = []struct{ name, value string }{
	{"$__rate_interval", "5m"}, {"${__rate_interval}", "5m"},
	{"$__interval", "1m"}, {"${__interval}", "1m"},
	{"$__range", "1h"}, {"${__range}", "1h"},
}

var (
	// ${name}, ${name:format}, $name, [[name]]
	varRe = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z0-9_]+)\]\]`)
)

type dashboard struct {
	UID           string          `json:"uid"`
	Title         string          `json:"title"`
	SchemaVersion int             `json:"schemaVersion"`
	Templating    templating      `json:"templating"`
	Panels        []panel         `json:"panels"`
	Raw           json.RawMessage `json:"-"`
}

type templating struct {
	List []variable `json:"list"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
	Definition string          `json:"definition"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct {
	H, W, X, Y int
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	GridPos    *gridPos    `json:"gridPos"`
	Datasource *datasource `json:"datasource"`
	Targets    []target    `json:"targets"`
	Collapsed  bool        `json:"collapsed"`
	Panels     []panel     `json:"panels"`
}

type target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *datasource `json:"datasource"`
	Hide       bool        `json:"hide"`
}

// runDashboard checks Grafana dashboards: valid JSON with a uid, title and schemaVersion; every
// variable used is defined; every panel (rows aside) has a unique id, a place on the 24-column
// grid that overlaps no other panel, a Prometheus datasource (a datasource variable or a uid)
// and at least one target with a refId and an expression; and every expression, with Grafana's
// variables substituted, parses as PromQL and queries only catalogue metrics and labels.
func runDashboard(cataloguePath string, files []string) {
	var p problems
	c := mustCatalogue(cataloguePath, "dashboard", &p)
	for _, file := range files {
		checkDashboard(c, file, &p)
	}
	p.exit("dashboard")
}

func checkDashboard(c *catalogue, file string, p *problems) {
	raw, err := os.ReadFile(file)
	if err != nil {
		p.add("%v", err)
		return
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		p.add("%s: not valid dashboard JSON: %v", file, err)
		return
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		p.add("%s: uid, title and schemaVersion are required", file)
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			p.add("%s: variable %q defined twice", file, v.Name)
		}
		vars[v.Name] = v
	}
	usedVars := map[string]bool{}
	checkDS := func(where string, ds *datasource) {
		if ds == nil {
			p.add("%s: %s: no datasource", file, where)
			return
		}
		if ds.Type != "prometheus" {
			p.add("%s: %s: datasource type %q, want prometheus", file, where, ds.Type)
		}
		if m := varRe.FindStringSubmatch(ds.UID); m != nil {
			name := m[1] + m[2] + m[3]
			usedVars[name] = true
			if v, ok := vars[name]; !ok || v.Type != "datasource" {
				p.add("%s: %s: datasource uid %s is not a datasource variable of the dashboard", file, where, ds.UID)
			}
		} else if ds.UID == "" {
			p.add("%s: %s: datasource without uid", file, where)
		}
	}
	// Variables whose queries reference other variables or a datasource.
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			checkDS(fmt.Sprintf("variable %q", v.Name), v.Datasource)
			for _, m := range varRe.FindAllStringSubmatch(v.Definition, -1) {
				usedVars[m[1]+m[2]+m[3]] = true
			}
		}
	}

	var flat []panel
	for _, pn := range d.Panels {
		flat = append(flat, pn)
		if pn.Type == "row" {
			flat = append(flat, pn.Panels...)
		}
	}
	ids := map[int]string{}
	var placed []panel
	nTargets := 0
	allMetrics := map[string]bool{}
	for _, pn := range flat {
		where := fmt.Sprintf("panel %d %q", pn.ID, pn.Title)
		if pn.ID == 0 {
			p.add("%s: %s: no id", file, where)
		} else if other, dup := ids[pn.ID]; dup {
			p.add("%s: %s: id also used by %q", file, where, other)
		}
		ids[pn.ID] = pn.Title
		if pn.Title == "" {
			p.add("%s: %s: no title", file, where)
		}
		g := pn.GridPos
		if g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			p.add("%s: %s: gridPos missing or off the 24-column grid: %+v", file, where, g)
		} else if pn.Type != "row" || !pn.Collapsed {
			placed = append(placed, pn)
		}
		if pn.Type == "row" {
			if len(pn.Targets) > 0 {
				p.add("%s: %s: a row with targets", file, where)
			}
			continue
		}
		checkDS(where, pn.Datasource)
		if len(pn.Targets) == 0 {
			p.add("%s: %s: no targets", file, where)
		}
		refs := map[string]bool{}
		for _, t := range pn.Targets {
			tw := fmt.Sprintf("%s target %s", where, t.RefID)
			if t.RefID == "" || refs[t.RefID] {
				p.add("%s: %s: missing or repeated refId", file, tw)
			}
			refs[t.RefID] = true
			if t.Datasource != nil {
				checkDS(tw, t.Datasource)
			}
			if strings.TrimSpace(t.Expr) == "" {
				p.add("%s: %s: no expr", file, tw)
				continue
			}
			nTargets++
			expr := t.Expr
			for _, b := range builtinDurations {
				expr = strings.ReplaceAll(expr, b.name, b.value)
			}
			expr = varRe.ReplaceAllStringFunc(expr, func(s string) string {
				m := varRe.FindStringSubmatch(s)
				name := m[1] + m[2] + m[3]
				usedVars[name] = true
				if _, ok := vars[name]; !ok && !strings.HasPrefix(name, "__") {
					p.add("%s: %s: variable $%s is not defined in templating", file, tw, name)
				}
				return "var_" + name
			})
			rep, errs := checkExpr(c, expr)
			for _, e := range errs {
				p.add("%s: %s: %s (expr: %s)", file, tw, e, t.Expr)
			}
			for _, m := range rep.metrics {
				allMetrics[m] = true
			}
		}
	}
	// No two panels on the same cells.
	for i := range placed {
		for j := i + 1; j < len(placed); j++ {
			a, b := placed[i].GridPos, placed[j].GridPos
			if a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H {
				p.add("%s: panels %d %q and %d %q overlap", file, placed[i].ID, placed[i].Title, placed[j].ID, placed[j].Title)
			}
		}
	}
	for name, v := range vars {
		if !usedVars[name] && v.Type != "datasource" {
			p.add("%s: variable %q is defined but not used", file, name)
		}
	}
	var ms []string
	for m := range allMetrics {
		ms = append(ms, m)
	}
	sort.Strings(ms)
	fmt.Printf("  %s: %d panels, %d queries; metrics queried (%d): %s\n", file, len(flat), nTargets, len(ms), strings.Join(ms, " "))
	coverage(c, allMetrics)
}

// coverage prints the catalogue metrics the dashboard does not show (information, not a failure).
func coverage(c *catalogue, used map[string]bool) {
	var missing []string
	for name, m := range c.metrics {
		if name == "up" {
			continue
		}
		shown := used[name]
		if m.kind == "histogram" {
			shown = used[name+"_bucket"] || used[name+"_sum"] || used[name+"_count"]
		}
		if !shown {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		fmt.Printf("  (not on the dashboard: %s)\n", strings.Join(missing, " "))
	}
}
