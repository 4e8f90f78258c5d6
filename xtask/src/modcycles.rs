//! Import circles between the top-level modules of a crate: the layer rule of
//! docs/ARCHITECTURE.md, checked by `cargo xtask test` (and `cargo xtask modcycles`).
//!
//! A top-level module is a file `src/X.rs` or a folder `src/X/` (`lib.rs` and `main.rs` are
//! the crate root, not modules). Module `A` imports `B` when a file of `A` names `crate::B`
//! (also inside `use crate::{B, ..}` groups) or reaches `B` through `super::` from a module
//! one level below the root. Comments are skipped; inline `mod x { .. }` blocks count for
//! `super::`. This is the same reading as `../shared/tools/modcycles.py`, in Rust.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::Context as _;

/// The import graph of one crate's top-level modules and the circles in it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every top-level module with the top-level modules it imports.
    pub imports: BTreeMap<String, BTreeSet<String>>,
    /// Each circle (strongly connected set of two or more modules), sorted.
    pub circles: Vec<Vec<String>>,
}

impl Report {
    pub fn edge_count(&self) -> usize {
        self.imports.values().map(BTreeSet::len).sum()
    }
}

/// Reads every `.rs` file under `src` and finds the circles between its top-level modules.
pub fn check(src: &Path) -> anyhow::Result<Report> {
    let mut files = Vec::new();
    collect_files(src, src, &mut files)?;
    let modules: BTreeSet<String> = std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            match name.strip_suffix(".rs") {
                Some(stem) if !is_dir && stem != "lib" && stem != "main" => Some(stem.to_owned()),
                _ if is_dir => Some(name),
                _ => None,
            }
        })
        .collect();
    let sources: Vec<(Vec<String>, String)> = files
        .into_iter()
        .map(|(path, rel)| {
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))
                .map(|text| (rel, text))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(analyse(&modules, &sources))
}

/// The files under `dir` with their module path from the crate root (`a/b.rs` -> `[a, b]`,
/// `a/mod.rs` -> `[a]`, `lib.rs` -> `[]`).
fn collect_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(std::path::PathBuf, Vec<String>)>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under the root");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let last = parts.pop().expect("a file name");
            let stem = last.trim_end_matches(".rs");
            let at_root = parts.is_empty();
            if !(stem == "mod" || at_root && (stem == "lib" || stem == "main")) {
                parts.push(stem.to_owned());
            }
            out.push((path, parts));
        }
    }
    Ok(())
}

/// The report for `modules` given each file's module path and text.
pub fn analyse(modules: &BTreeSet<String>, files: &[(Vec<String>, String)]) -> Report {
    let mut imports: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (path, text) in files {
        let Some(me) = path.first().filter(|m| modules.contains(*m)) else {
            continue;
        };
        for target in references(path, text) {
            if &target != me && modules.contains(&target) {
                imports.get_mut(me).expect("a module").insert(target);
            }
        }
    }
    let circles = circles(&imports);
    Report { imports, circles }
}

/// The text without `//` comments (line and doc comments), `/* */` blocks and the insides
/// of string literals (raw ones too) and of char literals that hold a brace or a quote, so
/// that braces count blocks and nothing quoted is read as a path.
fn strip_comments(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        let after_ident = i > 0 && is_ident(c[i - 1]);
        match (c[i], next) {
            ('/', Some('/')) => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            ('/', Some('*')) => {
                i += 2;
                while i < c.len() && !(c[i - 1] == '*' && c[i] == '/') {
                    i += 1;
                }
            }
            ('r', Some('#' | '"')) if !after_ident => {
                let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
                let open = i + 1 + hashes;
                if c.get(open) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                out.push('"');
                i = open + 1;
                while i < c.len() && !c[i..].iter().take(close.len()).copied().eq(close.chars()) {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                out.push('"');
                i += close.len() - 1;
            }
            ('"', _) => {
                out.push('"');
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        blank(&mut out, c[i]);
                        i += 1;
                    }
                    if i < c.len() {
                        blank(&mut out, c[i]);
                    }
                    i += 1;
                }
                out.push('"');
            }
            ('\'', Some('{' | '}' | '"')) if c.get(i + 2) == Some(&'\'') => {
                out.push_str("'  ");
                i += 2;
            }
            ('\'', Some('\\')) => {
                // An escaped char literal ('\'', '\"', '\n', '\u{..}'): up to its closing quote.
                out.push('\'');
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    out.push(' ');
                    i += 1;
                }
                out.push('\'');
            }
            (ch, _) => out.push(ch),
        }
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a file at module path `path` names.
fn references(path: &[String], text: &str) -> BTreeSet<String> {
    let text = strip_comments(text);
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    // Inline `mod x {` blocks open at these brace depths.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        let word_start = i == 0 || !is_ident(b[i - 1] as char);
        if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth = depth.saturating_sub(1);
            if inline.last() == Some(&depth) {
                inline.pop();
            }
        } else if word_start && text[i..].starts_with("mod ") {
            let rest = &text[i + 4..];
            let name_len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            if rest[name_len..].trim_start().starts_with('{') {
                inline.push(depth);
            }
        } else if word_start && text[i..].starts_with("crate::") {
            let rest = &text[i + 7..];
            if let Some(group) = rest.strip_prefix('{') {
                out.extend(group_heads(group));
            } else {
                out.extend(leading_ident(rest));
            }
        } else if word_start && text[i..].starts_with("super::") {
            let mut rest = &text[i..];
            let mut ups = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                ups += 1;
                rest = r;
            }
            // Where `super` lands: the file's module and its inline modules, `ups` levels up.
            let level = path.len() + inline.len();
            if level == ups {
                if let Some(group) = rest.strip_prefix('{') {
                    out.extend(group_heads(group));
                } else {
                    out.extend(leading_ident(rest));
                }
            }
            i += 7 * ups;
            continue;
        }
        i += 1;
    }
    out
}

fn leading_ident(s: &str) -> Option<String> {
    let n = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    (n > 0).then(|| s[..n].to_owned())
}

/// The first identifier of each item at the first level of a `{ .. }` group (`s` starts
/// right after the opening brace).
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut item_start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && depth == 0 && !c.is_whitespace() => {
                item_start = false;
                heads.extend(leading_ident(&s[i..]));
            }
            _ => {}
        }
    }
    heads
}

/// The strongly connected sets of two or more modules (Tarjan), each sorted.
fn circles(imports: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        imports: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            for w in &self.imports[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut set = Vec::new();
                while let Some(w) = self.stack.pop() {
                    set.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if set.len() > 1 {
                    set.sort();
                    self.out.push(set);
                }
            }
        }
    }
    let mut walk = Walk {
        imports,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in imports.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out.sort();
    walk.out
}

/// `cargo xtask modcycles`: checks each crate's `src`, prints the circles, fails on any.
pub fn run(root: &Path, crates: &[&str]) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for krate in crates {
        let src = root.join(krate).join("src");
        let report = check(&src)?;
        for c in &report.circles {
            eprintln!("{krate}: circle: {}", c.join(" <-> "));
        }
        eprintln!(
            "{krate}: {} top-level modules, {} module imports, {} circles",
            report.imports.len(),
            report.edge_count(),
            report.circles.len()
        );
        if !report.circles.is_empty() {
            failed.push(*krate);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "import circles between top-level modules in {} (the layer rule: docs/ARCHITECTURE.md)",
            failed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(files: &[(&str, &str)]) -> Report {
        let modules: BTreeSet<String> = files
            .iter()
            .filter_map(|(p, _)| p.split('/').next())
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        let files: Vec<(Vec<String>, String)> = files
            .iter()
            .map(|(p, t)| {
                let path = p
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                (path, (*t).to_owned())
            })
            .collect();
        analyse(&modules, &files)
    }

    fn edges(r: &Report, m: &str) -> Vec<String> {
        r.imports[m].iter().cloned().collect()
    }

    #[test]
    fn paths_groups_and_nested_groups() {
        let r = report(&[
            (
                "a",
                "use crate::{b, c::{x, y}, d::z as w};\nfn f() { crate::e::g(); }",
            ),
            ("b", ""),
            ("c", ""),
            ("d", ""),
            ("e", ""),
        ]);
        assert_eq!(edges(&r, "a"), ["b", "c", "d", "e"]);
        assert!(r.circles.is_empty());
    }

    #[test]
    fn comments_strings_and_self_references_do_not_count() {
        let r = report(&[
            (
                "a",
                "// use crate::b;\n/* crate::b */ /// crate::b\nuse crate::a::x;\n\
                 const S: &str = \"crate::b {\"; const R: &str = r#\"crate::b \"}\"#;",
            ),
            (
                "b",
                "//! crate::a\nfn f(c: char) -> bool { c == '{' || c == '\\'' }",
            ),
        ]);
        assert!(edges(&r, "a").is_empty() && edges(&r, "b").is_empty());
    }

    #[test]
    fn braces_in_literals_do_not_end_an_inline_module() {
        let r = report(&[
            (
                "b",
                "mod tests { fn f() { let _ = ('}', \"}\"); } use super::super::c; }",
            ),
            ("c", ""),
        ]);
        assert_eq!(edges(&r, "b"), ["c"]);
    }

    #[test]
    fn super_reaches_the_root_only_from_the_first_level() {
        let r = report(&[
            // a/mod.rs: `super` is the crate root.
            ("a", "use super::b;"),
            // a/inner.rs: `super` is `a`, `super::super` the root.
            ("a/inner", "use super::x;\nuse super::super::c;"),
            // An inline module one level down climbs one more.
            ("b", "mod tests { use super::*; use super::super::d; }"),
            ("c", ""),
            ("d", ""),
        ]);
        assert_eq!(edges(&r, "a"), ["b", "c"]);
        assert_eq!(edges(&r, "b"), ["d"]);
    }

    #[test]
    fn circles_are_found_with_every_member() {
        let r = report(&[
            ("a", "use crate::b;"),
            ("b", "use crate::c;"),
            ("c", "use crate::a; use crate::d;"),
            ("d", "use crate::e;"),
            ("e", "use crate::d;"),
            ("f", "use crate::a;"),
        ]);
        assert_eq!(
            r.circles,
            [vec!["a", "b", "c"], vec!["d", "e"]]
                .map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>())
        );
        assert_eq!(r.edge_count(), 7);
    }

    #[test]
    fn file_paths_become_module_paths() {
        let dir = std::env::temp_dir().join(format!("xtask-modcycles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b")).unwrap();
        std::fs::write(dir.join("lib.rs"), "pub mod a; pub mod b;").unwrap();
        std::fs::write(dir.join("a.rs"), "use crate::b::x;").unwrap();
        std::fs::write(dir.join("b/mod.rs"), "pub mod x;").unwrap();
        std::fs::write(dir.join("b/x.rs"), "use super::super::a;").unwrap();
        let r = check(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(edges(&r, "a"), ["b"]);
        assert_eq!(edges(&r, "b"), ["a"]);
        assert_eq!(r.circles, [vec!["a".to_owned(), "b".to_owned()]]);
    }
}
