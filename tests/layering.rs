//! The import graph of `src/` has no cycles between folders (ARCHITECTURE.md, "Layering").
//!
//! Builds the file-level graph of `crate::`, `super::`, `self::` and child-module paths
//! (comments, strings and `#[cfg(test)]` modules left out), finds its strongly connected
//! components and fails on every cycle that leaves one folder. A parent `mod.rs` and its own
//! files may refer to each other (a child using a type its parent defines is ordinary Rust);
//! anything larger is an import circle and the floors no longer hold.
//!
//! `cargo test --test layering -- --nocapture` prints the graph's size and any cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

#[test]
fn no_import_cycles_between_folders() {
    // ATCR_LAYERING_SRC points the check at another tree (e.g. an old commit's `src/`).
    let src = std::env::var_os("ATCR_LAYERING_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let graph = ImportGraph::build(&src);
    let cycles = graph.cycles();
    let edges: usize = graph.edges.values().map(BTreeSet::len).sum();
    println!(
        "{} files, {} import edges, {} cycles",
        graph.files.len(),
        edges,
        cycles.len()
    );
    let mut bad = Vec::new();
    for cycle in &cycles {
        let names: Vec<String> = cycle.iter().map(|m| graph.display(m)).collect();
        let folders: BTreeSet<PathBuf> = names.iter().map(|n| folder_of(Path::new(n))).collect();
        if folders.len() == 1 {
            println!("allowed (one folder): {}", names.join(" <-> "));
        } else {
            bad.push(format!("  {} files: {}", names.len(), names.join(", ")));
        }
    }
    assert!(
        bad.is_empty(),
        "import cycles across folders:\n{}",
        bad.join("\n")
    );
    // The scan must have seen real code, or the test proves nothing.
    assert!(
        graph.files.len() > 50 && edges > 200,
        "the scan found too little"
    );
}

/// `src/a/mod.rs` belongs to folder `src/a` like its children; `src/a/b.rs` too. A module
/// file with its own child folder (`src/a/b.rs` + `src/a/b/c.rs`, the non-`mod.rs` layout)
/// belongs to that child folder: parent and children are one module.
fn folder_of(file: &Path) -> PathBuf {
    let own_children = file.with_extension("");
    if file.extension().is_some() && own_children.is_dir() {
        return own_children;
    }
    file.parent().unwrap_or(file).to_path_buf()
}

#[test]
fn a_planted_cycle_is_found() {
    let dir = std::env::temp_dir().join(format!("atcr-layering-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("low")).unwrap();
    std::fs::create_dir_all(dir.join("high")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod low; pub mod high;").unwrap();
    std::fs::write(dir.join("low/mod.rs"), "pub mod x;\nuse x::X;").unwrap();
    // A grouped import, a comment and a string that must not count.
    std::fs::write(
        dir.join("low/x.rs"),
        "use crate::{high::{H, self}};\n// crate::nothing\nconst S: &str = \"crate::low\";",
    )
    .unwrap();
    std::fs::write(dir.join("high/mod.rs"), "pub fn h() { super::low::x::X; }").unwrap();
    let graph = ImportGraph::build(&dir);
    let cycles = graph.cycles();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    let names: BTreeSet<String> = cycles[0].iter().map(|m| m.join("::")).collect();
    assert_eq!(
        names,
        BTreeSet::from(["high".to_string(), "low::x".to_string()])
    );
}

struct ImportGraph {
    /// Module path -> file (relative to `src/`).
    files: BTreeMap<ModPath, PathBuf>,
    edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

impl ImportGraph {
    fn build(src: &Path) -> ImportGraph {
        let mut files = BTreeMap::new();
        collect_files(src, src, &mut files);
        files.retain(|_, f| f != Path::new("main.rs")); // the binary is its own crate
        let mut test_only = BTreeSet::new();
        let mut sources = BTreeMap::new();
        for (module, file) in &files {
            let (code, test_children) = strip(&std::fs::read_to_string(src.join(file)).unwrap());
            for child in test_children {
                let mut m = module.clone();
                m.push(child);
                test_only.insert(m);
            }
            sources.insert(module.clone(), code);
        }
        files.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
        let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        for module in files.keys() {
            for path in paths(&sources[module]) {
                let Some(absolute) = absolute(module, &path, &files) else {
                    continue;
                };
                if let Some(target) = resolve(&absolute, &files) {
                    if &target != module {
                        edges.entry(module.clone()).or_default().insert(target);
                    }
                }
            }
        }
        ImportGraph { files, edges }
    }

    fn display(&self, module: &ModPath) -> String {
        format!("src/{}", self.files[module].display())
    }

    /// Strongly connected components with more than one file (Tarjan).
    fn cycles(&self) -> Vec<Vec<ModPath>> {
        struct Tarjan<'a> {
            graph: &'a ImportGraph,
            index: BTreeMap<&'a ModPath, usize>,
            low: BTreeMap<&'a ModPath, usize>,
            stack: Vec<&'a ModPath>,
            on_stack: BTreeSet<&'a ModPath>,
            out: Vec<Vec<ModPath>>,
        }
        impl<'a> Tarjan<'a> {
            fn visit(&mut self, v: &'a ModPath) {
                let n = self.index.len();
                self.index.insert(v, n);
                self.low.insert(v, n);
                self.stack.push(v);
                self.on_stack.insert(v);
                for w in self.graph.edges.get(v).into_iter().flatten() {
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let lw = self.low[w];
                        let lv = self.low.get_mut(v).unwrap();
                        *lv = (*lv).min(lw);
                    } else if self.on_stack.contains(w) {
                        let iw = self.index[w];
                        let lv = self.low.get_mut(v).unwrap();
                        *lv = (*lv).min(iw);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        self.on_stack.remove(w);
                        component.push(w.clone());
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort();
                        self.out.push(component);
                    }
                }
            }
        }
        let mut t = Tarjan {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            out: Vec::new(),
        };
        for v in self.files.keys() {
            if !t.index.contains_key(v) {
                t.visit(v);
            }
        }
        t.out
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeMap<ModPath, PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let mut module: ModPath = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let last = module.pop().unwrap();
            match last.as_str() {
                "mod.rs" | "lib.rs" | "main.rs" => {}
                other => module.push(other.trim_end_matches(".rs").to_string()),
            }
            out.insert(module, rel);
        }
    }
}

/// The code without comments, string/char literals and `#[cfg(test)]` items; also the names
/// of child modules declared `#[cfg(test)] mod name;` (test-only files).
fn strip(text: &str) -> (String, Vec<String>) {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_char(prev(&b, i)) {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only literals are skipped.
            if next == Some('\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    remove_test_items(&out)
}

fn prev(b: &[char], i: usize) -> char {
    if i == 0 {
        ' '
    } else {
        b[i - 1]
    }
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn remove_test_items(code: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_children = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        // Skip further attributes, then one item: `mod x;`, `mod x { .. }`, `use ..;`, `fn ..{..}`.
        let mut item = after;
        while item.starts_with("#[") {
            item = item[item.find(']').map_or(item.len(), |e| e + 1)..].trim_start();
        }
        if let Some(name) = item.strip_prefix("mod ").map(|r| r.trim_start()) {
            let ident: String = name.chars().take_while(|&c| ident_char(c)).collect();
            if name[ident.len()..].trim_start().starts_with(';') {
                test_children.push(ident);
            }
        }
        let end = item_end(item);
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, test_children)
}

/// Byte length of the item at the start of `s`: up to its `;` or its balanced `{ .. }`.
fn item_end(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            ';' if depth == 0 => return i + 1,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// Every path in the code that starts with a module keyword or identifier followed by `::`,
/// with `use` groups (`a::{b, c::{d, self}}`) expanded.
fn paths(code: &str) -> Vec<ModPath> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if ident_char(chars[i]) && (i == 0 || !(ident_char(chars[i - 1]) || chars[i - 1] == ':')) {
            let (ident, end) = read_ident(&chars, i);
            if chars.get(end) == Some(&':') && chars.get(end + 1) == Some(&':') {
                let mut found = Vec::new();
                let after = read_tree(&chars, end + 2, vec![ident], &mut found);
                out.extend(found);
                i = after.max(end + 2);
                continue;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn read_ident(chars: &[char], start: usize) -> (String, usize) {
    let mut end = start;
    while end < chars.len() && ident_char(chars[end]) {
        end += 1;
    }
    (chars[start..end].iter().collect(), end)
}

fn skip_ws(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Reads the rest of a path after `prefix::` at `i`; pushes every complete path.
fn read_tree(chars: &[char], i: usize, prefix: ModPath, out: &mut Vec<ModPath>) -> usize {
    let i = skip_ws(chars, i);
    if chars.get(i) == Some(&'{') {
        let mut j = i + 1;
        loop {
            j = skip_ws(chars, j);
            match chars.get(j) {
                None => return j,
                Some('}') => return j + 1,
                Some(',') => j += 1,
                Some(c) if ident_char(*c) => {
                    let (ident, end) = read_ident(chars, j);
                    let mut p = prefix.clone();
                    if ident != "self" {
                        p.push(ident);
                    }
                    let e = skip_ws(chars, end);
                    if chars.get(e) == Some(&':') && chars.get(e + 1) == Some(&':') {
                        j = read_tree(chars, e + 2, p, out);
                    } else {
                        out.push(p);
                        j = end;
                        // `as Alias`
                        let e = skip_ws(chars, j);
                        if chars[e..].starts_with(&['a', 's', ' ']) {
                            let (_, alias_end) = read_ident(chars, skip_ws(chars, e + 3));
                            j = alias_end;
                        }
                    }
                }
                Some(_) => j += 1, // `*` and anything unexpected
            }
        }
    }
    if chars.get(i) == Some(&'*') {
        out.push(prefix);
        return i + 1;
    }
    if i < chars.len() && ident_char(chars[i]) {
        let (ident, end) = read_ident(chars, i);
        let mut p = prefix;
        p.push(ident);
        if chars.get(end) == Some(&':') && chars.get(end + 1) == Some(&':') {
            return read_tree(chars, end + 2, p, out);
        }
        out.push(p);
        return end;
    }
    out.push(prefix);
    i
}

/// The absolute module path a written path points at, if it is a path into the crate.
fn absolute(
    module: &ModPath,
    path: &ModPath,
    files: &BTreeMap<ModPath, PathBuf>,
) -> Option<ModPath> {
    let mut segments = path.iter().peekable();
    // The module a `self`/`super` chain starts from: for a non-mod.rs file `a/b.rs` that is
    // `a::b` itself.
    let mut base = module.clone();
    let first = segments.peek()?.as_str();
    match first {
        "crate" => {
            segments.next();
            base.clear();
        }
        "self" | "super" => {
            while let Some(s) = segments.peek() {
                match s.as_str() {
                    "self" => {}
                    "super" => {
                        base.pop()?;
                    }
                    _ => break,
                }
                segments.next();
            }
        }
        _ => {
            // A child module named without `self::` (2018 paths), e.g. `use store::X;` in a
            // mod.rs, or in a non-mod.rs file, one of its own inline-declared children.
            let mut child = module.clone();
            child.push(first.to_string());
            if !files.contains_key(&child) {
                return None;
            }
        }
    }
    base.extend(segments.cloned());
    Some(base)
}

/// The file that defines the longest prefix of `path`.
fn resolve(path: &ModPath, files: &BTreeMap<ModPath, PathBuf>) -> Option<ModPath> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| files.contains_key(p))
}
