//! The server's modules import one another one way only: no circle between
//! its top-level modules (`store`, `sqlite`, `http`, `payments`, …), and the
//! store seam and the HTTP edge name no backend. Read from the sources, the
//! way a reviewer would grep `use crate::` file by file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Backends: only the crate root (wiring) and the backends themselves may name them.
const BACKENDS: &[&str] = &["sqlite", "postgres"];
/// The backend-neutral side: the seam, the HTTP edge and what they use.
const NEUTRAL: &[&str] = &[
    "admin",
    "store",
    "http",
    "payments",
    "delivery",
    "error",
    "failpoint",
    "request_id",
    "uploads",
];
/// HTTP's side: its handlers and its error, which maps the store's answers
/// to statuses.
const HTTP: &[&str] = &["http", "error"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `sqlite/admin.rs` → `sqlite`, `store.rs` → `store`; the root files
/// (`lib.rs` wires everything, `main.rs` is another crate) → none.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The top-level modules a file's code names as `crate::name…`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                out.extend(inner.split(',').filter_map(first_ident));
            } else if let Some(name) = first_ident(rest) {
                out.insert(name);
            }
        }
    }
    out
}

fn first_ident(text: &str) -> Option<String> {
    let name: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// module → the other top-level modules it imports, and which file does.
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        let shown = file.strip_prefix(src()).unwrap().display().to_string();
        let entry = edges.entry(from.clone()).or_default();
        for to in named_modules(&text) {
            if to != from && modules.contains(&to) {
                entry.entry(to).or_default().insert(shown.clone());
            }
        }
    }
    edges
}

/// Groups of modules that reach one another (Tarjan's strongly connected
/// components), those of more than one module only.
fn circles(edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            let i = self.index.len();
            self.index.insert(node, i);
            self.low.insert(node, i);
            self.stack.push(node);
            self.on_stack.insert(node);
            let next: Vec<&'a str> = self
                .edges
                .get(node)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            for to in next {
                if !self.index.contains_key(to) {
                    self.visit(to);
                    let low = self.low[node].min(self.low[to]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(to) {
                    let low = self.low[node].min(self.index[to]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut group = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    group.push(top.to_string());
                    if top == node {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in edges.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

#[test]
fn no_module_imports_another_in_a_circle() {
    let edges = graph();
    assert!(
        edges.contains_key("store") && edges.contains_key("sqlite"),
        "the sources were not found under {}",
        src().display()
    );
    let found = circles(&edges);
    let described: Vec<String> = found
        .iter()
        .map(|group| {
            let mut text = group.join(" ↔ ");
            for from in group {
                for (to, files) in &edges[from] {
                    if group.contains(to) {
                        let files: Vec<&str> = files.iter().map(String::as_str).collect();
                        text.push_str(&format!("\n  {from} → {to} in {}", files.join(", ")));
                    }
                }
            }
            text
        })
        .collect();
    assert!(
        found.is_empty(),
        "modules import each other in a circle:\n{}",
        described.join("\n")
    );
}

/// Each import from one of `from` to one of `to`, with the files that make it.
fn imports_between(from: &[&str], to: &[&str]) -> Vec<String> {
    let edges = graph();
    let mut found = Vec::new();
    for module in from {
        for (target, files) in edges.get(*module).into_iter().flatten() {
            if to.contains(&target.as_str()) {
                found.push(format!("{module} → {target} in {files:?}"));
            }
        }
    }
    found
}

#[test]
fn the_store_seam_and_the_http_edge_name_no_backend() {
    let wrong = imports_between(NEUTRAL, BACKENDS);
    assert!(
        wrong.is_empty(),
        "backend-neutral modules import a backend:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_backend_never_names_the_other() {
    let wrong = imports_between(BACKENDS, BACKENDS);
    assert!(
        wrong.is_empty(),
        "a backend imports the other (what both use belongs in store, admin or core):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_store_and_the_backends_answer_their_own_error_not_http_s() {
    let wrong = imports_between(&["store", "sqlite", "postgres", "gates"], HTTP);
    assert!(
        wrong.is_empty(),
        "the store seam or a backend names HTTP's modules (answer `store::StoreError`):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        edges
            .entry(from.into())
            .or_default()
            .insert(to.into(), BTreeSet::new());
    }
    assert_eq!(circles(&edges), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        named_modules("use crate::{store::Store, error::ServiceError};\n// crate::sqlite\nlet x = crate::http::f();"),
        ["error", "http", "store"].into_iter().map(String::from).collect()
    );
}
