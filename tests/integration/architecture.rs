//! The architecture invariants of `src/lib.rs` that a compiler does not check, checked on the
//! source tree: top-level modules import each other without cycles, only `store/` and the
//! checkpoint name the storage engine's type, and the code map names every module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

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

/// The top-level module a file belongs to (`src/act/relay.rs` → `act`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Code without comments and string literals, so that prose never counts as an import.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module → the top-level modules it names as `crate::<module>`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = module_of(&f) else { continue };
        let text = code_only(&std::fs::read_to_string(&f).expect("read"));
        let deps = graph.entry(m.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != m {
                deps.insert(name);
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = imports();
    // Depth-first search for a back edge; report the cycle found.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
    // The pure core imports nothing of the gate around it.
    let core = &graph["verification"];
    assert!(
        core.iter().all(|d| d == "clock"),
        "verification imports {core:?}"
    );
    // The gate does not know the platform or the demo.
    for (m, deps) in &graph {
        if m != "platform" && m != "demo" && m != "cli" {
            assert!(
                !deps.contains("platform") && !deps.contains("demo"),
                "{m} imports the platform or the demo: {deps:?}"
            );
        }
    }
}

#[test]
fn only_the_store_and_the_checkpoint_name_the_store() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for f in files {
        let rel = f.strip_prefix(src()).expect("in src").to_path_buf();
        if rel.starts_with("store") || rel == Path::new("checkpoint.rs") {
            continue;
        }
        let text = code_only(&std::fs::read_to_string(&f).expect("read"));
        let names_store = text.match_indices("store::Store").any(|(i, n)| {
            !text[i + n.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        }) || text.contains("store::{Store");
        assert!(!names_store, "{} names `store::Store`", rel.display());
        assert!(
            rel.starts_with("platform/db.rs")
                || rel.starts_with("platform/records/sled_store.rs")
                || !text.contains("sled::"),
            "{} names `sled::`",
            rel.display()
        );
    }
}

#[test]
fn the_code_map_names_every_module_in_data_flow_order() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let map_end = lib
        .find("## Architecture invariants")
        .expect("invariants section");
    let map = &lib[..map_end];
    let mut modules: Vec<String> = std::fs::read_dir(src())
        .expect("src")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let n = n.trim_end_matches(".rs").to_string();
            (n != "lib" && n != "main" && n != "bin").then_some(n)
        })
        .collect();
    modules.sort();
    for m in &modules {
        assert!(
            map.contains(&format!("[`{m}`]")),
            "the code map in src/lib.rs does not name `{m}`"
        );
    }
    // Data flow: capture before decode before checkpoint before act.
    let pos = |m: &str| map.find(&format!("[`{m}`]")).expect("named");
    assert!(pos("capture") < pos("decode"));
    assert!(pos("decode") < pos("checkpoint"));
    assert!(pos("checkpoint") < pos("act"));
    // Every folder starts with what it is for.
    for m in &modules {
        let dir = src().join(m);
        let file = if dir.is_dir() {
            dir.join("mod.rs")
        } else {
            src().join(format!("{m}.rs"))
        };
        let text = std::fs::read_to_string(&file).expect("module file");
        assert!(
            text.starts_with("//! "),
            "{} has no //! line",
            file.display()
        );
    }
}
