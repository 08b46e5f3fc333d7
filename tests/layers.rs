//! The library's imports run one way, as `lib/lib.rs` describes: binaries
//! -> tools -> shared services -> foundations, never back up, and no two
//! modules import each other, however indirectly. This reads every `crate::`
//! path in `lib/` (comments aside) and checks both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of the library and its layer (0 = tools).
const LAYERS: &[(&str, u8)] = &[
    // Tools: one module each, named after it.
    ("remotetool", 0),
    ("prepare", 0),
    ("exec", 0),
    ("poll", 0),
    ("xfer", 0),
    // Shared services.
    ("cli", 1),
    ("scheduler", 1),
    ("transfer", 1),
    ("auth", 1),
    ("workers", 1),
    ("runs", 1),
    ("workitems", 1),
    ("pipeline", 1),
    ("chain", 1),
    // Foundations.
    ("db", 2),
    ("config", 2),
    ("target", 2),
    ("recipe", 2),
    ("record", 2),
    ("scripts", 2),
    ("alloc", 2),
    ("ssh", 2),
    ("shell", 2),
    ("state", 2),
    ("exit", 2),
    ("printer", 2),
    ("table", 2),
    ("legacy", 2),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("module '{module}' has no layer: add it to LAYERS and lib.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// module -> the modules it imports, with a place each.
fn imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("lib");
    let mut files = Vec::new();
    rust_files(&lib, &mut files);
    let re = regex::Regex::new(r"\bcrate::([a-z_]+)").unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&lib).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for c in re.captures_iter(line) {
                let dep = c[1].to_string();
                if dep != module {
                    out.entry(module.clone())
                        .or_default()
                        .entry(dep)
                        .or_insert_with(|| format!("{}:{}", rel.display(), n + 1));
                }
            }
        }
        out.entry(module).or_default();
    }
    out
}

#[test]
fn every_module_has_a_layer_and_lib_rs_names_them() {
    let lib_rs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("lib/lib.rs")).unwrap();
    for module in imports().keys() {
        layer(module);
        assert!(
            lib_rs.contains(&format!("`{module}`")),
            "lib/lib.rs's module comment does not place `{module}` in its layer"
        );
    }
}

#[test]
fn imports_run_downwards_and_tools_never_import_tools() {
    let mut wrong = Vec::new();
    for (module, deps) in imports() {
        for (dep, place) in deps {
            let (from, to) = (layer(&module), layer(&dep));
            if to < from || (from == 0 && to == 0) {
                wrong.push(format!("{module} -> {dep} ({place})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run upwards or between tools: {wrong:#?}"
    );
}

#[test]
fn no_import_loops() {
    let graph = imports();
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
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
        for dep in graph
            .get(m)
            .map(|d| d.keys().cloned().collect::<Vec<String>>())
            .unwrap_or_default()
        {
            if let Some(c) = visit(&dep, graph, path, done) {
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
            let places: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            panic!("import loop: {}", places.join(", "));
        }
    }
}
