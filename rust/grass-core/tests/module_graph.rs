//! The `use crate::…` graph of grass-core's top-level modules is acyclic (STYLE.md §14: one
//! concept per file, layered). Every `crate::path` mention in `src/` (imports, qualified paths,
//! test modules included; comments ignored) is an edge from the file's top-level module to the
//! module it names — a root re-export (`crate::Sjlt`) counts as its defining module. Submodules
//! count as their top-level module (`cuda::ops` → `cuda`), and `super::` stays inside a module.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Source files under `dir`, with their top-level module (`lib` for `lib.rs`).
fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            sources(&path, Some(top.unwrap_or(&stem)), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = top.map_or(stem, str::to_owned);
            out.push((module, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The text without `//` comments.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of every path after `crate::` (each item of a `crate::{a, b::c}` group).
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let preceded = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if preceded.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` or a longer identifier
        }
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0, 0);
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(group[start..j].trim()).to_owned());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(group[start..j].trim()).to_owned());
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest).to_owned());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Root re-exports of `lib.rs`: item name → defining module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let Some(body) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, items) = body.split_once("::").unwrap();
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            map.insert(item.trim().to_owned(), module.trim().to_owned());
        }
    }
    map
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, None, &mut files);
    let lib = files.iter().find(|(m, _)| m == "lib").unwrap().1.clone();
    let items = reexports(&strip_comments(&lib));
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut g = Graph::new();
    for (module, text) in files.iter().filter(|(m, _)| m != "lib") {
        let deps = g.entry(module.clone()).or_default();
        for name in crate_paths(&strip_comments(text)) {
            let target = if modules.contains(&name) {
                name
            } else if let Some(m) = items.get(&name) {
                m.clone()
            } else {
                panic!("`{module}` uses `crate::{name}`, an item defined in lib.rs");
            };
            if &target != module {
                deps.insert(target);
            }
        }
    }
    g
}

/// A cycle of `g`, if any (depth-first search with an explicit path).
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn module_graph_is_acyclic() {
    let g = graph();
    for (m, deps) in &g {
        eprintln!("{m} → {deps:?}");
    }
    assert!(g.len() > 10, "too few modules found: {g:?}");
    if let Some(cycle) = find_cycle(&g) {
        panic!("module cycle: {}", cycle.join(" → "));
    }
    // The layering the crate documents: leaves import nothing from the crate but errors.
    for leaf in ["error", "hash", "simd", "micro"] {
        let deps = &g[leaf];
        assert!(
            deps.iter().all(|d| d == "error" || d == "alloc"),
            "`{leaf}` should be a leaf, imports {deps:?}"
        );
    }
}

#[test]
fn the_checker_sees_cycles() {
    let text = "use crate::{a, b::{c, d}};\nfn f() { crate::e::g(); } // crate::h";
    assert_eq!(crate_paths(&strip_comments(text)), ["a", "b", "e"]);
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "a"]);
}
