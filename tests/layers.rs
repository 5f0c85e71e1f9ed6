//! The crate's module layering, checked on the source: no cycle between top-level modules,
//! `domain` imports nothing else in the crate, `store` imports only `domain`. The picture in
//! docs/architecture.md ("Modules and layers") follows this graph.
//!
//! The graph is read from every `crate::<module>` path (including `use crate::{a::.., b}`
//! groups) in `src/<module>.rs` and `src/<module>/**`, comments excluded. Test code inside a
//! module counts too: a test that reaches upward is a dependency like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without `//` comments (doc comments name modules in prose).
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            // Not inside a string literal on the same line (good enough for this code base:
            // no `"…//…"` literal sits on a line that also names a crate path).
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level names a source refers to through `crate::`.
fn crate_refs(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Names at depth 1 of the group: after `{` and after each `,` at that depth.
            let mut depth = 1;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 1 => {
                        out.insert(ident_at(&group[j..]).to_string());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(after).to_string());
        }
        rest = after;
    }
    out
}

fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            let m = first.trim_end_matches(".rs");
            (m != "lib" && m != "main").then(|| m.to_string())
        })
        .collect();
    let mut g = Graph::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let m = first.trim_end_matches(".rs").to_string();
        if !modules.contains(&m) {
            continue;
        }
        let text = strip_comments(&std::fs::read_to_string(f).expect("read"));
        let refs = g.entry(m.clone()).or_default();
        for r in crate_refs(&text) {
            if r != m && modules.contains(&r) {
                refs.insert(r);
            }
        }
    }
    g
}

/// A cycle, as the list of modules on it, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let at = path.iter().position(|p| p == m).expect("on path");
                let mut c = path[at..].to_vec();
                c.push(m.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for n in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, n, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if let Some(c) = visit(g, m, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_form_no_cycle() {
    let g = module_graph();
    if let Some(c) = find_cycle(&g) {
        panic!(
            "module cycle: {} (make the lower module not import the upper one: move the shared \
             type into `domain`, or invert the dependency with a trait or a channel)",
            c.join(" -> ")
        );
    }
}

#[test]
fn domain_is_a_leaf_and_store_sits_on_it_alone() {
    let g = module_graph();
    assert_eq!(
        g["domain"],
        BTreeSet::new(),
        "domain must import nothing else in the crate"
    );
    assert_eq!(
        g["store"],
        BTreeSet::from(["domain".to_string()]),
        "store must import domain only"
    );
}

#[test]
fn the_checker_sees_references_and_cycles() {
    // The parser: plain paths, groups (nested), and comments ignored.
    let refs = crate_refs(&strip_comments(
        "use crate::a::X;\nuse crate::{b::{c, d}, e, f::G};\n// crate::h\nlet x = crate::i::j();",
    ));
    assert_eq!(
        refs,
        ["a", "b", "e", "f", "i"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    // The cycle finder on a graph with and without a cycle.
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    g.get_mut("c").unwrap().insert("a".into());
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
