//! The crate's modules form layers, each importing only those below it
//! (and its own), with no cycle among them: the architecture README's
//! layout and the design describe, checked against every `crate::` path in
//! the library's code (tests and comments aside).
//!
//! `cargo test --test layers -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top. A module (a top-level file or folder of `src/`) may
/// name modules of its own layer or of layers below; the modules of one
/// layer must not name each other in a circle.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "ids", "codec", "hash", "limits", "sync", "error", "clock", "options",
        ],
    ),
    ("io", &["io"]),
    ("log", &["page", "redo", "wal"]),
    ("buffer", &["buffer"]),
    ("store", &["store", "control", "recovery", "dir"]),
    ("access", &["heap", "btree"]),
    // The catalog is an MVCC table: its rows are versions.
    ("mvcc", &["mvcc", "catalog"]),
    ("engine", &["engine"]),
    ("txn", &["txn"]),
    ("maintenance", &["maintenance"]),
    ("reports", &["integrity", "stat", "salvage"]),
    // Snapshot export and import stand on `Db` and its transactions.
    ("api", &["db", "retry", "snapshot", "lib"]),
    ("modules", &["twopc", "changes", "replication"]),
    // Re-exports of the modules for tests, fuzz targets and the CLI.
    ("internals", &["internals"]),
];

/// `src` with comments, string and character literals blanked and every
/// `#[cfg(test)]` item (a test module, a test-only function) removed.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if rest.starts_with("r\"") || rest.starts_with("r#") {
            let hashes = rest[1..].bytes().take_while(|&c| c == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            i += rest[body..]
                .find(&close)
                .map_or(rest.len(), |e| body + e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            // A character literal ('{', '\n'), not a lifetime.
            let j = rest[1..].find('\'').map_or(rest.len(), |e| e + 2);
            i += if b.get(i + 1) == Some(&b'\\') {
                rest[2..].find('\'').map_or(rest.len(), |e| e + 3)
            } else {
                j
            };
            out.push_str("' '");
        } else if rest.starts_with("#[cfg(test)]") {
            i += "#[cfg(test)]".len() + skip_item(&src[i + "#[cfg(test)]".len()..]);
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of the item at the start of `s`: up to its first `;` at
/// depth 0, or through the braces it opens.
fn skip_item(s: &str) -> usize {
    let cleaned = code_only_shallow(s);
    let mut depth = 0usize;
    for (i, c) in cleaned.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            ';' if depth == 0 => return i + 1,
            _ => {}
        }
    }
    s.len()
}

/// `s` with literals and comments replaced by spaces of the same length,
/// so brace counting sees code only and offsets stay those of `s`.
fn code_only_shallow(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = vec![b' '; b.len()];
    let mut i = 0;
    while i < b.len() {
        let rest = &s[i..];
        let skip = if rest.starts_with("//") {
            rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            rest.find("*/").map_or(rest.len(), |e| e + 2)
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1 - i
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            rest[1..].find('\'').map_or(rest.len(), |e| e + 2).max(3)
        } else {
            out[i] = b[i];
            1
        };
        i += skip.max(1);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The module a file of `src/` belongs to (`None` for the binaries and for
/// test files of their own).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if first == "bin" || rel.file_name()? == "tests.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module → module it names → where (file:line).
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in all {
        let rel = f.strip_prefix(&src).expect("under src");
        let Some(from) = module_of(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).expect("read file");
        let code = code_only(&text);
        let node = g.entry(from.clone()).or_default();
        for (n, line) in code.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let to: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // An item the crate root re-exports (`crate::Error`) is
                // named through the root, the top layer.
                let to = if to.starts_with(|c: char| c.is_ascii_uppercase()) {
                    "lib".to_string()
                } else {
                    to
                };
                if !to.is_empty() && to != from {
                    node.entry(to)
                        .or_insert_with(|| format!("{}:{}", rel.display(), n + 1));
                }
            }
        }
    }
    g
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// A cycle among `g`'s modules, if there is one.
fn cycle(g: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeMap<String, String>>,
        m: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut c = path[at..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for to in g.get(m).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(g, to, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_imports_only_its_own_layer_and_those_below() {
    let g = graph();
    for (layer, modules) in LAYERS {
        println!("{layer}:");
        for m in *modules {
            let names: Vec<&str> = g
                .get(*m)
                .into_iter()
                .flat_map(|e| e.keys())
                .map(String::as_str)
                .collect();
            println!("  {m} -> {}", names.join(" "));
        }
    }
    let mut wrong = Vec::new();
    for (from, edges) in &g {
        let Some(lf) = layer_of(from) else {
            wrong.push(format!("module `{from}` is in no layer (add it to LAYERS)"));
            continue;
        };
        for (to, at) in edges {
            match layer_of(to) {
                None => wrong.push(format!(
                    "`{from}` names `{to}`, which is in no layer ({at})"
                )),
                Some(lt) if lt > lf => wrong.push(format!(
                    "`{from}` ({}) names `{to}` ({}), a layer above it, at {at}",
                    LAYERS[lf].0, LAYERS[lt].0
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_modules_name_each_other_in_a_circle() {
    let g = graph();
    if let Some(c) = cycle(&g) {
        let steps: Vec<String> = c
            .windows(2)
            .map(|w| format!("{} -> {} ({})", w[0], w[1], g[&w[0]][&w[1]]))
            .collect();
        panic!("a cycle: {}", steps.join(", "));
    }
}
