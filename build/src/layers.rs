//! The core's layering check: no import circle among the ring-0 binary's
//! modules (`microvisor/src`), which `lint` runs.
//!
//! The core is layered — `arch` at the bottom, the kernel objects above
//! it, the kernel table above them, the operations on top (`docs/CORE.md`
//! has the map) — and the check keeps it so: every module declared with
//! `mod NAME;` in `src/main.rs` is a node, every path in its files that
//! leads to another top-level module an edge — `crate::NAME`, each entry
//! of a group `crate::{a, b::c}`, and `super::`/`self::` paths resolved
//! from the file's place in the module tree (`super::super::kernel` in
//! `object/vm.rs`), with comments, strings and character literals left out
//! — and a cycle is reported with the modules on it. The host-tested library (`src/lib.rs`) is one crate the
//! binary uses; its own modules are not checked here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

/// Which top-level modules each module's code names through `crate::`.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The modules `main` declares (`mod NAME;`).
pub fn declared_modules(main: &str) -> Vec<String> {
    main.lines()
        .filter_map(|line| {
            let line = line.split("//").next().unwrap_or("").trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))?;
            let name = rest.strip_suffix(';')?.trim();
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                .then(|| name.to_string())
        })
        .collect()
}

/// One token of Rust code, as far as paths need: comments, string and
/// character literals, lifetimes and numbers are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `::`
    PathSeparator,
    Punctuation(char),
}

/// The tokens of `code`. Comments (`//` to the end of the line, nested
/// `/* */`), string literals (with escapes; raw strings `r#"..."#`, byte
/// and C strings), character literals and lifetimes are skipped, so that a
/// `//` or `crate::` inside a string neither hides nor makes a path.
fn tokens(code: &str) -> Vec<Token> {
    let characters: Vec<char> = code.chars().collect();
    let at = |index: usize| characters.get(index).copied().unwrap_or('\0');
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut index = 0;
    while index < characters.len() {
        let c = characters[index];
        if c == '/' && at(index + 1) == '/' {
            while index < characters.len() && characters[index] != '\n' {
                index += 1;
            }
        } else if c == '/' && at(index + 1) == '*' {
            let mut depth = 0;
            while index < characters.len() {
                if at(index) == '/' && at(index + 1) == '*' {
                    depth += 1;
                    index += 2;
                } else if at(index) == '*' && at(index + 1) == '/' {
                    depth -= 1;
                    index += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    index += 1;
                }
            }
        } else if c == '"' {
            index = skip_string(&characters, index + 1);
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if at(index + 1) == '\\' {
                // Past the quote, the backslash and the escaped character.
                index += 3;
                while index < characters.len() && characters[index] != '\'' {
                    index += 1;
                }
                index += 1;
            } else if at(index + 2) == '\'' {
                index += 3;
            } else {
                index += 1;
                while is_word(at(index)) {
                    index += 1;
                }
            }
        } else if is_word(c) {
            let begin = index;
            while is_word(at(index)) {
                index += 1;
            }
            let word: String = characters[begin..index].iter().collect();
            let raw = matches!(word.as_str(), "r" | "br" | "cr");
            let hashes_then_quote =
                at(index) == '"' || (at(index) == '#' && matches!(at(index + 1), '#' | '"'));
            if raw && hashes_then_quote {
                index = skip_raw_string(&characters, index);
            } else if raw && at(index) == '#' {
                // A raw identifier, r#name: the name is the word.
                index += 1;
            } else if matches!(word.as_str(), "b" | "c") && at(index) == '"' {
                index = skip_string(&characters, index + 1);
            } else if matches!(word.as_str(), "b") && at(index) == '\'' {
                // A byte literal, b'x': read as a character literal next.
            } else if !begin_is_digit(&word) {
                found.push(Token::Word(word));
            }
        } else if c == ':' && at(index + 1) == ':' {
            found.push(Token::PathSeparator);
            index += 2;
        } else {
            if !c.is_whitespace() {
                found.push(Token::Punctuation(c));
            }
            index += 1;
        }
    }
    found
}

fn begin_is_digit(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
}

/// The index after a string whose contents start at `index` (after `"`).
fn skip_string(characters: &[char], mut index: usize) -> usize {
    while index < characters.len() {
        match characters[index] {
            '\\' => index += 2,
            '"' => return index + 1,
            _ => index += 1,
        }
    }
    index
}

/// The index after a raw string whose `#`s or opening `"` are at `index`.
fn skip_raw_string(characters: &[char], mut index: usize) -> usize {
    let mut hashes = 0;
    while characters.get(index) == Some(&'#') {
        hashes += 1;
        index += 1;
    }
    index += 1; // the opening quote
    while index < characters.len() {
        if characters[index] == '"'
            && (1..=hashes).all(|offset| characters.get(index + offset) == Some(&'#'))
        {
            return index + 1 + hashes;
        }
        index += 1;
    }
    index
}

/// The module path of a file below the binary's source directory:
/// `kernel.rs` is `[kernel]`, `object/mod.rs` is `[object]`,
/// `object/component.rs` is `[object, component]`.
pub fn module_path(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

/// The top-level modules (of those in `modules`) that `code` names through
/// a path from the crate root: `crate::NAME`, every top-level entry of a
/// group (`use crate::{a, b::c, d};`), and `super::` and `self::` paths
/// resolved from the file's module path `module` (so `super::super::kernel`
/// in `object/vm.rs` names `kernel`), inline `mod NAME { ... }` blocks
/// included. Comments and literals are left out ([`tokens`]).
pub fn references(code: &str, module: &[String], modules: &[String]) -> BTreeSet<String> {
    let tokens = tokens(code);
    let mut found = BTreeSet::new();
    // The module each open brace is in: inline modules push their name.
    let mut scopes: Vec<Option<String>> = Vec::new();
    let mut pending_module: Option<String> = None;
    let current = |scopes: &[Option<String>]| -> Vec<String> {
        let mut path = module.to_vec();
        path.extend(scopes.iter().flatten().cloned());
        path
    };
    let mut index = 0;
    while index < tokens.len() {
        match &tokens[index] {
            Token::Word(word) if word == "mod" => {
                if let Some(Token::Word(name)) = tokens.get(index + 1) {
                    pending_module = Some(name.clone());
                }
            }
            Token::Punctuation('{') => scopes.push(pending_module.take()),
            Token::Punctuation('}') => {
                scopes.pop();
            }
            Token::Punctuation(';') => pending_module = None,
            Token::Word(word)
                if matches!(word.as_str(), "crate" | "super" | "self")
                    && tokens.get(index + 1) == Some(&Token::PathSeparator)
                    && (index == 0 || tokens[index - 1] != Token::PathSeparator) =>
            {
                let mut base = current(&scopes);
                let mut next = index;
                // Resolve the leading crate/super/self segments.
                loop {
                    match &tokens[next] {
                        Token::Word(word) if word == "crate" => base.clear(),
                        Token::Word(word) if word == "super" => {
                            base.pop();
                        }
                        Token::Word(word) if word == "self" => {}
                        _ => break,
                    }
                    if tokens.get(next + 1) != Some(&Token::PathSeparator) {
                        break;
                    }
                    next += 2;
                }
                if let Some(top) = base.first() {
                    found.insert(top.clone());
                } else {
                    found.extend(first_segments(&tokens[next..]));
                }
                index = next;
                continue;
            }
            _ => {}
        }
        index += 1;
    }
    found.retain(|name| modules.contains(name));
    found
}

/// The first segments of the path or group that starts `tokens`: `kernel`
/// for `kernel::with`, `a` and `d` for `{a, b::c, d}` (and `b`).
fn first_segments(tokens: &[Token]) -> Vec<String> {
    match tokens.first() {
        Some(Token::Word(word)) => vec![word.clone()],
        Some(Token::Punctuation('{')) => {
            let mut names = Vec::new();
            let mut depth = 0;
            let mut item_start = true;
            for token in tokens {
                match token {
                    Token::Punctuation('{') => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    Token::Punctuation('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Punctuation(',') if depth == 1 => item_start = true,
                    Token::Word(word) if item_start && depth == 1 => {
                        names.push(word.clone());
                        item_start = false;
                    }
                    _ => item_start = false,
                }
            }
            names
        }
        _ => Vec::new(),
    }
}

/// A cycle in `graph`, as the modules on it (the first repeated at the
/// end), or `None`.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The module graph of the core's binary in `source` (`microvisor/src`).
pub fn core_graph(source: &Path) -> Result<Graph> {
    let main = std::fs::read_to_string(source.join("main.rs"))
        .with_context(|| format!("could not read {}", source.join("main.rs").display()))?;
    let modules = declared_modules(&main);
    let mut graph = Graph::new();
    for module in &modules {
        let mut edges = BTreeSet::new();
        let file = source.join(format!("{module}.rs"));
        let directory = source.join(module);
        let mut files = Vec::new();
        if file.is_file() {
            files.push(file);
        }
        if directory.is_dir() {
            collect_rust_files(&directory, &mut files)?;
        }
        for path in files {
            let code = std::fs::read_to_string(&path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let relative = path.strip_prefix(source).unwrap_or(&path);
            edges.extend(references(&code, &module_path(relative), &modules));
        }
        edges.remove(module);
        graph.insert(module.clone(), edges);
    }
    Ok(graph)
}

fn collect_rust_files(directory: &Path, files: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(directory)
        .with_context(|| format!("could not list {}", directory.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            collect_rust_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// Checks the core in `source`; the error names the circle.
pub fn check_core(source: &Path) -> Result<()> {
    if let Some(cycle) = find_cycle(&core_graph(source)?) {
        anyhow::bail!(
            "the core's modules import each other in a circle: {} (docs/CORE.md: each layer uses only those below it)",
            cycle.join(" -> ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges
            .iter()
            .map(|(from, to)| (from.to_string(), to.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    /// The modules `code` in the file at `file` refers to, of the core's.
    fn found(code: &str, file: &str) -> Vec<String> {
        let modules = names(&["arch", "kernel", "object", "trap", "syscall"]);
        references(code, &module_path(Path::new(file)), &modules)
            .into_iter()
            .collect()
    }

    #[test]
    fn modules_and_references_are_read_from_code_not_comments() {
        let main = "mod arch;\npub mod kernel;\nmod trap; // traps\nuse core::fmt;\nmod tests {\n";
        assert_eq!(declared_modules(main), ["arch", "kernel", "trap"]);
        let code = "use crate::arch::cpu;\n// crate::trap is above us\nlet k = crate::kernel::with(); //! crate::trap\nuse crate::karnel;\n/* crate::syscall /* nested */ crate::syscall */";
        assert_eq!(found(code, "lifecycle.rs"), ["arch", "kernel"]);
    }

    #[test]
    fn group_imports_name_each_top_level_entry() {
        assert_eq!(
            found("use crate::{kernel, trap};", "arch/cpu.rs"),
            ["kernel", "trap"]
        );
        assert_eq!(
            found(
                "use crate::{\n    arch::{cpu, memory::Tables},\n    object::vm::Vm,\n    trap,\n};",
                "syscall.rs"
            ),
            ["arch", "object", "trap"]
        );
        // `memory` is inside `arch`'s group, not a top-level module named.
        assert_eq!(
            found("use crate::arch::{kernel, trap};", "syscall.rs"),
            ["arch"]
        );
    }

    #[test]
    fn super_paths_resolve_from_the_files_place_in_the_tree() {
        assert_eq!(module_path(Path::new("object/mod.rs")), ["object"]);
        assert_eq!(
            module_path(Path::new("object/component.rs")),
            ["object", "component"]
        );
        // From object/vm.rs, super is `object` (itself) and super::super the root.
        assert_eq!(
            found("use super::super::kernel::with;", "object/vm.rs"),
            ["kernel"]
        );
        assert_eq!(
            found("use super::super::{kernel, trap};", "object/vm.rs"),
            ["kernel", "trap"]
        );
        assert_eq!(
            found("use super::capability::Table;", "object/vm.rs"),
            ["object"]
        );
        assert_eq!(found("use super::kernel;", "object/mod.rs"), ["kernel"]);
        assert_eq!(found("self::super::trap::x();", "kernel.rs"), ["trap"]);
        // An inline module is one level further down: there `super::trap`
        // is `kernel::trap`, and `super::super::syscall` the top-level one.
        let inline = "mod tests {\n    use super::trap;\n}\nuse super::arch;";
        assert_eq!(found(inline, "kernel.rs"), ["arch", "kernel"]);
        let inline = "mod tests {\n    use super::super::syscall;\n}\nfn f() {}";
        assert_eq!(found(inline, "kernel.rs"), ["syscall"]);
    }

    #[test]
    fn strings_and_characters_neither_hide_nor_make_paths() {
        let url = "log!(\"see http://x\"); crate::kernel::with();";
        assert_eq!(found(url, "trap.rs"), ["kernel"]);
        let quoted = "let a = \"crate::trap \\\" //\"; let b = r#\"crate::syscall \"// \"#; crate::kernel::f();";
        assert_eq!(found(quoted, "arch/cpu.rs"), ["kernel"]);
        let characters =
            "let q = '\"'; let s = '\\''; let b = b'/'; fn f<'a>(x: &'a u8) {} crate::trap::g();";
        assert_eq!(found(characters, "kernel.rs"), ["trap"]);
        let bytes = "let x = b\"//\"; let y = br\"\\\"; crate::object::o(); let n = 0x1f;";
        assert_eq!(found(bytes, "kernel.rs"), ["object"]);
        // Visibility is not a path.
        assert_eq!(
            found("pub(crate) fn f() {} pub(super) struct S;", "object/vm.rs"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn cycles_are_found_and_named() {
        let layered = graph(&[
            ("arch", &[]),
            ("kernel", &["arch"]),
            ("trap", &["kernel", "arch"]),
        ]);
        assert_eq!(find_cycle(&layered), None);
        let circle = graph(&[
            ("arch", &["trap"]),
            ("kernel", &["arch"]),
            ("trap", &["kernel"]),
        ]);
        let cycle = find_cycle(&circle).unwrap();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
        let self_free = graph(&[("a", &["b"]), ("b", &["a"])]);
        assert_eq!(find_cycle(&self_free).unwrap(), ["a", "b", "a"]);
    }

    #[test]
    fn the_core_in_this_workspace_has_no_circle() {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../microvisor/src");
        let graph = core_graph(&source).unwrap();
        assert!(
            graph.contains_key("kernel") && graph.contains_key("arch"),
            "{graph:?}"
        );
        check_core(&source).unwrap();
    }
}
