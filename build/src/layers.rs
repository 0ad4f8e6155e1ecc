//! The core's layering check: no import circle among the ring-0 binary's
//! modules (`microvisor/src`), which `lint` runs.
//!
//! The core is layered — `arch` at the bottom, the kernel objects above
//! it, the kernel table above them, the operations on top (`docs/CORE.md`
//! has the map) — and the check keeps it so: every module declared with
//! `mod NAME;` in `src/main.rs` is a node, every `crate::NAME` path in its
//! files (comments left out) an edge, and a cycle is reported with the
//! modules on it. The host-tested library (`src/lib.rs`) is one crate the
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

/// The `crate::NAME` references in `code` to modules in `modules`, with
/// `//` comments left out.
pub fn references(code: &str, modules: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                found.insert(name);
            }
        }
    }
    found
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
            edges.extend(references(&code, &modules));
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

    #[test]
    fn modules_and_references_are_read_from_code_not_comments() {
        let main = "mod arch;\npub mod kernel;\nmod trap; // traps\nuse core::fmt;\nmod tests {\n";
        assert_eq!(declared_modules(main), ["arch", "kernel", "trap"]);
        let modules = declared_modules(main);
        let code = "use crate::arch::cpu;\n// crate::trap is above us\nlet k = crate::kernel::with(); //! crate::trap\nuse crate::karnel;";
        let found: Vec<_> = references(code, &modules).into_iter().collect();
        assert_eq!(found, ["arch", "kernel"]);
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
