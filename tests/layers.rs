//! The library's imports run one way, as `lib/lib.rs` describes: binaries
//! -> tools -> shared services -> foundations, never back up, and no two
//! modules import each other, however indirectly; inside a module's folder
//! no two files do either (`mod.rs`, the folder's face, aside: its files
//! may use what it declares). This reads every `crate::` and `super::`
//! path in `lib/` (comments aside) and checks all three.

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
    ("masters", 1),
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
    ("host", 2),
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

/// The first import loop of `graph`, as its places, if it has one.
fn first_loop(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<String> {
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
        if let Some(cycle) = visit(m, graph, &mut Vec::new(), &mut done) {
            let places: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            return Some(places.join(", "));
        }
    }
    None
}

#[test]
fn no_import_loops() {
    if let Some(places) = first_loop(&imports()) {
        panic!("import loop: {places}");
    }
}

/// The first path segment of each name a `use super::...` or `super::`
/// path brings in from a line (`super::{a, b::c}` gives a and b).
fn super_names(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("super::") {
        rest = &rest[i + "super::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group.
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
            out.push(first_segment(&item));
        } else {
            out.push(first_segment(rest));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_import_loops_inside_a_folder() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("lib");
    let mut files = Vec::new();
    rust_files(&lib, &mut files);
    // folder -> file (module name) -> sibling it imports -> a place.
    let mut folders: BTreeMap<std::path::PathBuf, BTreeMap<String, BTreeMap<String, String>>> =
        BTreeMap::new();
    for f in &files {
        let dir = f.parent().unwrap().to_path_buf();
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        if dir == lib || name == "mod" {
            continue;
        }
        let siblings =
            |n: &str| dir.join(format!("{n}.rs")).is_file() || dir.join(n).join("mod.rs").is_file();
        // Inside lib/X/, crate::X::NAME names a sibling too.
        let folder = dir
            .strip_prefix(&lib)
            .unwrap()
            .to_string_lossy()
            .replace('/', "::");
        let by_crate = regex::Regex::new(&format!(r"\bcrate::{folder}::([a-z_]+)")).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        let graph = folders.entry(dir.clone()).or_default();
        graph.entry(name.clone()).or_default();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let mut deps = super_names(line);
            deps.extend(by_crate.captures_iter(line).map(|c| c[1].to_string()));
            for dep in deps {
                if dep != name && siblings(&dep) {
                    let place = format!("{}:{}", f.strip_prefix(&lib).unwrap().display(), n + 1);
                    graph
                        .entry(name.clone())
                        .or_default()
                        .entry(dep)
                        .or_insert(place);
                }
            }
        }
    }
    let loops: Vec<String> = folders
        .iter()
        .filter_map(|(dir, graph)| {
            first_loop(graph).map(|l| format!("{}: {l}", dir.strip_prefix(&lib).unwrap().display()))
        })
        .collect();
    assert!(
        loops.is_empty(),
        "files of a folder that import each other: {loops:#?}"
    );
}

#[test]
fn super_paths_are_read_whole() {
    assert_eq!(
        super_names("use super::queue::{Job, Shared};"),
        vec!["queue"]
    );
    assert_eq!(
        super_names("use super::{channels_for, plan::Plan, Direction};"),
        vec!["channels_for", "plan", "Direction"]
    );
    assert_eq!(
        super_names("let x = super::local::fault_of(p);"),
        vec!["local"]
    );
}
